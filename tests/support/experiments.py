"""A two-row experiment spec and its base config, written for `emomatch experiment` tests."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.support.builders import TINY_MODEL

#: a two-row experiment: fully vs semi in one table row, baselines as columns
TWO_ROWS = """
title: fully vs semi (test)
metrics: [wap, ua]
paper_corpus: a test
baselines: columns
curve: {x: "labelled (%)", metric: ua}
set:
  data.modalities: [acoustic, lexical]
rows:
  - name: fully
    label: A+L
    column: fully
    x: 100
    set: {loss.unlabeled: false}
    paper: {wap: 70.3, ua: 68.6}
  - name: semi
    label: A+L
    column: semi
    x: 100
    set: {loss.unlabeled: true}
    paper: {wap: 72.6, ua: 72.1}
"""


def write_base(folder: Path, store: Path, epochs: int = 1) -> Path:
    raw = {
        "data": {"store": str(store)},
        "model": dict(TINY_MODEL),
        "train": {
            "batch_size": 16,
            "unlabeled_batch_size": 16,
            "max_epochs": epochs,
            "progress_bar": False,
            "accelerator": "cpu",
            "devices": 1,
        },
    }
    path = folder / "base.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def write_spec(folder: Path, text: str = TWO_ROWS) -> Path:
    path = folder / "two-rows.yaml"
    path.write_text(text)
    return path
