"""Train-then-report: the job behind ``emomatch train``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.callbacks import Callback

from emomatch.config import ExperimentConfig
from emomatch.data import select_split
from emomatch.data.folds import choose_folds
from emomatch.data.splits import training_split
from emomatch.errors import EmomatchError
from emomatch.evaluation import evaluate_checkpoints, write_report
from emomatch.metrics import aggregate
from emomatch.rundir import (
    FOLD_PREFIX,
    SEED_PREFIX,
    RunFolder,
    checkpoint_metadata,
    resume_or_start,
)
from emomatch.store import FeatureStore
from emomatch.training import fit
from emomatch.training.prepare import supervised_without_pool


def train_and_report(
    cfg: ExperimentConfig,
    run_dir: str | Path,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    seeds: int = 1,
) -> dict[str, Any]:
    """Fit with selection on validation, then (and only then) evaluate the selected checkpoint on
    the test split; ``run_dir/metrics.json`` holds the test metrics at its top level.

    ``seeds > 1`` trains that many runs (seeds ``cfg.seed``, ``cfg.seed + 1`` ...) in
    ``run_dir/seed_S`` and scores the mean of their predicted probabilities (an ensemble); the
    per-seed metrics, their mean and spread are kept beside it."""
    cfg = supervised_without_pool(cfg)
    if seeds > 1:
        return train_seeds(cfg, run_dir, seeds, resume=resume, callbacks=callbacks)
    run_dir = Path(run_dir)
    selected = fit(cfg, run_dir, resume=resume, callbacks=callbacks)
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
        return {}
    validation, test = evaluate_checkpoints(
        [selected], [cfg.data.validation_split, cfg.data.test_split]
    )
    saved = checkpoint_metadata(selected)
    metrics = {
        **test,
        "validation": validation,
        "selected_on": f"validation {cfg.train.select_metric}",
        "best_epoch": saved.get("epoch"),
        "averaged_epochs": saved.get("averaged_epochs"),
        "seed": cfg.seed,
        "modalities": list(cfg.data.modalities),
        "semi_supervised": cfg.loss.unlabeled,
        "checkpoint": str(selected.relative_to(run_dir)),
    }
    write_report(run_dir, metrics)
    return metrics


def resume_or_train(
    cfg: ExperimentConfig,
    run_dir: str | Path,
    resume: bool = True,
    callbacks: Sequence[Callback] = (),
    seeds: int = 1,
) -> dict[str, Any]:
    """With ``resume``, a finished run is read back, an interrupted one continues and any other
    starts; without it the run starts (and refuses a folder that holds one)."""
    run = RunFolder(run_dir)

    def train(interrupted: bool) -> dict[str, Any]:
        # an ensemble's seeds each resume on their own inside it
        again = resume and (interrupted or seeds > 1)
        return train_and_report(cfg, run.path, resume=again, callbacks=callbacks, seeds=seeds)

    return resume_or_start(run, train, reuse_finished=resume)


def resume_run(run_dir: str | Path, threads: int | None = None) -> dict[str, Any]:
    """``emomatch resume RUN``: continue a run (or a ``--seeds`` ensemble) from the config it
    saved, overrides included; a finished run is read back. ``threads`` replaces the saved
    ``train.threads`` (a setting of the machine, not of the run)."""
    from emomatch.config import config_from_dict

    run = RunFolder(run_dir)
    if run.is_fold_set():
        raise EmomatchError(
            f"{run.path} holds one run per fold: continue it with the command that started it "
            "and --resume (emomatch train CONFIG --folds all --out RUN --resume)"
        )
    members = run.seeds() if not run.config_path.is_file() else []
    source = members[0] if members else run
    if not source.config_path.is_file():
        raise EmomatchError(
            f"{run.path} holds no run to continue: {source.config_path} does not exist "
            "(a run saves its config when training starts)"
        )
    saved = source.read_config()
    cfg = config_from_dict(saved, str(source.config_path))
    if threads is not None:
        cfg.train.threads = threads
    if members:
        cfg.seed = min(int(m.path.name.removeprefix(SEED_PREFIX)) for m in members)
    return resume_or_train(cfg, run.path, resume=True, seeds=max(1, len(members)))


def train_seeds(
    cfg: ExperimentConfig,
    out: str | Path,
    seeds: int,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
) -> dict[str, Any]:
    """``seeds`` runs that differ only in their seed, and their ensemble (see
    :func:`train_and_report`)."""
    out = Path(out)
    per_seed: dict[str, dict[str, Any]] = {}
    for i in range(seeds):
        seed_cfg = cfg.model_copy(deep=True)
        seed_cfg.seed = cfg.seed + i
        run = out / f"{SEED_PREFIX}{seed_cfg.seed}"
        per_seed[str(seed_cfg.seed)] = resume_or_train(seed_cfg, run, resume, callbacks)
    checkpoints = [out / f"{SEED_PREFIX}{s}" / m["checkpoint"] for s, m in per_seed.items()]
    validation, test = evaluate_checkpoints(
        checkpoints, [cfg.data.validation_split, cfg.data.test_split]
    )
    spread = aggregate(list(per_seed.values()))
    metrics = {
        **test,
        "validation": validation,
        "selected_on": f"validation {cfg.train.select_metric}, per seed",
        "ensemble_of_seeds": sorted(int(s) for s in per_seed),
        "per_seed": {k: v for k, v in spread.items() if k != "confusion"},
        "seeds": per_seed,
        "modalities": list(cfg.data.modalities),
        "semi_supervised": cfg.loss.unlabeled,
    }
    write_report(out, metrics)
    return metrics


def train_folds(
    cfg: ExperimentConfig,
    out: str | Path,
    folds: Sequence[int] | None = None,
    resume: bool = False,
    seeds: int = 1,
    callbacks: Sequence[Callback] = (),
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
        training_split(store, cfg.data, field)
        select_split(store, field, cfg.data.validation_split, mods, True, cfg.data.missing)
    per_fold: dict[str, dict[str, Any]] = {}
    for k in chosen:
        fold_cfg = cfg.model_copy(deep=True)
        fold_cfg.data.split_field = f"fold_{k}"
        run = out / f"{FOLD_PREFIX}{k}"
        per_fold[str(k)] = resume_or_train(fold_cfg, run, resume, callbacks, seeds)
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
