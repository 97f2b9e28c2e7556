"""What a feature extractor is: one per modality, built once per worker, fed batches.

An extractor turns manifest rows into fixed-shape arrays. Failure of one item never stops a
batch: each item yields either its features or an :class:`ItemError` with the reason, and the
run writes the reason to its error report and goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from emomatch.registry import Registry
from emomatch.store import ModalitySpec


@dataclass(frozen=True)
class Utterance:
    """One manifest row with media paths resolved."""

    id: str
    audio: Path | None = None
    video: Path | None = None
    text: str = ""
    #: segment of a longer file, seconds; None = the whole file
    start: float | None = None
    end: float | None = None
    #: part of the video frame that shows the speaker: None (whole frame), "left" or "right"
    crop: str | None = None
    #: segment of the audio file, seconds, when it differs from the video's (IEMOCAP: the
    #: utterance WAV is whole while the dialog video is cut); the manifest's ``audio_start`` /
    #: ``audio_end`` columns, or ``start``/``end`` where it has none
    audio_start: float | None = None
    audio_end: float | None = None


@dataclass(frozen=True)
class Features:
    """Extracted features of one item: ``array`` has the extractor's spec shape; ``length`` is
    the number of valid frames/words (1 for a vector). ``length == 0`` means the modality is
    missing for this item (e.g. no face in any frame): recorded as missing, not an error."""

    array: np.ndarray
    length: int
    #: seconds of media this item covered (for real-time factors); 0 if not media
    seconds: float = 0.0


@dataclass(frozen=True)
class ItemError:
    """Why one item could not be extracted (missing file, corrupt media, silent audio, ...)."""

    reason: str


Result = Features | ItemError


class Extractor(Protocol):
    #: "acoustic", "visual" or "lexical"
    modality: str

    def spec(self) -> ModalitySpec:
        """Shape and settings (name, versions, options) stored in the store's metadata."""
        ...

    def extract(self, items: Sequence[Utterance]) -> list[Result]:
        """One result per item, in order; must not raise for a bad item."""
        ...


#: name -> factory(**options) -> Extractor
EXTRACTORS: Registry[Callable[..., Extractor]] = Registry("extractor")


def missing(spec: ModalitySpec, seconds: float = 0.0) -> Features:
    """The features of an item whose modality is absent: zeros, length 0."""
    return Features(np.zeros(spec.shape, dtype=np.float32), 0, seconds)


def fit_sequence(frames: np.ndarray, max_len: int) -> tuple[np.ndarray, int]:
    """Cut or zero-pad a (T, D) sequence to (max_len, D); returns it and its valid length."""
    t = min(len(frames), max_len)
    out = np.zeros((max_len, frames.shape[1]), dtype=np.float32)
    out[:t] = frames[:t]
    return out, t


def extractor_settings(name: str, **settings: Any) -> dict[str, Any]:
    """The metadata dict an extractor stores: JSON-friendly values only."""
    clean: dict[str, Any] = {"name": name}
    for key, value in settings.items():
        clean[key] = str(value) if isinstance(value, Path) else value
    return clean
