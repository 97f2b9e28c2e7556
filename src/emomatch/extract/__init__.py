"""Feature extraction: raw media (audio, video, transcripts) -> feature store."""

from emomatch.extract.base import (
    EXTRACTORS,
    Extractor,
    Features,
    ItemError,
    Result,
    Utterance,
    extractor_settings,
    fit_sequence,
    missing,
)

__all__ = [
    "EXTRACTORS",
    "Extractor",
    "Features",
    "ItemError",
    "Result",
    "Utterance",
    "extractor_settings",
    "fit_sequence",
    "missing",
]
