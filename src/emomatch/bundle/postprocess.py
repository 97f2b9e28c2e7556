"""From class probabilities to answers: one :class:`Prediction` per clip, saying which
modalities it was made from and why any other was not used."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from emomatch.extract.base import Utterance


@dataclass
class Prediction:
    """The model's answer for one clip (or one window of a recording).

    ``label`` is None only when nothing of the clip could be used (``error`` says why); each
    modality that was not used is in ``missing`` with the reason."""

    label: str | None
    probabilities: dict[str, float]
    #: modalities the prediction is made from
    modalities: list[str]
    id: str | None = None
    start: float | None = None
    end: float | None = None
    #: the transcript the lexical modality read (given, or from speech-to-text)
    text: str | None = None
    #: whether ``text`` came from speech-to-text
    asr: bool = False
    missing: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values."""
        return {
            "id": self.id,
            "start": self.start,
            "end": self.end,
            "label": self.label,
            "probabilities": {k: float(v) for k, v in self.probabilities.items()},
            "modalities": list(self.modalities),
            "missing": dict(self.missing),
            "text": self.text,
            "asr": self.asr,
            "error": self.error,
        }


def to_predictions(
    items: Sequence[Utterance],
    probs: np.ndarray,
    missing: Sequence[dict[str, str]],
    asr: Sequence[bool],
    labels: Sequence[str],
    modalities: Sequence[str],
) -> list[Prediction]:
    """One prediction per item: the most probable label where any modality was usable, else
    an ``error`` listing why none was."""
    out = []
    for i, item in enumerate(items):
        used = [m for m in modalities if m not in missing[i]]
        common: dict[str, Any] = {
            "id": item.id or None,
            "start": item.start,
            "end": item.end,
            "text": item.text or None,
            "asr": asr[i],
            "missing": dict(missing[i]),
            "modalities": used,
        }
        if not used:
            reasons = "; ".join(f"{m}: {r}" for m, r in missing[i].items())
            out.append(Prediction(None, {}, error=f"nothing usable ({reasons})", **common))
            continue
        row = {c: float(p) for c, p in zip(labels, probs[i], strict=True)}
        out.append(Prediction(labels[int(np.argmax(probs[i]))], row, **common))
    return out
