"""Reports: evaluate a trained checkpoint on a split, write metrics.json and the confusion PNG."""

from emomatch.evaluation.predict import (
    evaluate_checkpoint,
    evaluate_checkpoints,
    load_checkpoint,
    predict_split,
)
from emomatch.evaluation.report import plot_confusion, write_report

__all__ = [
    "evaluate_checkpoint",
    "evaluate_checkpoints",
    "load_checkpoint",
    "plot_confusion",
    "predict_split",
    "write_report",
]
