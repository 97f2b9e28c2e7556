"""Writing small media files (WAV, MP4/AVI with or without a soundtrack) with PyAV.

Used by the demo-corpus generator and by tests that build fixture corpora; real corpora are only
ever read.
"""

from __future__ import annotations

import wave
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np


def write_wav(path: str | Path, signal: np.ndarray, sample_rate: int = 16000) -> Path:
    """Mono 16-bit PCM WAV from a float signal in [-1, 1]."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = (np.clip(signal, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as fh:
        fh.setnchannels(1)
        fh.setsampwidth(2)
        fh.setframerate(sample_rate)
        fh.writeframes(pcm.tobytes())
    return path


def write_video(
    path: str | Path,
    frames: np.ndarray,
    fps: int = 30,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
) -> Path:
    """Video from frames (T, H, W) gray or (T, H, W, 3) RGB uint8, optionally with a mono
    soundtrack (float in [-1, 1]). The container follows the suffix (.mp4, .avi)."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if frames.ndim == 3:
        frames = np.repeat(frames[..., None], 3, axis=3)
    # Codecs want even sizes.
    h, w = frames.shape[1] - frames.shape[1] % 2, frames.shape[2] - frames.shape[2] % 2
    frames = np.ascontiguousarray(frames[:, :h, :w].astype(np.uint8))
    codec = "mpeg4"
    with av.open(str(path), "w") as container:
        # PyAV's stubs type add_stream as a union of stream kinds.
        vstream: Any = container.add_stream(codec, rate=fps)
        vstream.width, vstream.height = w, h
        vstream.pix_fmt = "yuv420p"
        astream: Any = None
        if audio is not None:
            astream = container.add_stream(
                "aac" if path.suffix == ".mp4" else "pcm_s16le", rate=sample_rate
            )
            astream.layout = "mono"
        for frame in frames:
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            for packet in vstream.encode(vf):
                container.mux(packet)
        for packet in vstream.encode():
            container.mux(packet)
        if astream is not None and audio is not None:
            pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
            chunk = 1024
            for i in range(0, len(pcm), chunk):
                block = pcm[i : i + chunk][None, :]
                af = av.AudioFrame.from_ndarray(block, format="s16", layout="mono")
                af.sample_rate = sample_rate
                af.pts = i
                af.time_base = Fraction(1, sample_rate)
                for packet in astream.encode(af):
                    container.mux(packet)
            for packet in astream.encode():
                container.mux(packet)
    return path
