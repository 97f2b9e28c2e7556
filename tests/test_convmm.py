"""The sequence auto-encoders' convolutions as matrix products (model/convmm.py) compute the
stock layers' function and gradients, chunked or not, and keep the stock parameters."""

import pytest
import torch
from torch import nn

from emomatch.model import convmm
from emomatch.model.autoencoders import LEXICAL_CONVS, VISUAL_CONVS, SequenceDAE


def _stacks(convs: tuple[tuple[int, int, int, int], ...]) -> tuple[nn.Sequential, nn.Sequential]:
    dae = SequenceDAE(22, 64, convs, [16], 8, heads=4, layers=1, feedforward=16, dropout=0.0)
    return dae.down.double(), dae.up.double()


@pytest.mark.parametrize("convs", [LEXICAL_CONVS, VISUAL_CONVS], ids=["lexical", "visual"])
@pytest.mark.parametrize("chunk_bytes", [convmm.CHUNK_BYTES, 4096], ids=["one", "chunked"])
@pytest.mark.parametrize("matmul", [None, True], ids=["default", "all-matmul"])
def test_stacks_match_the_stock_layers(
    convs: tuple[tuple[int, int, int, int], ...], chunk_bytes: int, matmul: bool | None, monkeypatch
) -> None:
    monkeypatch.setattr(convmm, "CHUNK_BYTES", chunk_bytes)
    torch.manual_seed(0)
    down, up = _stacks(convs)
    for stack, shape in ((down, (5, 1, 22, 64)), (up, None)):
        if shape is None:  # the decoder's input: the encoder's grid
            shape = (5, *down(torch.zeros(1, 1, 22, 64, dtype=torch.float64)).shape[1:])
        x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        params = list(stack.parameters())
        ref = stack(x)
        g = torch.randn_like(ref)
        expected = torch.autograd.grad(ref, [x, *params], g)
        out = convmm.conv_stack(stack, x.permute(0, 2, 3, 1), matmul).permute(0, 3, 1, 2)
        got = torch.autograd.grad(out, [x, *params], g)
        torch.testing.assert_close(out, ref)
        for a, b in zip(got, expected, strict=True):
            torch.testing.assert_close(a, b)


def test_bf16_autocast_runs_the_products_in_bf16() -> None:
    torch.manual_seed(0)
    down, _ = _stacks(LEXICAL_CONVS)
    down = down.float()
    x = torch.randn(3, 1, 22, 64, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = down(x)
        out = convmm.conv_stack(down, x.permute(0, 2, 3, 1), True).permute(0, 3, 1, 2)
    assert out.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref.float(), rtol=0.05, atol=0.05)
    out.float().sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.float32
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in down.parameters())


def test_bf16_gradients_where_padding_hides_taps_are_right() -> None:
    """The visual auto-encoder on a 1 x 1 grid: its decoder's 32 -> 64 transposed convolution
    (kernel 3, stride 3, padding 1) reaches the output with the centre tap alone. oneDNN's bf16
    weight gradient left the hidden taps uninitialised (NaN, so bf16-mixed training on CPU
    never left chance); under autocast the layer runs as matrix products: hidden taps get 0."""
    torch.manual_seed(0)
    dae = SequenceDAE(6, 12, VISUAL_CONVS, [], 16, heads=4, layers=1, feedforward=32, dropout=0.0)
    x = torch.randn(16, 6, 12)
    lengths = torch.randint(1, 7, (16,))
    for _ in range(3):  # uninitialised memory: NaN in some of the repeats
        dae.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            z = dae.encode(x, lengths)
            out = dae.decode(z, lengths)
        (out.float().square().sum() + z.float().sum()).backward()
        for name, p in dae.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
        up = dae.up[0]
        assert isinstance(up, nn.ConvTranspose2d) and up.in_channels == 32
        assert up.weight.grad is not None
        hidden = torch.ones(3, 3, dtype=torch.bool)
        hidden[1, 1] = False
        assert torch.all(up.weight.grad[:, :, hidden] == 0)
        assert torch.any(up.weight.grad[:, :, 1, 1] != 0)


def test_the_parameters_are_the_stock_layers() -> None:
    dae = SequenceDAE(22, 1024, LEXICAL_CONVS, [128], 16, 4, 1, 32, 0.0)
    assert isinstance(dae.down[0], nn.Conv2d) and isinstance(dae.up[0], nn.ConvTranspose2d)
    keys = [k for k in dae.state_dict() if k.startswith(("down.", "up."))]
    assert keys == [
        "down.0.weight", "down.0.bias", "down.2.weight", "down.2.bias",
        "up.0.weight", "up.0.bias", "up.2.weight", "up.2.bias",
    ]  # fmt: skip


def _stock_stack(stack: nn.Sequential, x: torch.Tensor, matmul: bool | None = None) -> torch.Tensor:
    """What SequenceDAE ran before convmm: the stock layers on the NCHW view."""
    return stack(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


@pytest.mark.parametrize("convs", [LEXICAL_CONVS, VISUAL_CONVS], ids=["lexical", "visual"])
def test_the_auto_encoder_computes_what_the_stock_layers_did(
    convs: tuple[tuple[int, int, int, int], ...], monkeypatch
) -> None:
    """Encoder and decoder outputs and gradients as with the stock layers: a checkpoint trained
    before convmm scores the same."""
    from emomatch.model import autoencoders

    torch.manual_seed(0)
    dae = SequenceDAE(22, 64, convs, [16], 8, heads=4, layers=1, feedforward=16, dropout=0.0)
    dae = dae.double()
    x = torch.randn(4, 22, 64, dtype=torch.float64)
    lengths = torch.tensor([22, 5, 1, 13])
    results = []
    for stack in (autoencoders.conv_stack, _stock_stack):
        monkeypatch.setattr(autoencoders, "conv_stack", stack)
        dae.zero_grad()
        z = dae.encode(x, lengths)
        out = dae.decode(z, lengths)
        (out.square().sum() + z.sum()).backward()
        grads = [p.grad.clone() for p in dae.parameters() if p.grad is not None]
        results.append((z.detach(), out.detach(), grads))
    (z1, o1, g1), (z2, o2, g2) = results
    torch.testing.assert_close(z1, z2)
    torch.testing.assert_close(o1, o2)
    assert len(g1) == len(g2)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b)
