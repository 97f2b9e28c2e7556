"""Datasets: which stored utterances a run uses, normalization statistics, batch streams."""

from emomatch.data.batches import EvalBatches, FeatureBatches, TrainBatches, to_inputs
from emomatch.data.splits import (
    Split,
    check_compatible,
    check_finite,
    check_shapes,
    fit_stats,
    select_split,
)

__all__ = [
    "EvalBatches",
    "FeatureBatches",
    "Split",
    "TrainBatches",
    "check_compatible",
    "check_finite",
    "check_shapes",
    "fit_stats",
    "select_split",
    "to_inputs",
]
