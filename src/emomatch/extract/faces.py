"""Finding the speaker's face in sampled video frames and cutting it out as gray 64x64 crops.

A detector returns at most one box per frame (the largest face: in a close-up or in the
speaker's half of a dialog frame that is the speaker). Detectors miss faces in single frames
(turned heads, motion blur), so a frame without a face reuses the previous frame's box, and
frames before the first detection take the first box; a clip where no sampled frame shows a
face has no visual features at all (the modality is recorded missing).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from emomatch.errors import DataError
from emomatch.registry import Registry

#: x, y, width, height in pixels of the frame it was found in
Box = tuple[int, int, int, int]
FACE_SIZE = 64
HAAR_FILE = "haarcascade_frontalface_default.xml"


class FaceDetector(Protocol):
    def detect(self, frame: np.ndarray) -> Box | None:
        """The largest face of an RGB (H, W, 3) uint8 frame, or None."""
        ...

    def settings(self) -> dict[str, Any]:
        """Everything that changes which boxes are found (stored with the features)."""
        ...


#: name -> factory(**options) -> FaceDetector
DETECTORS: Registry[Callable[..., FaceDetector]] = Registry("face detector")


def to_gray(frame: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma, as OpenCV's RGB2GRAY and FER-2013's gray images use."""
    if frame.ndim == 2:
        return frame
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)


def _largest(boxes: Sequence[Sequence[int]]) -> Box | None:
    if len(boxes) == 0:
        return None
    x, y, w, h = max(boxes, key=lambda b: int(b[2]) * int(b[3]))
    return int(x), int(y), int(w), int(h)


@DETECTORS.register("haar")
class HaarDetector:
    """OpenCV's Viola-Jones frontal-face cascade (ships with opencv-python, runs anywhere).

    Frames wider or taller than ``max_side`` are searched at reduced size: faces that matter
    are far bigger than the cascade's 24-pixel window, and the search time grows with area.
    """

    def __init__(
        self,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size: int = 30,
        max_side: int = 640,
        cascade: str | Path | None = None,
    ) -> None:
        import cv2

        if scale_factor <= 1.0:
            raise DataError(f"haar scale_factor must be > 1, got {scale_factor}")
        if min_neighbors < 0 or min_size < 1 or max_side < 32:
            raise DataError(
                f"haar options out of range: min_neighbors={min_neighbors} (>= 0), "
                f"min_size={min_size} (>= 1), max_side={max_side} (>= 32)"
            )
        # cv2's stubs lack the data module that the wheels ship.
        haar_dir = cv2.data.haarcascades  # type: ignore[attr-defined]
        path = Path(cascade) if cascade is not None else Path(haar_dir) / HAAR_FILE
        if not path.is_file():
            raise DataError(f"Haar cascade file missing: {path}")
        self.cascade_path = path
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size = min_size
        self.max_side = max_side
        self._cascade: Any = None

    def __getstate__(self) -> dict[str, Any]:
        # OpenCV objects do not pickle; workers load their own cascade.
        return {**self.__dict__, "_cascade": None}

    def settings(self) -> dict[str, Any]:
        return {
            "detector": "haar",
            "cascade": self.cascade_path.name,
            "scale_factor": self.scale_factor,
            "min_neighbors": self.min_neighbors,
            "min_size": self.min_size,
            "max_side": self.max_side,
        }

    def _load(self) -> Any:
        if self._cascade is None:
            import cv2

            cascade = cv2.CascadeClassifier(str(self.cascade_path))
            if cascade.empty():
                raise DataError(f"{self.cascade_path}: not a readable OpenCV cascade file")
            self._cascade = cascade
        return self._cascade

    def detect(self, frame: np.ndarray) -> Box | None:
        import cv2

        gray = to_gray(frame)
        scale = max(gray.shape) / self.max_side
        if scale > 1:
            size = (round(gray.shape[1] / scale), round(gray.shape[0] / scale))
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        else:
            scale = 1.0
        min_side = max(1, round(self.min_size / scale))
        found = self._load().detectMultiScale(
            gray,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(min_side, min_side),
        )
        box = _largest(found)
        if box is None:
            return None
        x, y, w, h = box
        return round(x * scale), round(y * scale), round(w * scale), round(h * scale)


@DETECTORS.register("mediapipe")
class MediapipeDetector:
    """Google MediaPipe's BlazeFace short/full-range detector (optional dependency)."""

    def __init__(self, model_selection: int = 1, min_confidence: float = 0.5) -> None:
        if importlib.util.find_spec("mediapipe") is None:
            raise DataError(
                "face detector 'mediapipe' needs the mediapipe package: pip install mediapipe "
                "(or use detector 'haar')"
            )
        if model_selection not in (0, 1) or not 0 < min_confidence < 1:
            raise DataError(
                f"mediapipe options out of range: model_selection={model_selection} (0 or 1), "
                f"min_confidence={min_confidence} (0..1)"
            )
        self.model_selection = model_selection
        self.min_confidence = min_confidence
        self._detector: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_detector": None}

    def settings(self) -> dict[str, Any]:
        import mediapipe

        return {
            "detector": "mediapipe",
            "mediapipe": getattr(mediapipe, "__version__", "unknown"),
            "model_selection": self.model_selection,
            "min_confidence": self.min_confidence,
        }

    def detect(self, frame: np.ndarray) -> Box | None:
        if self._detector is None:
            import mediapipe

            solutions = getattr(mediapipe, "solutions", None)
            if solutions is None or not hasattr(solutions, "face_detection"):
                raise DataError(
                    "this mediapipe version has no mediapipe.solutions.face_detection; "
                    "install one that does (pip install 'mediapipe<0.10.22') or use 'haar'"
                )
            self._detector = solutions.face_detection.FaceDetection(
                model_selection=self.model_selection,
                min_detection_confidence=self.min_confidence,
            )
        rgb = frame if frame.ndim == 3 else np.repeat(frame[..., None], 3, axis=2)
        result = self._detector.process(np.ascontiguousarray(rgb))
        height, width = rgb.shape[:2]
        boxes = []
        for detection in result.detections or []:
            rel = detection.location_data.relative_bounding_box
            boxes.append(
                (
                    round(rel.xmin * width),
                    round(rel.ymin * height),
                    round(rel.width * width),
                    round(rel.height * height),
                )
            )
        return _largest(boxes)


@DETECTORS.register("none")
class WholeFrame:
    """For clips that are already face crops: the face is the whole frame."""

    def settings(self) -> dict[str, Any]:
        return {"detector": "none"}

    def detect(self, frame: np.ndarray) -> Box | None:
        return 0, 0, frame.shape[1], frame.shape[0]


def make_detector(name: str, **options: Any) -> FaceDetector:
    """A detector by name ("haar", "mediapipe", "none") with its keyword options."""
    try:
        factory = DETECTORS.get(name)
    except KeyError as exc:
        raise DataError(str(exc.args[0])) from None
    try:
        return factory(**options)
    except TypeError as exc:
        raise DataError(f"face detector {name!r}: bad options {options}: {exc}") from None


def fill_boxes(boxes: Sequence[Box | None]) -> list[Box] | None:
    """Each frame's box, where a frame without one reuses the previous frame's box and frames
    before the first detection take the first box; None when no frame has a box."""
    first = next((b for b in boxes if b is not None), None)
    if first is None:
        return None
    filled: list[Box] = []
    last = first
    for box in boxes:
        if box is not None:
            last = box
        filled.append(last)
    return filled


def track_faces(
    frames: Sequence[np.ndarray] | np.ndarray,
    detect: Callable[[np.ndarray], Box | None],
    max_frames: int,
) -> list[Box] | None:
    """Boxes for the first ``max_frames`` frames, or None when no frame shows a face.

    Only the first ``max_frames`` frames are kept, but when none of them shows a face the
    later frames are searched too, so a face that turns up late still gives a box for all.
    """
    kept = min(len(frames), max_frames)
    boxes = [detect(frame) for frame in frames[:kept]]
    if all(b is None for b in boxes):
        for frame in frames[kept:]:
            box = detect(frame)
            if box is not None:
                return [box] * kept
        return None
    return fill_boxes(boxes)


def crop_face(
    frame: np.ndarray, box: Box, margin: float = 0.0, size: int = FACE_SIZE
) -> np.ndarray:
    """The gray ``size`` x ``size`` face of ``frame`` inside ``box`` widened by ``margin`` (a
    fraction of the box on each side), clipped to the frame."""
    import cv2

    gray = to_gray(frame)
    height, width = gray.shape
    x, y, w, h = box
    dx, dy = round(w * margin), round(h * margin)
    x0, y0 = max(0, x - dx), max(0, y - dy)
    x1, y1 = min(width, x + w + dx), min(height, y + h + dy)
    if x1 <= x0 or y1 <= y0:
        # A box from another frame size can fall outside this one; use the whole frame.
        x0, y0, x1, y1 = 0, 0, width, height
    face = gray[y0:y1, x0:x1]
    shrink = face.shape[0] > size or face.shape[1] > size
    return cv2.resize(
        face, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    )


def face_crops(
    frames: Sequence[np.ndarray] | np.ndarray,
    detector: FaceDetector,
    max_frames: int = 18,
    margin: float = 0.0,
    size: int = FACE_SIZE,
) -> np.ndarray | None:
    """Gray (T, size, size) uint8 face crops of the first ``max_frames`` frames (T <= max_frames),
    or None when no frame shows a face."""
    boxes = track_faces(frames, detector.detect, max_frames)
    if boxes is None:
        return None
    return np.stack([crop_face(f, b, margin, size) for f, b in zip(frames, boxes, strict=False)])
