"""One training run: a run folder with its config, checkpoints (best and last) and logs."""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, EarlyStopping, RichProgressBar

from emomatch.config import ExperimentConfig
from emomatch.errors import ConfigError, EmomatchError
from emomatch.files import atomic_path, atomic_write_text, hold_lock
from emomatch.rundir import BEST, TOP_PREFIX, RunFolder
from emomatch.runtime import StreamingCheckpointIO, keep_freed_memory
from emomatch.safeload import read_checkpoint
from emomatch.threads import share_machine
from emomatch.training.module import EmoMatchModule
from emomatch.training.persist import (
    EveryEpochCheckpoint,
    SelectingCheckpoint,
    checkpoint_epoch,
    epoch_loggers,
)
from emomatch.training.prepare import prepare_training_data

log = logging.getLogger(__name__)

#: keys that may change between an interrupted run and its resumption
RESUMABLE_CHANGES = {
    ("train", "max_epochs"),
    ("train", "progress_bar"),
    ("train", "num_workers"),
    ("train", "threads"),
    ("train", "loggers"),
    # the same gradients either way: only memory and time differ
    ("train", "recompute"),
}


class RunExistsError(EmomatchError):
    pass


class _Unactionable(logging.Filter):
    """Drops Lightning's lines a user cannot act on: the advert for its cloud logger at every
    fit, and "`weights_only` was not set" at every checkpoint load (every load here goes
    through :mod:`emomatch.safeload`, weights only)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "litlogger" not in message and "`weights_only` was not set" not in message


_UNACTIONABLE = _Unactionable()
for _name in (
    "pytorch_lightning.utilities.rank_zero",
    "pytorch_lightning.trainer.connectors.checkpoint_connector",
):
    logging.getLogger(_name).addFilter(_UNACTIONABLE)


class EpochProgressBar(RichProgressBar):
    """Lightning's bar counts epochs from 0 ("Epoch 4/4" for max_epochs 5): this one from 1,
    as "Epoch 5/5"."""

    def _get_train_description(self, current_epoch: int) -> str:
        description = super()._get_train_description(current_epoch)
        total = self.trainer.max_epochs
        counted = f"Epoch {current_epoch + 1}" + (f"/{total}" if total is not None else "")
        # Lightning pads the description to the validation one's width
        return counted.ljust(len(description))


def config_differences(
    a: dict[str, Any], b: dict[str, Any], prefix: tuple[str, ...] = ()
) -> list[tuple[str, ...]]:
    """Key paths where two config dicts differ."""
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += config_differences(va, vb, (*prefix, key))
        elif va != vb:
            out.append((*prefix, key))
    return out


def precision_for(cfg: ExperimentConfig) -> str:
    if cfg.train.precision != "auto":
        return cfg.train.precision
    gpu = cfg.train.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return "16-mixed" if gpu else "32-true"


class TopEpochs(SelectingCheckpoint):
    """The ``average`` best epochs' checkpoints, kept beside ``best.ckpt`` for averaging."""

    @property
    def state_key(self) -> str:
        # Lightning keys a callback's saved state by its monitor settings, which this one shares
        # with the selector; a key of its own keeps both resumable.
        return self._generate_state_key(monitor=self.monitor, mode=self.mode, role="top-k")


def check_accelerator(cfg: ExperimentConfig) -> None:
    """An accelerator this machine lacks is a config error, said before anything is written."""
    asked = str(cfg.train.accelerator).lower()
    if asked in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"train.accelerator={cfg.train.accelerator!r} but this machine has no usable CUDA "
            "GPU (torch.cuda.is_available() is False); use train.accelerator=cpu or auto"
        )
    if asked == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("train.accelerator='mps' but MPS is not available on this machine")


def fit(
    cfg: ExperimentConfig,
    run_dir: str | Path,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
) -> Path:
    """Train and return the best checkpoint (selected on the validation metric).

    ``resume`` continues from ``last.ckpt`` of the same run folder; the config must be the same
    but for the epoch budget and display settings. The run folder is locked while it trains.
    """
    run_dir = Path(run_dir)
    check_accelerator(cfg)
    if launched_rank() != 0:
        # A process Lightning (or torchrun) started for another device of this run: rank 0
        # checked, created and locked the run folder; this one only trains beside it.
        return _fit_locked(
            cfg, run_dir, prepare_training_data(cfg), _resumed(run_dir, resume), callbacks
        )
    run = RunFolder(run_dir)
    config_dict = cfg.model_dump(mode="json")
    if resume:
        if not run.can_resume():
            raise RunExistsError(f"cannot resume: {run.last} does not exist")
        old = run.saved_config()
        resumable = set(RESUMABLE_CHANGES)
        if cfg.train.schedule != "constant":
            # the decay is laid out over max_epochs: another budget is another schedule
            resumable.discard(("train", "max_epochs"))
        changed = [k for k in config_differences(old, config_dict) if k not in resumable]
        if changed:
            keys = ", ".join(".".join(k) for k in changed)
            raise RunExistsError(
                f"cannot resume {run_dir}: the config differs in {keys} (`emomatch resume "
                f"{run_dir}` continues with the config and overrides the run saved)"
            )
    elif run.has_checkpoints():
        raise RunExistsError(
            f"{run_dir} already holds a run; pass --resume to continue it or choose another --out"
        )
    # Everything that can be checked is checked before the run folder gets its first file.
    data = prepare_training_data(cfg)
    resumed_epoch = _resumed(run_dir, resume)
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        with hold_lock(run_dir, "run folder"):
            return _fit_locked(cfg, run_dir, data, resumed_epoch, callbacks)
    except BaseException:
        # A run that failed before its first checkpoint leaves no folder behind to trip over.
        if created and not run.can_resume():
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def launched_rank() -> int:
    """This process's global rank where a DDP launcher started it (0 otherwise)."""
    for var in ("RANK", "LOCAL_RANK", "NODE_RANK"):
        value = os.environ.get(var, "0")
        if value.isdigit() and int(value) != 0:
            return int(value)
    return 0


def _resumed(run_dir: Path, resume: bool) -> int | None:
    return checkpoint_epoch(RunFolder(run_dir).last) if resume else None


def _fit_locked(
    cfg: ExperimentConfig,
    run_dir: Path,
    data: Any,
    resumed_epoch: int | None,
    callbacks: Sequence[Callback],
) -> Path:
    keep_freed_memory()
    share_machine(cfg.train.threads)
    run = RunFolder(run_dir)
    ckdir = run.checkpoint_dir
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    module = EmoMatchModule(
        config=cfg.model_dump(mode="json"),
        shapes={m: list(s) for m, s in data.shapes.items()},
        classes=data.classes,
        class_weights=data.class_weights() if cfg.loss.class_weights else None,
    )
    module.normalizer.set_stats(data.stats)
    train_loader, val_loader = data.loaders(cfg)
    metric = cfg.train.select_metric
    selector = SelectingCheckpoint(
        dirpath=ckdir,
        filename=Path(BEST).stem,
        monitor=f"val/{metric}",
        mode="max",
        save_top_k=1,
        save_last=False,
        # Saved at validation end, like last.ckpt after it: Lightning's default (train epoch
        # end) comes after last.ckpt, which then held the selector's state of the epoch before
        # and a resumed run could select another epoch.
        save_on_train_epoch_end=False,
        enable_version_counter=False,
        auto_insert_metric_name=False,
    )
    selecting: list[Callback] = [selector]
    keeps_several = cfg.train.select == "last" or cfg.train.average > 1
    if keeps_several:
        # the epochs the kept model is made of: the best few, or the last few ("epoch" is
        # one of Lightning's monitor candidates)
        by = f"val/{metric}" if cfg.train.select == "best" else "epoch"
        selecting.append(
            TopEpochs(
                dirpath=ckdir,
                filename=TOP_PREFIX + "{epoch}",
                monitor=by,
                mode="max",
                save_top_k=cfg.train.average,
                save_on_train_epoch_end=False,
                enable_version_counter=False,
                auto_insert_metric_name=False,
            )
        )
    if cfg.train.patience is not None:
        selecting.append(
            # Checked where the checkpoints are written (validation end), so the counter saved
            # in last.ckpt is this epoch's and a resumed run stops where the original would.
            EarlyStopping(
                monitor=f"val/{metric}",
                mode="max",
                patience=cfg.train.patience,
                check_on_train_epoch_end=False,
            )
        )
    try:
        trainer = pl.Trainer(
            max_epochs=cfg.train.max_epochs,
            accelerator=cfg.train.accelerator,
            devices=cfg.train.devices,
            num_nodes=cfg.train.num_nodes,
            precision=precision_for(cfg),  # type: ignore[arg-type]
            callbacks=[
                *selecting,
                EveryEpochCheckpoint(ckdir),
                *([EpochProgressBar()] if cfg.train.progress_bar else []),
                *callbacks,
            ],
            logger=epoch_loggers(cfg.train.loggers, run.logs_dir, resumed_epoch),
            enable_progress_bar=cfg.train.progress_bar,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            deterministic=cfg.train.deterministic,
            use_distributed_sampler=False,
            log_every_n_steps=1,
            plugins=[StreamingCheckpointIO()],
        )
    except (ValueError, RuntimeError, TypeError) as exc:
        # Lightning's MisconfigurationException is a ValueError/RuntimeError subclass.
        raise ConfigError(f"train settings refused by the trainer: {exc}") from None
    if launched_rank() == 0:
        atomic_write_text(run.config_path, cfg.to_yaml())
    resume_from = str(run.last) if resumed_epoch is not None else None
    with warnings.catch_warnings():
        # Lightning's own use of a deprecated torch name; nothing a user can act on
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        trainer.fit(module, train_loader, val_loader, ckpt_path=resume_from, weights_only=True)
    best = run.best
    # Only rank 0 writes checkpoints (and renames them into place after the others went on).
    if trainer.is_global_zero and not best.is_file():
        raise EmomatchError(f"training ended without a best checkpoint in {ckdir}")
    if keeps_several and trainer.is_global_zero:
        return average_checkpoints(sorted(ckdir.glob(TOP_PREFIX + "*.ckpt")), run.averaged)
    return best


def selected_checkpoint(run_dir: str | Path) -> Path:
    """The checkpoint a finished run is scored with (see :class:`RunFolder`)."""
    return RunFolder(run_dir).selected_checkpoint()


def average_checkpoints(paths: Sequence[Path], out: Path) -> Path:
    """One checkpoint whose weights are the mean of ``paths``' (epochs of one run, so their
    weights lie close enough for a mean to be a good model, as in Polyak or SWA averaging)."""
    if not paths:
        raise EmomatchError(f"no checkpoints to average next to {out}")
    saved = [read_checkpoint(p) for p in paths]
    first = saved[0]
    states = [s["state_dict"] for s in saved]
    averaged = {}
    for key, value in states[0].items():
        if torch.is_floating_point(value):
            averaged[key] = torch.stack([s[key].float() for s in states]).mean(0).to(value.dtype)
        else:
            averaged[key] = value
    merged = {
        **first,
        "state_dict": averaged,
        "averaged_epochs": sorted(int(s["epoch"]) for s in saved),
    }
    merged.pop("optimizer_states", None)
    merged.pop("lr_schedulers", None)
    with atomic_path(out) as tmp:
        torch.save(merged, tmp)
    return out
