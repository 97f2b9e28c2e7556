"""Activation checkpointing (train.recompute) gives the same step as storing activations."""

import torch

from emomatch.config import LossConfig, ModelConfig
from emomatch.model import EmotionModel
from emomatch.model.losses import objective, stream_terms
from emomatch.synthetic.features import SMALL_SHAPES, random_inputs


def _grads(recompute: bool) -> tuple[float, dict[str, torch.Tensor], int]:
    torch.manual_seed(0)
    cfg = ModelConfig(latent_dim=8, feedforward_dim=32, dropout=0.3, mlp_dropout=0.2)
    model = EmotionModel(dict(SMALL_SHAPES), 4, cfg, recompute=recompute).train()
    gen = torch.Generator().manual_seed(1)
    lab, unl = random_inputs(6, SMALL_SHAPES, gen), random_inputs(6, SMALL_SHAPES, gen)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    loss_cfg = LossConfig()
    shuffles = torch.Generator().manual_seed(2)
    saved = 0

    def count(t: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += t.numel()
        return t

    torch.manual_seed(3)  # dropout
    with torch.autograd.graph.saved_tensors_hooks(count, lambda t: t):
        terms_l = stream_terms(model, lab, loss_cfg, labels=labels, generator=shuffles)
        terms_u = stream_terms(model, unl, loss_cfg, generator=shuffles)
        total, _ = objective(terms_l, terms_u, loss_cfg)
    total.backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    return float(total), grads, saved


def test_recompute_gives_the_same_loss_and_gradients_with_less_saved() -> None:
    loss, grads, saved = _grads(recompute=False)
    loss_r, grads_r, saved_r = _grads(recompute=True)
    assert loss == loss_r
    assert grads.keys() == grads_r.keys()
    for k in grads:
        torch.testing.assert_close(grads_r[k], grads[k], rtol=1e-5, atol=1e-7, msg=k)
    assert saved_r < saved / 3  # what the backward pass holds while the step runs


def test_recompute_is_off_outside_training() -> None:
    model = EmotionModel(dict(SMALL_SHAPES), 4, ModelConfig(latent_dim=8), recompute=True).eval()
    gen = torch.Generator().manual_seed(0)
    out = model(random_inputs(6, SMALL_SHAPES, gen))
    assert out.logits.shape == (6, 4)
