"""A bundle made the way a user makes one: a run trained on a store, exported by the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from typer.testing import CliRunner

from emomatch.cli import app
from emomatch.runs import train_and_report
from emomatch.store import FeatureStore
from tests.support.builders import make_config


def train_and_export(store: Path, modalities: list[str], out: Path) -> Path:
    """One supervised epoch on ``store`` (run in ``out/run``), exported to ``out/bundle``."""
    cfg = make_config(
        store,
        data={"store": str(store), "modalities": modalities},
        loss={"unlabeled": False},
        train={"max_epochs": 1},
    )
    train_and_report(cfg, out / "run")
    bundle = out / "bundle"
    result = CliRunner().invoke(app, ["export", str(out / "run"), "--out", str(bundle)])
    assert result.exit_code == 0, result.output
    return bundle


def stored_probabilities(predictor: Any, store: Path, uid: str, modality: str) -> np.ndarray:
    """What ``predictor`` gives for the features ``store`` holds for ``uid``."""
    fs = FeatureStore(store)
    at = np.flatnonzero(fs.index["id"].to_numpy() == uid)
    return predictor.predict_features(
        {modality: fs.fetch(modality, at)}, {modality: fs.lengths(modality, at)}
    )[0]
