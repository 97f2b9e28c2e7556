"""One training run: a run folder with its config, checkpoints (best and last) and logs."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger

from emomatch.config import ExperimentConfig
from emomatch.errors import EmomatchError
from emomatch.runtime import keep_freed_memory
from emomatch.training.module import EmoMatchModule
from emomatch.training.prepare import prepare_training_data

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
#: keys that may change between an interrupted run and its resumption
RESUMABLE_CHANGES = {("train", "max_epochs"), ("train", "progress_bar"), ("train", "num_workers")}


class RunExistsError(EmomatchError):
    pass


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _differences(a: dict[str, Any], b: dict[str, Any], prefix: tuple[str, ...] = ()) -> list:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _differences(va, vb, (*prefix, key))
        elif va != vb:
            out.append((*prefix, key))
    return out


def precision_for(cfg: ExperimentConfig) -> str:
    if cfg.train.precision != "auto":
        return cfg.train.precision
    gpu = cfg.train.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return "16-mixed" if gpu else "32-true"


def checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def fit(
    cfg: ExperimentConfig,
    run_dir: str | Path,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
) -> Path:
    """Train and return the best checkpoint (selected on the validation metric).

    ``resume`` continues from ``last.ckpt`` of the same run folder; the config must be the same
    but for the epoch budget and display settings.
    """
    run_dir = Path(run_dir)
    keep_freed_memory()
    ckdir = checkpoint_dir(run_dir)
    last = ckdir / "last.ckpt"
    saved = run_dir / CONFIG_FILE
    config_dict = cfg.model_dump(mode="json")
    if resume:
        if not last.is_file():
            raise RunExistsError(f"cannot resume: {last} does not exist")
        old = yaml.safe_load(saved.read_text()) if saved.is_file() else {}
        changed = [k for k in _differences(old, config_dict) if k not in RESUMABLE_CHANGES]
        if changed:
            keys = ", ".join(".".join(k) for k in changed)
            raise RunExistsError(f"cannot resume {run_dir}: the config differs in {keys}")
    elif ckdir.exists() and any(ckdir.iterdir()):
        raise RunExistsError(
            f"{run_dir} already holds a run; pass --resume to continue it or choose another --out"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write(saved, cfg.to_yaml())

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    data = prepare_training_data(cfg)
    module = EmoMatchModule(
        config=config_dict,
        shapes={m: list(s) for m, s in data.shapes.items()},
        classes=data.classes,
        class_weights=data.class_weights() if cfg.loss.class_weights else None,
    )
    module.normalizer.set_stats(data.stats)
    train_loader, val_loader = data.loaders(cfg)
    metric = cfg.train.select_metric
    selector = ModelCheckpoint(
        dirpath=ckdir,
        filename="best",
        monitor=f"val/{metric}",
        mode="max",
        save_top_k=1,
        save_last=True,
        enable_version_counter=False,
        auto_insert_metric_name=False,
    )
    trainer = pl.Trainer(
        max_epochs=cfg.train.max_epochs,
        accelerator=cfg.train.accelerator,
        devices=cfg.train.devices,
        precision=precision_for(cfg),  # type: ignore[arg-type]
        callbacks=[selector, *callbacks],
        logger=CSVLogger(run_dir, name="", version="logs"),
        enable_progress_bar=cfg.train.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=cfg.train.deterministic,
        use_distributed_sampler=False,
        log_every_n_steps=1,
    )
    trainer.fit(module, train_loader, val_loader, ckpt_path=str(last) if resume else None)
    best = ckdir / "best.ckpt"
    if not best.is_file():
        raise EmomatchError(f"training ended without a best checkpoint in {ckdir}")
    return best
