"""What a run leaves on disk while it trains: the every-epoch checkpoint and the epoch history.

Both are written so that a run killed at any moment (SIGKILL included) can be resumed without
redoing a finished epoch and without losing a row of its history.
"""

from __future__ import annotations

import csv
import io
import os
from argparse import Namespace
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Checkpoint, ModelCheckpoint
from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities import rank_zero_only

from emomatch.errors import EmomatchError, WriteError
from emomatch.files import atomic_write_text, describe_os_error
from emomatch.rundir import HISTORY_FILE, LAST, checkpoint_metadata


def save_atomically(trainer: pl.Trainer, final: Path) -> None:
    """``trainer.save_checkpoint`` to a temporary file renamed over ``final``: a kill or a full
    disk mid-write leaves the previous checkpoint whole. A failed write is one clear error."""
    tmp = final.with_name(f".{final.name}.tmp")
    try:
        trainer.save_checkpoint(tmp)
        if trainer.is_global_zero:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, final)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise WriteError(
            f"cannot write checkpoint {final}: {describe_os_error(exc)}; the checkpoints "
            "written before are intact, so `--resume` continues from the last finished epoch"
        ) from None


class SelectingCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint (best or top-k epochs), each file written atomically."""

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        save_atomically(trainer, Path(filepath))
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath


class EveryEpochCheckpoint(Checkpoint):
    """``last.ckpt`` after every validated epoch, written to a temporary file and renamed.

    Lightning's ``save_last`` writes only when a monitored checkpoint is saved (when the
    validation score improves), so a crash after a run of non-improving epochs redid all of
    them. Being a ``Checkpoint`` subclass, Lightning runs it after the selecting
    ``ModelCheckpoint`` (given before it), so the saved callback state holds this epoch's best.
    """

    def __init__(self, dirpath: Path) -> None:
        self.dirpath = Path(dirpath)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        save_atomically(trainer, self.dirpath / LAST)


def checkpoint_epoch(path: Path) -> int:
    """The epoch a checkpoint ends; a damaged file is one clear error, not a zip traceback."""
    lead = f"cannot resume from {path}: the file is damaged or not an emomatch checkpoint"
    return int(checkpoint_metadata(path, problem=lead)["epoch"])


class EpochHistory(Logger):
    """``logs/metrics.csv``: one row per logging call (Lightning logs train and validation
    epoch values separately), the whole file rewritten atomically at every save.

    Lightning's CSV logger deletes the previous file when a run resumes and buffers up to 100
    rows in memory, so a resumed run lost its history and a killed one its last epochs. Here a
    resumed run keeps the rows of the epochs its checkpoint finished (``keep_through``) and
    redoes only the rest.
    """

    FILE = HISTORY_FILE

    def __init__(self, log_dir: Path, keep_through: int | None = None) -> None:
        super().__init__()
        self.history_dir = Path(log_dir)
        self.rows: list[dict[str, Any]] = []
        path = self.history_dir / self.FILE
        if keep_through is not None and path.is_file():
            with open(path, newline="") as fh:
                for row in csv.DictReader(fh):
                    epoch = row.get("epoch")
                    if epoch not in (None, "") and int(float(epoch)) <= keep_through:
                        self.rows.append({k: v for k, v in row.items() if v != ""})

    @property
    def name(self) -> str:
        return "logs"

    @property
    def version(self) -> str:
        return ""

    @property
    def save_dir(self) -> str:
        return str(self.history_dir)

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kw: Any) -> None:
        return None  # the run folder's config.yaml holds them

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        row: dict[str, Any] = {k: float(v) for k, v in metrics.items()}
        if "epoch" in row:
            row["epoch"] = int(row["epoch"])
        row["step"] = step
        self.rows.append(row)

    @rank_zero_only
    def save(self) -> None:
        if not self.rows:
            return
        keys = sorted({k for row in self.rows for k in row} - {"epoch", "step"})
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=["epoch", "step", *keys], lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        try:
            self.history_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.history_dir / self.FILE, out.getvalue())
        except OSError as exc:
            raise WriteError(
                f"cannot write {self.history_dir / self.FILE}: {describe_os_error(exc)}"
            ) from None

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.save()


class TensorBoardHistory(Logger):
    """The same per-epoch values as :class:`EpochHistory`, as TensorBoard scalars in
    ``logs/tensorboard`` (step = epoch, so its curves line up with ``metrics.csv``).

    A resumed run purges the events after the epoch its checkpoint finished, as the CSV drops
    those rows: the redone epochs are not drawn twice."""

    DIR = "tensorboard"

    def __init__(self, log_dir: Path, keep_through: int | None = None) -> None:
        super().__init__()
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # torch raises it when the tensorboard package is missing
            raise EmomatchError(
                "train.loggers asks for tensorboard, but the tensorboard package is not "
                "installed: pip install 'emomatch[tensorboard]' (or drop it from train.loggers)"
            ) from None
        self.event_dir = Path(log_dir) / self.DIR
        purge = None if keep_through is None else keep_through + 1
        self.writer = SummaryWriter(str(self.event_dir), purge_step=purge)

    @property
    def name(self) -> str:
        return "tensorboard"

    @property
    def version(self) -> str:
        return ""

    @property
    def save_dir(self) -> str:
        return str(self.event_dir)

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kw: Any) -> None:
        return None  # the run folder's config.yaml holds them

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        epoch = metrics.get("epoch")
        at = int(epoch) if epoch is not None else int(step or 0)
        for key, value in metrics.items():
            if key != "epoch":
                self.writer.add_scalar(key, float(value), global_step=at)

    @rank_zero_only
    def save(self) -> None:
        self.writer.flush()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.writer.close()


def epoch_loggers(
    names: Sequence[str], log_dir: Path, keep_through: int | None = None
) -> list[Logger]:
    """The loggers ``train.loggers`` names; the CSV history is always first."""
    loggers: list[Logger] = [EpochHistory(log_dir, keep_through=keep_through)]
    if "tensorboard" in names:
        loggers.append(TensorBoardHistory(log_dir, keep_through=keep_through))
    return loggers
