"""Cheap checks of an uploaded clip before any feature extraction: is it audio or video, does
it decode, how long is it.

A clip is only handed to the predictor after this has opened it, decoded a first frame of each
stream it will use and found its duration within the service's limit. Extraction of a long or
broken file would cost seconds of a worker's time; these checks cost milliseconds.
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emomatch.errors import DataError

#: Media types browsers and recorders send that say nothing about the content: the file name's
#: extension decides for these.
UNSPECIFIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})

#: Extensions with a well-known media type that :mod:`mimetypes` may lack on a minimal system.
_EXTRA_TYPES = {
    ".webm": "video/webm",
    ".weba": "audio/webm",
    ".mkv": "video/x-matroska",
    ".m4a": "audio/mp4",
    ".opus": "audio/ogg",
    ".ogg": "audio/ogg",
    ".flac": "audio/flac",
    ".wav": "audio/wav",
}


#: Shorter clips hold no syllable and no facial movement: nothing to predict from.
MIN_SECONDS = 0.2


def _reason(exc: Exception) -> str:
    # FFmpeg's message ends with the file's name, which is the service's temporary copy.
    return str(getattr(exc, "strerror", None) or exc)


class UnsupportedMediaType(DataError):
    """The upload is not declared (or named) as audio or video."""


class UnusableClip(DataError):
    """The upload is audio or video by its type but empty, undecodable or too long."""


@dataclass(frozen=True)
class ClipInfo:
    """What the probe found in a clip."""

    has_audio: bool
    has_video: bool
    #: seconds, from the packets' times (a header's duration is an estimate a crafted file
    #: can make as small as it likes: an MP3 said 260 s and lasted 2,420 s)
    seconds: float


def media_type(declared: str | None, filename: str | None) -> str:
    """The upload's media type, lower case without parameters: the declared one unless it is
    unspecific, then the one the file name's extension implies ("" when neither says)."""
    kind = (declared or "").split(";", 1)[0].strip().lower()
    if kind not in UNSPECIFIC_TYPES:
        return kind
    suffix = Path(filename or "").suffix.lower()
    if not suffix:
        return ""
    return _EXTRA_TYPES.get(suffix) or mimetypes.guess_type(f"x{suffix}")[0] or ""


def check_media_type(declared: str | None, filename: str | None) -> str:
    """Raise :class:`UnsupportedMediaType` unless the upload is ``audio/*`` or ``video/*``."""
    kind = media_type(declared, filename)
    if kind.startswith(("audio/", "video/")):
        return kind
    shown = kind or "no media type"
    name = f" ({filename})" if filename else ""
    raise UnsupportedMediaType(
        f"clip{name}: {shown} is not audio or video; send an audio file (WAV, MP3, OGG, WebM, "
        "...) or a video file (MP4, WebM, AVI, ...)"
    )


#: largest video frame decoded by default, pixels
MAX_PIXELS = 4096 * 4096


def _first_frame_decodes(container: Any, stream: Any, max_pixels: int, shown: str) -> bool:
    import av

    try:
        for packet in container.demux(stream):
            for frame in packet.decode():
                _check_pixels(
                    getattr(frame, "width", 0), getattr(frame, "height", 0), max_pixels, shown
                )
                return True
    except (av.FFmpegError, ValueError):
        return False
    return False


def _check_pixels(width: int, height: int, max_pixels: int, shown: str) -> None:
    if (width or 0) * (height or 0) > max_pixels:
        raise UnusableClip(
            f"clip {shown}: frames of {width}x{height} pixels, larger than this service's limit "
            f"of {max_pixels:,} pixels a frame"
        )


def _seconds_from_packets(container: Any, limit: float) -> float:
    """Duration from packet times, without decoding; stops as soon as ``limit`` is passed."""
    end = 0.0
    for packet in container.demux():
        if packet.pts is None or packet.time_base is None:
            continue
        stop = float((packet.pts + (packet.duration or 0)) * packet.time_base)
        end = max(end, stop)
        if end > limit:
            break
    return end


def probe_clip(
    path: str | Path, max_seconds: float, name: str | None = None, max_pixels: int = MAX_PIXELS
) -> ClipInfo:
    """Open ``path`` and check it is a decodable audio or video clip of at most ``max_seconds``
    whose video frames have at most ``max_pixels`` pixels.

    Raises :class:`UnusableClip` naming the clip (``name``, else the path) for an empty,
    corrupt or stream-less file, one whose streams do not decode, one whose frames are too
    large (checked from the stream's header before a frame is decoded), or one that is too
    long (timed by its packets, not by the header's estimate).
    """
    import av

    path = Path(path)
    shown = name or str(path)
    if path.stat().st_size == 0:
        raise UnusableClip(f"clip {shown}: empty file (0 bytes)")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, UnicodeDecodeError) as exc:
        raise UnusableClip(f"clip {shown}: corrupt or not a media file ({_reason(exc)})") from None
    with container:
        audio = list(container.streams.audio)
        video = list(container.streams.video)
        if not audio and not video:
            raise UnusableClip(f"clip {shown}: no audio or video stream")
        for video_stream in video:
            context = video_stream.codec_context
            _check_pixels(context.width, context.height, max_pixels, shown)
        header_seconds = float(container.duration / av.time_base) if container.duration else 0.0
    # Each stream is decoded from a fresh opening: demuxing one stream skips the other's packets.
    for kind, streams in (("audio", audio), ("video", video)):
        if not streams:
            continue
        with av.open(str(path)) as again:
            stream = again.streams.audio[0] if kind == "audio" else again.streams.video[0]
            if not _first_frame_decodes(again, stream, max_pixels, shown):
                raise UnusableClip(f"clip {shown}: its {kind} does not decode (corrupt data)")
    with av.open(str(path)) as again:
        try:
            seconds = _seconds_from_packets(again, max_seconds)
        except av.FFmpegError as exc:
            raise UnusableClip(f"clip {shown}: corrupt media ({_reason(exc)})") from None
    if seconds <= 0:
        seconds = header_seconds  # no packet carries a time: the header is all there is
    elif seconds > max_seconds:
        # the count stopped past the limit: an honest header says by how much
        seconds = max(seconds, header_seconds)
    if seconds < MIN_SECONDS:
        raise UnusableClip(
            f"clip {shown}: {seconds * 1000:.0f} ms of media, too short to say anything about "
            f"(at least {MIN_SECONDS * 1000:.0f} ms)"
        )
    if seconds > max_seconds:
        if header_seconds >= seconds:
            said = f"{seconds:.1f} s is longer than this service's limit of {max_seconds:g} s"
        else:  # counted up to the limit only, against a header that says less
            said = (
                f"longer than this service's limit of {max_seconds:g} s (its header says "
                f"{header_seconds:.1f} s)"
            )
        raise UnusableClip(f"clip {shown}: {said}; cut it into shorter clips")
    return ClipInfo(has_audio=bool(audio), has_video=bool(video), seconds=seconds)
