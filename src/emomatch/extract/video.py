"""Reading sampled frames of a video (or a segment of one) with PyAV.

The visual features look at about 3 frames a second (every 10th frame of a 30 fps clip), so
only every ``every``-th decoded frame is converted to an array; the others are decoded (codecs
need them) but never leave the decoder's format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from emomatch.errors import DataError

CROPS = (None, "left", "right")


class VideoError(DataError):
    """A video that cannot be read: missing, corrupt, without a video stream or frames."""


def crop_half(frame: np.ndarray, crop: str | None) -> np.ndarray:
    """The left or right half of a frame (IEMOCAP sessions film both actors side by side);
    ``None`` keeps the whole frame."""
    if crop is None:
        return frame
    half = frame.shape[1] // 2
    if crop == "left":
        return frame[:, :half]
    if crop == "right":
        return frame[:, half:]
    raise DataError(f"crop must be 'left', 'right' or empty, got {crop!r}")


def _frame_rate(stream: Any) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and float(rate) > 0:
            return float(rate)
    # Without any rate, frame timestamps still work; 25 only scales `seconds`.
    return 25.0


def read_frames(
    path: str | Path,
    start: float | None = None,
    end: float | None = None,
    every: int = 10,
    crop: str | None = None,
    gray: bool = False,
) -> tuple[np.ndarray, float, float]:
    """Every ``every``-th frame of ``path`` between ``start`` and ``end`` seconds (the whole
    file when both are None), optionally only its ``crop`` half.

    Returns ``(frames, fps, seconds)``: frames uint8 ``(T, H, W, 3)`` RGB, or ``(T, H, W)`` when
    ``gray``; the stream's frame rate; and the seconds of video covered (decoded frames / fps).
    Raises :class:`VideoError` naming the file for a missing or unreadable file, a file without
    a video stream, or a segment without frames.
    """
    import av

    path = Path(path)
    if every < 1:
        raise DataError(f"every must be a positive frame stride, got {every}")
    if crop not in CROPS:
        raise DataError(f"crop must be 'left', 'right' or empty, got {crop!r}")
    if start is not None and end is not None and end <= start:
        raise VideoError(f"{path}: segment end {end} s is not after its start {start} s")
    if not path.is_file():
        raise VideoError(f"video file missing: {path}")
    if path.stat().st_size == 0:
        raise VideoError(f"zero-length video file: {path}")
    kept: list[np.ndarray] = []
    decoded = 0
    fmt = "gray" if gray else "rgb24"
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"{path}: no video stream")
            stream = container.streams.video[0]
            # Frame threading buys nothing here: extraction runs one worker process per core,
            # and on such a worker it measured slower than slice threading.
            stream.thread_type = "SLICE"
            fps = _frame_rate(stream)
            if start is not None and start > 0 and stream.time_base is not None:
                # Seeking lands on the keyframe before `start`; frames before it are dropped below.
                container.seek(int(start / stream.time_base), stream=stream, backward=True)
            # Half a frame of slack so a start on a frame boundary keeps that frame despite
            # rounding of timestamps.
            slack = 0.5 / fps
            for frame in container.decode(stream):
                t = frame.time
                if t is not None:
                    if start is not None and t < start - slack:
                        continue
                    if end is not None and t >= end - slack:
                        break
                if decoded % every == 0:
                    kept.append(crop_half(frame.to_ndarray(format=fmt), crop))
                decoded += 1
    except VideoError:
        raise
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise VideoError(f"{path}: cannot decode video ({exc})") from exc
    if not kept:
        where = "" if start is None and end is None else f" between {start} s and {end} s"
        raise VideoError(f"{path}: no video frames{where}")
    return np.stack(kept), fps, decoded / fps
