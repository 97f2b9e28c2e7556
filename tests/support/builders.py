"""Tiny synthetic corpora and configs that train in seconds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from emomatch.config import ExperimentConfig, config_from_dict
from emomatch.synthetic import SyntheticCorpus

TINY_SHAPES = {"acoustic": (24,), "visual": (6, 12), "lexical": (5, 16)}
TINY_MODEL = {
    "latent_dim": 16,
    "acoustic_hidden": [32],
    "visual_hidden": [],
    "lexical_hidden": [32],
    "feedforward_dim": 32,
    "classifier_hidden": [16],
    "dropout": 0.1,
}


def tiny_corpus(**changes: Any) -> SyntheticCorpus:
    base: dict[str, Any] = dict(
        n_train=96,
        n_validation=48,
        n_test=64,
        n_unlabeled=96,
        shapes=dict(TINY_SHAPES),
        noise={"acoustic": 0.6, "visual": 0.8, "lexical": 0.6},
        uninformative={"acoustic": 0.0, "visual": 0.0, "lexical": 0.0},
        separation=2.0,
        seed=7,
    )
    base.update(changes)
    return SyntheticCorpus(**base)


def make_config(store: Path, **sections: dict[str, Any]) -> ExperimentConfig:
    raw: dict[str, Any] = {
        "seed": 0,
        "data": {"store": str(store)},
        "model": dict(TINY_MODEL),
        "loss": {},
        "train": {
            "batch_size": 16,
            "unlabeled_batch_size": 16,
            "max_epochs": 3,
            "progress_bar": False,
            "accelerator": "cpu",
            "devices": 1,
        },
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            raw[key] = {**raw.get(key, {}), **value}
        else:
            raw[key] = value
    return config_from_dict(raw, "test")
