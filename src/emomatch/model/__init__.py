"""The network: per-modality denoising auto-encoders, matching measures and the classifier."""

from emomatch.model.autoencoders import (
    LEXICAL_CONVS,
    VISUAL_CONVS,
    AcousticDAE,
    SequenceDAE,
    VectorDAE,
    heads_for,
)
from emomatch.model.network import EmotionModel, ModelOutput
from emomatch.model.normalize import Normalizer

__all__ = [
    "LEXICAL_CONVS",
    "VISUAL_CONVS",
    "AcousticDAE",
    "EmotionModel",
    "ModelOutput",
    "Normalizer",
    "SequenceDAE",
    "VectorDAE",
    "heads_for",
]
