"""Train-then-report: the job behind ``emomatch train``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.callbacks import Callback

from emomatch.config import ExperimentConfig
from emomatch.evaluation import evaluate_checkpoint, write_report
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
