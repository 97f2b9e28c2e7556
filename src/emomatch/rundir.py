"""The run folder: the one owner of its layout and of what can be read from it.

A run folder, as ``emomatch train`` writes it::

    config.yaml                  the resolved experiment config
    checkpoints/last.ckpt        every validated epoch (what ``--resume`` continues from)
    checkpoints/best.ckpt        the epoch selected on validation
    checkpoints/top-E.ckpt       with ``train.average`` / ``train.select: last``: the kept epochs
    checkpoints/selected.ckpt    their average, the model scored where it exists
    logs/metrics.csv             the epoch history
    metrics.json                 test metrics at the top level; written last, so "finished"
    evaluation/                  ``emomatch evaluate``'s reports
    seed_S/  fold_K/             the members of a ``--seeds`` ensemble or a ``--folds`` run,
                                 each a run folder itself

Every module that reads or writes these names goes through here (as SpeechBrain's
``Checkpointer`` owns its folder), so the layout can change in one place.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from emomatch.errors import EmomatchError
from emomatch.safeload import read_checkpoint

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
CHECKPOINT_DIR = "checkpoints"
LOGS_DIR = "logs"
#: the epoch history inside ``logs/``
HISTORY_FILE = "metrics.csv"
EVALUATION_DIR = "evaluation"
LAST = "last.ckpt"
BEST = "best.ckpt"
SELECTED = "selected.ckpt"
#: the kept epochs' checkpoints (``top-{epoch}.ckpt``) averaged into ``selected.ckpt``
TOP_PREFIX = "top-"
SEED_PREFIX = "seed_"
FOLD_PREFIX = "fold_"


class RunFolder:
    """A run folder (finished, interrupted or not yet started) and the questions asked of it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINT_DIR

    @property
    def logs_dir(self) -> Path:
        return self.path / LOGS_DIR

    @property
    def history_path(self) -> Path:
        return self.logs_dir / HISTORY_FILE

    @property
    def last(self) -> Path:
        return self.checkpoint_dir / LAST

    @property
    def best(self) -> Path:
        return self.checkpoint_dir / BEST

    @property
    def averaged(self) -> Path:
        return self.checkpoint_dir / SELECTED

    def evaluation_dir(self, split: str | None = None) -> Path:
        """Where ``emomatch evaluate`` reports: the test split at the top (as before), any other
        split in a folder of its own so that it never overwrites the test report."""
        base = self.path / EVALUATION_DIR
        return base if split is None else base / split

    def is_finished(self) -> bool:
        """Its metrics are written last: a folder holding them finished training and scoring."""
        return self.metrics_path.is_file()

    def can_resume(self) -> bool:
        """An interrupted run: it saved at least one validated epoch."""
        return self.last.is_file()

    def has_checkpoints(self) -> bool:
        return self.checkpoint_dir.is_dir() and any(self.checkpoint_dir.iterdir())

    def read_metrics(self) -> dict[str, Any]:
        return dict(json.loads(self.metrics_path.read_text()))

    def read_config(self) -> dict[str, Any]:
        """The saved config as plain data (``{}`` where the run saved none yet)."""
        if not self.config_path.is_file():
            return {}
        return dict(yaml.safe_load(self.config_path.read_text()) or {})

    def saved_config(self) -> dict[str, Any]:
        """The saved config as plain data with today's defaults filled in: a run saved by an
        earlier version lacks the keys added since, which is no difference."""
        from emomatch.config import ExperimentConfig

        saved = self.read_config()
        with contextlib.suppress(ValueError):
            saved = ExperimentConfig.model_validate(saved).model_dump(mode="json")
        return saved

    def selected_checkpoint(self) -> Path:
        """The checkpoint a finished run is scored with: the average of its kept epochs where it
        made one, else the best epoch's."""
        return self.averaged if self.averaged.is_file() else self.best

    def members(self, prefix: str) -> list[RunFolder]:
        """The member runs (``seed_S`` or ``fold_K`` folders), in name order."""
        return [RunFolder(p) for p in sorted(self.path.glob(prefix + "*")) if p.is_dir()]

    def seeds(self) -> list[RunFolder]:
        return self.members(SEED_PREFIX)

    def folds(self) -> list[RunFolder]:
        return self.members(FOLD_PREFIX)

    def is_ensemble(self) -> bool:
        """A ``--seeds N`` folder: its seeds are the runs, it has no checkpoints of its own."""
        return bool(self.seeds()) and not self.checkpoint_dir.is_dir()

    def is_fold_set(self) -> bool:
        """A ``--folds`` folder: one run per fold and no model of its own."""
        return bool(self.folds()) and not self.checkpoint_dir.is_dir()

    def scoring_checkpoints(self) -> list[Path]:
        """The checkpoints a finished run is scored with: one, or one per seed of an ensemble."""
        if self.is_ensemble():
            return [seed.selected_checkpoint() for seed in self.seeds()]
        return [self.selected_checkpoint()]

    def training_runs(self) -> list[RunFolder]:
        """The finished single training runs at or below this folder (a run, its folds, its
        seeds): the folders holding both a config and metrics."""
        found = [RunFolder(p.parent) for p in self.path.rglob(CONFIG_FILE)]
        return sorted((r for r in found if r.is_finished()), key=lambda r: r.path)


def checkpoint_metadata(path: str | Path, problem: str | None = None) -> dict[str, Any]:
    """The epoch fields of a saved checkpoint (``epoch``, ``averaged_epochs``), read without
    running anything it holds (:func:`emomatch.safeload.read_checkpoint`) and without its
    tensors; a damaged, foreign or crafted file is one clear error starting with ``problem``."""
    path = Path(path)
    lead = problem or f"{path}: the file is damaged or not an emomatch checkpoint"
    # mapped: the zip structure and the small fields are read, the tensors stay on disk
    saved = read_checkpoint(path, mmap=True, problem=lead)
    epoch = saved.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        raise EmomatchError(
            f"{lead}: its 'epoch' is {epoch!r}, not an epoch number; delete the run folder "
            "to start again"
        )
    return {"epoch": epoch, "averaged_epochs": saved.get("averaged_epochs")}


def resume_or_start(
    run: RunFolder, train: Callable[[bool], dict[str, Any]], reuse_finished: bool = True
) -> dict[str, Any]:
    """The one resume-or-start rule: a finished run is read back, an interrupted one continues
    (``train(True)``), any other starts (``train(False)``)."""
    if reuse_finished and run.is_finished():
        return run.read_metrics()
    return train(run.can_resume())
