"""The CUDA path: the same function as on CPU, and training under mixed precision.

Skipped where torch sees no CUDA GPU (CI); run on a GPU machine with
``pytest tests/test_cuda.py`` (docs/benchmarks.md "GPU path" gives the card and the result).
On CPU the thin convolutions run as matrix products (emomatch.model.convmm) and on CUDA through
cuDNN, so comparing the two devices checks both paths against each other.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from emomatch.config import LossConfig, ModelConfig
from emomatch.evaluation import evaluate_checkpoint
from emomatch.model import EmotionModel
from emomatch.model.losses import objective, stream_terms
from emomatch.runs import train_and_report
from emomatch.synthetic.features import random_inputs
from tests.support.builders import make_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")

# the paper's sequence layout at a smaller size: the lexical stack keeps its 1- and 4-channel
# layers (matrix products on CPU), the visual one its 1- and 16-channel layers
SHAPES = {"acoustic": (96,), "visual": (18, 32), "lexical": (22, 64)}


@pytest.fixture
def exact_float32() -> Iterator[None]:
    """TF32 off for the comparison: cuDNN convolutions use it by default."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _loss_and_grads(model: EmotionModel, device: str) -> tuple[float, list[torch.Tensor]]:
    model = model.to(device)
    model.zero_grad(set_to_none=True)
    gen = torch.Generator().manual_seed(1)
    inputs = random_inputs(16, SHAPES, gen)
    labels = torch.randint(0, 4, (16,), generator=gen)
    moved = {m: (x.to(device), n.to(device)) for m, (x, n) in inputs.items()}
    cfg = LossConfig()
    # the unpaired terms shuffle with a CPU generator on either device: same partners
    lab = stream_terms(
        model, moved, cfg, labels=labels.to(device), generator=torch.Generator().manual_seed(3)
    )
    total, _ = objective(lab, None, cfg)
    total.backward()
    grads = [p.grad.detach().cpu() for p in model.parameters() if p.grad is not None]
    return float(total), grads


def test_cuda_computes_what_the_cpu_computes(exact_float32: None) -> None:
    """Loss and every gradient of the A+V+L model (auto-encoders, matching, classifier) in
    float32, dropout off: CUDA (cuDNN convolutions, fused attention) against CPU (convolutions
    as matrix products, attention's CPU kernels)."""
    torch.manual_seed(0)
    model = EmotionModel(SHAPES, 4, ModelConfig(dropout=0.0)).eval()
    loss_cpu, grads_cpu = _loss_and_grads(model, "cpu")
    loss_gpu, grads_gpu = _loss_and_grads(model, "cuda")
    assert loss_gpu == pytest.approx(loss_cpu, rel=1e-4)
    assert len(grads_gpu) == len(grads_cpu) > 0
    for a, b in zip(grads_gpu, grads_cpu, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_training_on_the_gpu_learns_and_its_checkpoint_scores_on_cpu(
    tiny_store, tmp_path, precision: str
) -> None:
    cfg = make_config(
        tiny_store,
        train={"max_epochs": 8, "accelerator": "gpu", "precision": precision},
    )
    metrics = train_and_report(cfg, tmp_path / "run")
    assert metrics["ua"] > 0.6  # 4 classes: chance is 0.25
    # the checkpoint is scored again in float32 on CPU: the same predictions up to a few
    # utterances that 16-bit rounding moves across a decision boundary
    on_cpu = evaluate_checkpoint(tmp_path / "run" / "checkpoints" / "best.ckpt")
    assert on_cpu["ua"] == pytest.approx(metrics["ua"], abs=0.05)
