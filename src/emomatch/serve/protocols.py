"""What the service needs of a predictor (``emomatch.load``'s result), and nothing more: the
service depends on this shape, not on how a bundle is loaded."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol


class PredictionLike(Protocol):
    #: None where nothing of the clip (or window) could be used
    @property
    def label(self) -> str | None: ...

    @property
    def probabilities(self) -> Mapping[str, float]: ...

    @property
    def modalities(self) -> Sequence[str]: ...

    #: modalities not used, each with the reason (no face found, no transcript, ...)
    @property
    def missing(self) -> Mapping[str, str]: ...

    @property
    def start(self) -> float | None: ...

    @property
    def end(self) -> float | None: ...


class PredictorLike(Protocol):
    @property
    def labels(self) -> Sequence[str]: ...

    @property
    def modalities(self) -> Sequence[str]: ...

    def predict(
        self,
        video: str | Path | None = None,
        audio: str | Path | None = None,
        text: str | None = None,
        start: float | None = None,
        end: float | None = None,
    ) -> PredictionLike: ...

    def predict_segments(
        self,
        video: str | Path | None = None,
        audio: str | Path | None = None,
        text: str | None = None,
        width: float = 5.0,
        hop: float | None = None,
    ) -> Sequence[PredictionLike]: ...
