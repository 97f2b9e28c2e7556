"""Decoding speech from any media file (WAV, MP4, AVI soundtrack, ...) with PyAV.

Every extractor that needs a waveform gets it here: mono float32 at one sample rate, optionally
cut to a segment. A segment is reached by seeking, so an utterance at minute 29 of a meeting
recording costs a few hundred milliseconds of decoding, not the whole file.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from emomatch.errors import DataError
from emomatch.extract.base import ItemError, Utterance

SAMPLE_RATE = 16000

#: how far a requested segment may run past the end of the media before it is an error; manifest
#: times are often rounded, and a few tens of milliseconds of codec padding are common
END_TOLERANCE_S = 0.5

#: decoded before the segment start and after its end so the resampler's filter has context at
#: both cut points (a segment then matches the same stretch of a file that holds only it)
_CONTEXT_S = 0.1


class AudioError(DataError):
    """A media file whose audio cannot be used; the message names the file and the reason."""


def _open(path: Path):  # type: ignore[no-untyped-def]
    import av

    if not path.exists():
        raise AudioError(f"{path}: audio file missing")
    if not path.is_file():
        raise AudioError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: zero-length file")
    container = None
    if path.suffix.lower() == ".wav":
        # A WAV header says everything; FFmpeg's default probing reads far more and costs more
        # than decoding a short utterance. Anything odd falls back to full probing.
        try:
            container = av.open(str(path), options={"probesize": "32"})
            streams = container.streams.audio
            if not streams or not streams[0].codec_context.sample_rate:
                container.close()
                container = None
        except av.FFmpegError:
            container = None
    if container is None:
        try:
            container = av.open(str(path))
        except av.FFmpegError as exc:
            raise AudioError(f"{path}: corrupt or unreadable media ({exc})") from None
    if not container.streams.audio:
        container.close()
        raise AudioError(f"{path}: no audio stream")
    return container


def media_seconds(path: str | Path) -> float:
    """Duration of the first audio stream in seconds, from the container's header when it has
    one, otherwise by decoding."""
    path = Path(path)
    container = _open(path)
    with container:
        stream = container.streams.audio[0]
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        if container.duration is not None:
            import av

            return float(container.duration / av.time_base)
    return len(load_audio(path)) / SAMPLE_RATE


def load_audio(
    path: str | Path,
    start: float | None = None,
    end: float | None = None,
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """The audio of ``path`` as float32 mono at ``sample_rate``, cut to ``[start, end]`` seconds
    (either may be None: from the beginning / to the end).

    Raises :class:`AudioError` for a missing, empty, corrupt or audio-less file, a bad segment,
    a segment outside the file, or audio with no samples."""
    path = Path(path)
    if start is not None and start < 0:
        raise AudioError(f"{path}: segment start {start} s is negative")
    if start is not None and end is not None and end <= start:
        raise AudioError(f"{path}: segment end {end} s is not after its start {start} s")
    if sample_rate <= 0:
        raise AudioError(f"sample_rate must be positive, got {sample_rate}")
    begin = start or 0.0
    stop = None if end is None else end + _CONTEXT_S
    seek_to = begin - _CONTEXT_S if begin > _CONTEXT_S else None
    samples, first_time = _decode(path, seek_to, stop, sample_rate)
    if seek_to is not None and (first_time is None or first_time > begin):
        # Nothing after the seek point, or a demuxer that seeks coarsely and overshot: decode
        # from the beginning, which also tells an empty file from a segment past its end.
        samples, first_time = _decode(path, None, stop, sample_rate)
    if first_time is None or len(samples) == 0:
        raise AudioError(f"{path}: no audio samples (zero-length audio)")
    return _cut(path, samples, first_time, start, end, sample_rate)


def _decode(
    path: Path, seek_to: float | None, stop: float | None, sample_rate: int
) -> tuple[np.ndarray, float | None]:
    """Resampled mono samples from ``seek_to`` (or the beginning) until past ``stop`` (or the
    end), and the media time of the first one (None: nothing was decoded)."""
    import av

    container = _open(path)
    try:
        stream = container.streams.audio[0]
        if seek_to is not None:
            # Seeks land on a packet at or before the target; the cut removes the excess.
            try:
                container.seek(int(seek_to / stream.time_base), stream=stream)
            except av.FFmpegError:
                container.seek(0, stream=stream)
        channels = stream.codec_context.channels or 1
        # Stereo is averaged, so a mono recording copied to both channels keeps its level
        # (FFmpeg's own stereo downmix adds them at -3 dB, 1.41 x louder); wider layouts use
        # FFmpeg's downmix, which keeps the centre (dialogue) channel at full level.
        layout = None if channels <= 2 else "mono"
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=sample_rate)
        pieces: list[np.ndarray] = []
        first_time: float | None = None
        counted = 0.0
        try:
            for frame in container.decode(stream):
                # Formats without timestamps: count samples from where decoding began.
                when = float(frame.time) if frame.time is not None else counted
                counted = when + frame.samples / frame.sample_rate
                if first_time is None:
                    first_time = when
                for out in resampler.resample(frame):
                    pieces.append(out.to_ndarray().mean(axis=0))
                if stop is not None and counted > stop:
                    break
            for out in resampler.resample(None):
                pieces.append(out.to_ndarray().mean(axis=0))
        except av.FFmpegError as exc:
            raise AudioError(f"{path}: corrupt audio stream ({exc})") from None
    finally:
        container.close()
    if not pieces:
        return np.zeros(0, np.float32), first_time
    return np.concatenate(pieces).astype(np.float32), first_time


def _cut(
    path: Path,
    samples: np.ndarray,
    first_time: float,
    start: float | None,
    end: float | None,
    sample_rate: int,
) -> np.ndarray:
    if start is None and end is None:
        return samples
    available_end = first_time + len(samples) / sample_rate
    begin = start or 0.0
    if begin >= available_end:
        raise AudioError(
            f"{path}: segment [{begin:.3f}, {end if end is not None else 'end'}] s starts after "
            f"the audio ends ({available_end:.3f} s)"
        )
    if end is not None and end > available_end + END_TOLERANCE_S:
        raise AudioError(
            f"{path}: segment end {end:.3f} s is past the end of the audio ({available_end:.3f} s)"
        )
    i0 = max(0, round((begin - first_time) * sample_rate))
    i1 = len(samples) if end is None else min(len(samples), round((end - first_time) * sample_rate))
    cut = samples[i0:i1]
    if len(cut) == 0:
        raise AudioError(f"{path}: segment [{begin:.3f}, {end}] s holds no audio samples")
    return np.ascontiguousarray(cut)


def load_clip(item: Utterance, silence_db: float | None) -> tuple[np.ndarray, float] | ItemError:
    """An item's audio (or its video's soundtrack) as a 16 kHz mono signal and its seconds; an
    :class:`ItemError` when it cannot be read or its peak is below ``silence_db`` dBFS."""
    source = item.audio if item.audio is not None else item.video
    if source is None:
        return ItemError("no audio or video file for this item")
    try:
        signal = load_audio(source, item.start, item.end, SAMPLE_RATE)
    except AudioError as exc:
        return ItemError(str(exc))
    except DataError as exc:
        return ItemError(f"{source}: {exc}")
    peak = float(np.max(np.abs(signal)))
    if silence_db is not None:
        level = 20 * math.log10(peak) if peak > 0 else -math.inf
        if level < silence_db:
            return ItemError(
                f"{source}: silent audio (peak {level:.1f} dBFS is below "
                f"silence_db {silence_db} dBFS)"
            )
    return signal, len(signal) / SAMPLE_RATE
