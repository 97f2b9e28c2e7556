"""Class probabilities of an ensemble: the seeds of a run, the members of a bundle.

Every place that turns a model's output into probabilities goes through here (evaluation of a
run, a bundle's predictor), so an ensemble is scored where it is trained exactly as where it is
applied: each member normalises the raw features with its own training statistics, runs its
encoders and classifier (never the decoders), and the members' softmax probabilities, in
float32 whatever precision the members run in, are averaged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from emomatch.model.network import EmotionModel
from emomatch.model.normalize import Normalizer

#: per modality, (features as stored, valid lengths)
RawInputs = Mapping[str, tuple[torch.Tensor, torch.Tensor]]


def member_logits(model: EmotionModel, normalizer: Normalizer, inputs: RawInputs) -> torch.Tensor:
    """One member's class logits for raw (not yet normalised) features."""
    normalized = {m: (normalizer(m, x, n), n) for m, (x, n) in inputs.items()}
    return model(normalized, reconstruct=False).logits


def mean_probabilities(
    members: Sequence[tuple[EmotionModel, Normalizer]], inputs: RawInputs
) -> torch.Tensor:
    """The mean over ``members`` of their softmax class probabilities (n x classes)."""
    if not members:
        raise ValueError("an ensemble needs at least one member")
    total = None
    for model, normalizer in members:
        probs = torch.softmax(member_logits(model, normalizer, inputs).float(), dim=1)
        total = probs if total is None else total + probs
    assert total is not None
    return total / len(members)
