"""A synthetic corpus at the feature level.

Every utterance has a hidden emotion factor (its class mean plus a personal spread). Each
modality sees that factor through its own random projection, its own noise and a speaker
offset; with some probability a modality is *uninformative* for an utterance (it sees another
class's factor), so that no single modality is enough and fusion matters. Sequences have random
valid lengths and are zero-padded, like real extracted features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from emomatch.corpora.record import corpus_record
from emomatch.errors import DataError
from emomatch.store import FeatureStore, ModalitySpec, StoreWriter
from emomatch.store.writer import new_store_folder

#: the corpus record's name in the store's info: a model trained on it names it when applied
SYNTHETIC_FEATURES_NAME = "emomatch synthetic features (generated vectors, no media)"

if TYPE_CHECKING:
    import torch

#: The paper's input shapes (IEMOCAP): acoustic 1582, visual 18 x 342, lexical 22 x 1024.
PAPER_SHAPES: dict[str, tuple[int, ...]] = {
    "acoustic": (1582,),
    "visual": (18, 342),
    "lexical": (22, 1024),
}

SMALL_SHAPES: dict[str, tuple[int, ...]] = {
    "acoustic": (64,),
    "visual": (8, 32),
    "lexical": (10, 48),
}


def random_inputs(
    n: int, shapes: dict[str, tuple[int, ...]], generator: torch.Generator
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """A model batch of standard-normal features: per modality (x, valid lengths), a vector's
    length 1, a sequence's drawn from 1..max_len as padded real sequences are (for steps and
    gradients, not for learning: there is no class signal)."""
    import torch

    inputs = {}
    for m, shape in shapes.items():
        x = torch.randn(n, *shape, generator=generator)
        if len(shape) == 1:
            lengths = torch.ones(n, dtype=torch.long)
        else:
            lengths = torch.randint(1, shape[0] + 1, (n,), generator=generator)
        inputs[m] = (x, lengths)
    return inputs


@dataclass
class SyntheticCorpus:
    classes: Sequence[str] = ("angry", "happy", "neutral", "sad")
    n_train: int = 200
    n_validation: int = 100
    n_test: int = 200
    n_unlabeled: int = 1000
    shapes: dict[str, tuple[int, ...]] = field(default_factory=lambda: dict(SMALL_SHAPES))
    #: standard deviation of each modality's own noise, relative to the class signal
    noise: dict[str, float] = field(
        default_factory=lambda: {"acoustic": 1.5, "visual": 2.0, "lexical": 1.5}
    )
    #: probability that a modality shows another class's factor for an utterance
    uninformative: dict[str, float] = field(
        default_factory=lambda: {"acoustic": 0.25, "visual": 0.3, "lexical": 0.25}
    )
    #: probability that a modality is missing altogether (length 0)
    missing: dict[str, float] = field(default_factory=dict)
    #: class mix of the unlabeled pool (None: uniform), e.g. a meeting corpus skewed to neutral
    unlabeled_class_weights: Sequence[float] | None = None
    #: class mix of the labeled splits (None: uniform)
    labeled_class_weights: Sequence[float] | None = None
    factor_dim: int = 8
    separation: float = 1.0
    spread: float = 0.6
    speakers: int = 10
    #: speaker-independent folds like IEMOCAP's: speakers in pairs ("sessions"); fold k holds out
    #: session k, its first speaker for validation and its second for test (0: no fold fields)
    folds: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        for name, shape in self.shapes.items():
            if name not in PAPER_SHAPES:
                raise DataError(f"unknown modality {name!r} in shapes")
            if len(shape) != len(PAPER_SHAPES[name]):
                raise DataError(f"{name} shape {shape} must have {len(PAPER_SHAPES[name])} dims")
        if self.folds and self.speakers != 2 * self.folds:
            raise DataError(f"{self.folds} folds need {2 * self.folds} speakers (two per session)")
        for weights in (self.unlabeled_class_weights, self.labeled_class_weights):
            if weights is not None and len(weights) != len(self.classes):
                raise DataError("class weights need one value per class")


def _class_draw(rng: np.random.Generator, n: int, k: int, weights: Sequence[float] | None):
    if weights is None:
        # Balanced and shuffled, so that every class is present even in small splits.
        return rng.permutation(np.arange(n) % k)
    p = np.asarray(weights, dtype=np.float64)
    return rng.choice(k, size=n, p=p / p.sum())


def write_synthetic_store(
    corpus: SyntheticCorpus, path: str | Path, part_size: int = 4096
) -> FeatureStore:
    """Generate the corpus and write it as a feature store with a ``split`` field."""
    rng = np.random.default_rng(corpus.seed)
    k = len(corpus.classes)
    h = corpus.factor_dim
    means = rng.normal(size=(k, h))
    means *= corpus.separation * np.sqrt(h) / np.linalg.norm(means, axis=1, keepdims=True)
    projections = {
        m: rng.normal(size=(h, shape[-1])) / np.sqrt(h) for m, shape in corpus.shapes.items()
    }
    # A temporal profile per modality, so frames differ and reversal is learnable.
    profiles = {
        m: 0.6 + 0.4 * np.sin(np.linspace(0, np.pi, shape[0]) + rng.uniform(0, np.pi))
        for m, shape in corpus.shapes.items()
        if len(shape) == 2
    }
    speaker_offsets = {
        m: rng.normal(scale=0.5, size=(corpus.speakers, shape[-1]))
        for m, shape in corpus.shapes.items()
    }

    splits = [
        ("train", corpus.n_train, True, corpus.labeled_class_weights),
        ("validation", corpus.n_validation, True, corpus.labeled_class_weights),
        ("test", corpus.n_test, True, corpus.labeled_class_weights),
        ("unlabeled", corpus.n_unlabeled, False, corpus.unlabeled_class_weights),
    ]
    specs = {
        m: ModalitySpec(
            kind="vector" if len(shape) == 1 else "sequence",
            dim=shape[-1],
            max_len=1 if len(shape) == 1 else shape[0],
            extractor={"name": "synthetic", "seed": corpus.seed},
        )
        for m, shape in corpus.shapes.items()
    }
    # Written into a temporary folder renamed into place at the end: `path` never holds half a
    # synthetic store, and an existing store there is refused rather than mixed into.
    with (
        new_store_folder(path) as tmp,
        StoreWriter(
            tmp,
            classes=list(corpus.classes),
            modalities=specs,
            fields=["split", *(f"fold_{k}" for k in range(1, corpus.folds + 1))],
            info={
                "generator": "emomatch.synthetic",
                "seed": corpus.seed,
                "corpus": corpus_record(SYNTHETIC_FEATURES_NAME, True, None),
            },
        ) as writer,
    ):
        counter = 0
        for split, n, labeled, weights in splits:
            for start in range(0, n, part_size):
                size = min(part_size, n - start)
                y = _class_draw(rng, size, k, weights)
                factor = means[y] + rng.normal(scale=corpus.spread, size=(size, h))
                speaker = rng.integers(0, corpus.speakers, size=size)
                index = pd.DataFrame(
                    {
                        "id": [f"{split}_{counter + i:06d}" for i in range(size)],
                        "speaker": [f"spk{s:02d}" for s in speaker],
                        "label": [corpus.classes[c] if labeled else None for c in y],
                        "split": split,
                    }
                )
                counter += size
                for k in range(1, corpus.folds + 1):
                    session, second = speaker // 2, speaker % 2
                    role = np.where(second == 0, "validation", "test")
                    fold = np.where(session == k - 1, role, "train")
                    index[f"fold_{k}"] = fold if labeled else "unlabeled"
                arrays = {}
                for m, shape in corpus.shapes.items():
                    seen = factor.copy()
                    wrong = rng.random(size) < corpus.uninformative.get(m, 0.0)
                    seen[wrong] = means[rng.integers(0, k, size=wrong.sum())] + rng.normal(
                        scale=corpus.spread, size=(int(wrong.sum()), h)
                    )
                    signal = seen @ projections[m] + speaker_offsets[m][speaker]
                    noise = corpus.noise.get(m, 1.0)
                    if len(shape) == 1:
                        x = signal + rng.normal(scale=noise, size=(size, shape[0]))
                        lengths = np.ones(size, dtype=np.int32)
                    else:
                        t, d = shape
                        x = signal[:, None, :] * profiles[m][None, :, None]
                        x = x + rng.normal(scale=noise, size=(size, t, d))
                        lengths = rng.integers(max(1, t // 2), t + 1, size=size).astype(np.int32)
                        x[np.arange(t)[None, :] >= lengths[:, None]] = 0.0
                    gone = rng.random(size) < corpus.missing.get(m, 0.0)
                    x[gone] = 0.0
                    lengths[gone] = 0
                    arrays[m] = x.astype(np.float32)
                    index[f"{m}_length"] = lengths
                writer.write_part(index, arrays)
    return FeatureStore(path)
