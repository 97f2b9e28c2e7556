"""Train-then-report: the job behind ``emomatch train``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.callbacks import Callback

from emomatch.config import ExperimentConfig
from emomatch.data import select_split
from emomatch.data.folds import choose_folds
from emomatch.data.splits import require_all_classes
from emomatch.evaluation import evaluate_checkpoint, write_report
from emomatch.metrics import aggregate
from emomatch.store import FeatureStore
from emomatch.training import fit


def train_and_report(
    cfg: ExperimentConfig,
    run_dir: str | Path,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
) -> dict[str, Any]:
    """Fit with selection on validation, then (and only then) evaluate the selected checkpoint on
    the test split; ``run_dir/metrics.json`` holds the test metrics at its top level."""
    run_dir = Path(run_dir)
    best = fit(cfg, run_dir, resume=resume, callbacks=callbacks)
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
        return {}
    validation = evaluate_checkpoint(best, split=cfg.data.validation_split)
    test = evaluate_checkpoint(best, split=cfg.data.test_split)
    saved = torch.load(best, map_location="cpu", weights_only=False)
    metrics = {
        **test,
        "validation": validation,
        "selected_on": f"validation {cfg.train.select_metric}",
        "best_epoch": saved.get("epoch"),
        "seed": cfg.seed,
        "modalities": list(cfg.data.modalities),
        "semi_supervised": cfg.loss.unlabeled,
        "checkpoint": str(best.relative_to(run_dir)),
    }
    write_report(run_dir, metrics)
    return metrics


def train_folds(
    cfg: ExperimentConfig,
    out: str | Path,
    folds: Sequence[int] | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Train one run per fold (``data.split_field = fold_k``) in ``out/fold_k`` and write the
    mean and std over folds to ``out/metrics.json``; ``folds=None`` means every fold.

    With ``resume``, finished folds are kept, an interrupted fold continues from its last
    checkpoint and the others start."""
    out = Path(out)
    store = FeatureStore(cfg.data.store)
    chosen = choose_folds(store, folds)
    # Every fold's splits are checked before the first one trains: a class absent from fold 4's
    # training split should not surface after three folds of work.
    mods = list(cfg.data.modalities)
    for k in chosen:
        field = f"fold_{k}"
        train = select_split(store, field, cfg.data.train_split, mods, True, cfg.data.missing)
        require_all_classes(train)
        select_split(store, field, cfg.data.validation_split, mods, True, cfg.data.missing)
    per_fold: dict[str, dict[str, Any]] = {}
    for k in chosen:
        fold_cfg = cfg.model_copy(deep=True)
        fold_cfg.data.split_field = f"fold_{k}"
        run_dir = out / f"fold_{k}"
        done = run_dir / "metrics.json"
        if resume and done.is_file():
            per_fold[str(k)] = json.loads(done.read_text())
            continue
        started = (run_dir / "checkpoints" / "last.ckpt").is_file()
        per_fold[str(k)] = train_and_report(fold_cfg, run_dir, resume=resume and started)
    runs = list(per_fold.values())
    summary = {
        **aggregate(runs),
        "split": "test",
        "folds": per_fold,
        "classes": runs[0]["classes"],
        "modalities": list(cfg.data.modalities),
        "semi_supervised": cfg.loss.unlabeled,
    }
    write_report(out, summary)
    return summary
