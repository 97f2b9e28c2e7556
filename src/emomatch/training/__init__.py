"""The trainer: the paper's semi-supervised optimisation with selection on validation."""

from emomatch.training.fit import RunExistsError, fit, selected_checkpoint
from emomatch.training.module import EmoMatchModule
from emomatch.training.prepare import TrainingData, prepare_training_data

__all__ = [
    "EmoMatchModule",
    "RunExistsError",
    "TrainingData",
    "fit",
    "prepare_training_data",
    "selected_checkpoint",
]
