"""Reading a run's epoch history and comparing a resumed run with an uninterrupted one."""

from __future__ import annotations

import csv
from pathlib import Path

from pytorch_lightning.callbacks import Callback

from tests.support.builders import make_config

EPOCHS = 5
FINAL_KEYS = ("wap", "ua", "wa", "weighted_f1", "macro_f1", "confusion", "best_epoch")


def history(run: Path) -> dict[int, dict[str, str]]:
    """Per-epoch rows of logs/metrics.csv, train and validation rows merged by epoch."""
    out: dict[int, dict[str, str]] = {}
    with open(run / "logs" / "metrics.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            epoch = int(row["epoch"])
            for key, value in row.items():
                if value not in ("", None) and key not in ("step",):
                    out.setdefault(epoch, {})[key] = value
    return out


def losses(run: Path) -> list[str]:
    rows = history(run)
    return [rows[e]["train/loss"] for e in sorted(rows)]


def config(store: Path, norm_first: bool, epochs: int = EPOCHS, **train):
    return make_config(
        store,
        model={"norm_first": norm_first, "dropout": 0.2},
        train={"max_epochs": epochs, "schedule": "constant", **train},
    )


class CrashMidEpoch(Callback):
    """Raises in the middle of an epoch (after some steps), like a crash or Ctrl-C."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            raise RuntimeError("simulated crash")


def assert_same_run(resumed: dict, run: Path, reference: tuple[dict, Path]) -> None:
    expected, expected_run = reference
    assert losses(run) == losses(expected_run)
    assert len(losses(run)) == EPOCHS  # resuming kept every epoch's row
    assert history(run) == history(expected_run)
    for key in FINAL_KEYS:
        assert resumed[key] == expected[key], key
