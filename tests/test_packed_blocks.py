"""Transformer blocks run on the valid positions only: the same function as the stock stack."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from emomatch.model.autoencoders import _transformer, padding_mask, run_blocks


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(5, 7, 16, generator=g)
    lengths = torch.tensor([7, 3, 1, 5, 2])
    return x, padding_mask(lengths, 7)


@pytest.mark.parametrize("norm_first", [True, False])
def test_packed_blocks_equal_the_stock_stack_on_valid_positions(norm_first: bool) -> None:
    torch.manual_seed(0)
    stack = _transformer(16, 4, 2, 32, 0.1, norm_first).eval()
    x, pad = _batch()
    with torch.no_grad():
        packed = run_blocks(stack, x, pad)
        stock = stack(x, src_key_padding_mask=pad)
    valid = ~pad
    torch.testing.assert_close(packed[valid], stock[valid], atol=1e-5, rtol=1e-5)
    # Padding comes out as zeros, not as whatever the stock stack left there.
    assert torch.all(packed[pad] == 0)
    # The padded positions' contents never reach a valid position.
    noisy = x.masked_fill(pad[:, :, None], 1e3)
    with torch.no_grad():
        torch.testing.assert_close(run_blocks(stack, noisy, pad)[valid], packed[valid])


@pytest.mark.parametrize("norm_first", [True, False])
def test_packed_blocks_give_the_stock_gradients(norm_first: bool) -> None:
    torch.manual_seed(1)
    # Dropout 0 in train mode: the two paths must agree exactly, gradients included.
    stack = _transformer(16, 2, 2, 32, 0.0, norm_first).train()
    x, pad = _batch(1)
    valid = ~pad
    grads = []
    for run in (lambda: run_blocks(stack, x, pad), lambda: stack(x, src_key_padding_mask=pad)):
        stack.zero_grad()
        out = run()
        (out[valid] ** 2).sum().backward()
        grads.append({n: p.grad.clone() for n, p in stack.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-4, rtol=1e-4)


def test_dropout_is_active_in_training_and_a_row_without_valid_positions_stays_finite() -> None:
    torch.manual_seed(2)
    stack = _transformer(16, 4, 1, 32, 0.5, True)
    x, pad = _batch(2)
    pad[2] = True  # no valid position at all
    stack.train()
    a, b = run_blocks(stack, x, pad), run_blocks(stack, x, pad)
    assert not torch.equal(a, b)
    a.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in stack.parameters() if p.grad is not None)
    stack.eval()
    with torch.no_grad():
        assert torch.equal(run_blocks(stack, x, pad), run_blocks(stack, x, pad))


def test_a_stack_without_final_norm_and_with_gelu_is_followed() -> None:
    torch.manual_seed(3)
    layer = nn.TransformerEncoderLayer(16, 2, 24, 0.0, activation="gelu", batch_first=True)
    stack = nn.TransformerEncoder(layer, 3, enable_nested_tensor=False).eval()
    x, pad = _batch(3)
    with torch.no_grad():
        torch.testing.assert_close(
            run_blocks(stack, x, pad)[~pad],
            stack(x, src_key_padding_mask=pad)[~pad],
            atol=1e-5,
            rtol=1e-5,
        )


class _Float32Norm(nn.LayerNorm):
    """What CUDA autocast makes of LayerNorm: float32 output whatever the input's dtype."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return super().forward(h.float())


def test_a_final_norm_in_float32_under_autocast_keeps_its_dtype() -> None:
    """Under CUDA's 16-bit autocast the blocks take 16-bit input and the final LayerNorm gives
    float32: the result is scattered into a float32 buffer, not refused (a bug found on an
    H100, where every bf16-mixed and 16-mixed training step failed)."""
    torch.manual_seed(2)
    stack = _transformer(16, 4, 1, 32, 0.0, True).eval()
    stack.norm = _Float32Norm(16)
    x, pad = _batch()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = run_blocks(stack, x.bfloat16(), pad)
    assert out.dtype == torch.float32
    assert torch.all(out[pad] == 0) and torch.all(out[~pad].abs().sum(-1) > 0)
