"""The paper's objective: L = L_s + omega * L_u (Eq. 7-9), with the Table 7 switches."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from emomatch.config import LossConfig
from emomatch.model.matching import matching_pairs, matching_terms
from emomatch.model.network import EmotionModel, Inputs


def reversed_target(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The sequence reversed in time within its valid part; padding stays where it was."""
    t = x.shape[1]
    pos = torch.arange(t, device=x.device)[None, :]
    src = (lengths[:, None] - 1 - pos).clamp(min=0)
    src = torch.where(pos < lengths[:, None], src, pos)
    return torch.gather(x, 1, src[:, :, None].expand_as(x))


def reconstruction_loss(rec: torch.Tensor, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """MSE over valid elements only. Vectors are compared to themselves, sequences to their
    time-reversed valid part."""
    if x.dim() == 2:
        # A vector of length 0 is absent (masked missing modality).
        present = (lengths > 0).to(x.dtype)
        err = (rec - x).pow(2).mean(-1) * present
        return err.sum() / present.sum().clamp_min(1.0)
    target = reversed_target(x, lengths)
    valid = (torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]).to(x.dtype)
    err = (rec - target).pow(2).sum(-1) * valid
    return err.sum() / (valid.sum().clamp_min(1.0) * x.shape[2])


@dataclass
class Terms:
    """Unweighted loss terms of one stream (labeled or unlabeled)."""

    rec: torch.Tensor
    pair: torch.Tensor
    unpaired: torch.Tensor
    cls: torch.Tensor | None = None
    logits: torch.Tensor | None = None


def stream_terms(
    model: EmotionModel,
    inputs: Inputs,
    cfg: LossConfig,
    labels: torch.Tensor | None = None,
    class_weights: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Terms:
    """Compute the terms of one batch; switched-off terms are not computed at all (zero)."""
    out = model(inputs, reconstruct=cfg.reconstruction)
    zero = out.logits.new_zeros(())
    rec = zero
    if cfg.reconstruction:
        rec = sum(
            (reconstruction_loss(out.reconstructions[m], *inputs[m]) for m in model.modalities),
            zero,
        )
    pair = unpaired = zero
    if cfg.matching:
        pair, unpaired = matching_terms(
            out.latents,
            matching_pairs(model.modalities, cfg.pairs),
            cfg.measure,
            cfg.bandwidth,
            cfg.sigma,
            cfg.sigma_scales,
            generator,
            present=out.present,
        )
    cls = None
    if labels is not None:
        cls = F.cross_entropy(
            out.logits, labels, weight=class_weights, label_smoothing=cfg.label_smoothing
        )
    return Terms(rec=rec, pair=pair, unpaired=unpaired, cls=cls, logits=out.logits)


def objective(
    labeled: Terms, unlabeled: Terms | None, cfg: LossConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss and its weighted parts (the parts add up to the total).

    L_s = L_cls + alpha * L_rec + beta * (L_pair + L_unpaired)                (Eq. 7)
    L_u = alpha * L_rec_u + beta * (L_pair_u + L_unpaired_u)                  (Eq. 8)
    L   = L_s + omega * L_u                                                   (Eq. 9)
    """
    assert labeled.cls is not None, "the labeled stream needs labels"
    zero = labeled.cls.new_zeros(())
    parts: dict[str, torch.Tensor] = {
        "cls": labeled.cls,
        "rec": cfg.alpha * labeled.rec if cfg.reconstruction else zero,
        "match": cfg.beta * (labeled.pair + labeled.unpaired) if cfg.matching else zero,
        "unlabeled_rec": zero,
        "unlabeled_match": zero,
    }
    if cfg.unlabeled and unlabeled is not None:
        if cfg.reconstruction:
            parts["unlabeled_rec"] = cfg.omega * cfg.alpha * unlabeled.rec
        if cfg.matching:
            parts["unlabeled_match"] = cfg.omega * cfg.beta * (unlabeled.pair + unlabeled.unpaired)
    total = sum(parts.values(), zero)
    return total, parts


def prediction_terms(
    model: EmotionModel,
    inputs: Inputs,
    cfg: LossConfig,
    generator: torch.Generator,
    teacher: EmotionModel | None = None,
) -> dict[str, torch.Tensor]:
    """Weighted ``pseudo`` and ``consistency`` terms of a batch whose labels are not used.

    The teacher (``teacher``, else ``model`` itself in eval mode: no dropout) predicts on the
    clean inputs without a gradient; the model predicts on a perturbed view (``view_noise``,
    ``view_modality_dropout``, and its own dropout). Pseudo-labels: cross-entropy to the
    teacher's class where its probability reaches ``pseudo_threshold``, averaged over the whole
    batch (FixMatch), so a term that finds few confident rows stays small. Consistency: the
    squared distance between the two probability vectors.
    """
    from emomatch.model.views import drop_modalities, noisy

    source = teacher if teacher is not None else model
    was_training = source.training
    source.eval()
    with torch.no_grad():
        probs = source(inputs, reconstruct=False).logits.float().softmax(1)
    source.train(was_training)
    view = noisy(inputs, cfg.view_noise, generator)
    if cfg.view_modality_dropout > 0 and len(view) > 1:
        view = drop_modalities(view, cfg.view_modality_dropout, generator)
    logits = model(view, reconstruct=False).logits.float()
    zero = logits.new_zeros(())
    parts = {"pseudo": zero, "consistency": zero}
    if cfg.pseudo_threshold is not None:
        confidence, target = probs.max(1)
        mask = (confidence >= cfg.pseudo_threshold).to(logits.dtype)
        ce = F.cross_entropy(logits, target, reduction="none")
        parts["pseudo"] = cfg.pseudo_weight * (ce * mask).mean()
    if cfg.consistency_weight > 0:
        gap = (logits.softmax(1) - probs).pow(2).sum(1).mean()
        parts["consistency"] = cfg.consistency_weight * gap
    return parts


def term_values(terms: Terms) -> Mapping[str, torch.Tensor]:
    return {"rec": terms.rec, "pair": terms.pair, "unpaired": terms.unpaired}
