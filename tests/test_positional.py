"""Position codes and block layout of the sequence auto-encoders' Transformers."""

import math

import pytest
import torch

from emomatch.config import ModelConfig, config_from_dict
from emomatch.errors import ConfigError
from emomatch.model import EmotionModel, SequenceDAE
from emomatch.model.autoencoders import LEXICAL_CONVS, sinusoidal_table

T, D = 9, 12


def dae(positional: str, norm_first: bool = True) -> SequenceDAE:
    torch.manual_seed(0)
    return SequenceDAE(
        max_len=T,
        dim=D,
        convs=LEXICAL_CONVS,
        hidden=[16],
        latent=8,
        heads=4,
        layers=2,
        feedforward=16,
        dropout=0.1,
        norm_first=norm_first,
        positional=positional,  # type: ignore[arg-type]
    ).eval()


def test_sinusoidal_table_follows_vaswani() -> None:
    table = sinusoidal_table(50, 6)
    t = torch.arange(50, dtype=torch.float64)
    for i in range(3):
        rate = 10000.0 ** (-2 * i / 6)
        torch.testing.assert_close(table[:, 2 * i].double(), torch.sin(t * rate), atol=1e-5, rtol=0)
        torch.testing.assert_close(
            table[:, 2 * i + 1].double(), torch.cos(t * rate), atol=1e-5, rtol=0
        )
    # An odd width keeps the sine of the last frequency.
    odd = sinusoidal_table(4, 5)
    assert odd.shape == (4, 5)
    assert float(odd[3, 4]) == pytest.approx(math.sin(3 * 10000.0 ** (-4 / 5)), abs=1e-6)


@pytest.mark.parametrize("norm_first", [True, False], ids=["pre-norm", "post-norm"])
def test_without_a_position_code_attention_is_blind_to_order(norm_first: bool) -> None:
    x = torch.randn(3, T, D, generator=torch.Generator().manual_seed(1))
    perm = torch.randperm(T, generator=torch.Generator().manual_seed(2))
    model = dae("none", norm_first)
    full = torch.zeros(3, T, dtype=torch.bool)  # a padding mask with nothing padded
    with torch.no_grad():
        for pad in (None, full):
            torch.testing.assert_close(
                model.contextualize(x[:, perm], pad),
                model.contextualize(x, pad)[:, perm],
                atol=1e-5,
                rtol=0,
            )


@pytest.mark.parametrize("positional", ["sinusoidal", "learned"])
def test_a_position_code_breaks_permutation_equivariance(positional: str) -> None:
    x = torch.randn(3, T, D, generator=torch.Generator().manual_seed(1))
    perm = torch.randperm(T, generator=torch.Generator().manual_seed(2))
    model = dae(positional)
    full = torch.zeros(3, T, dtype=torch.bool)
    with torch.no_grad():
        for pad in (None, full):
            moved = model.contextualize(x[:, perm], pad) - model.contextualize(x, pad)[:, perm]
            # Far above float rounding (the `none` case above agrees to 1e-5).
            assert float(moved.abs().max()) > 1e-3


def test_a_checkpoint_without_the_code_does_not_load_silently() -> None:
    sinus = dae("sinusoidal")
    assert {"encoder_positions.table", "decoder_positions.table"} <= set(sinus.state_dict())
    with pytest.raises(RuntimeError, match="encoder_positions.table"):
        sinus.load_state_dict(dae("none").state_dict())
    sinus.load_state_dict(dae("sinusoidal").state_dict())


def test_learned_code_trains() -> None:
    learned = dae("learned").train()
    x = torch.randn(4, T, D)
    lengths = torch.tensor([T, 5, 3, 1])
    rec = learned.decode(learned.encode(x, lengths), lengths)
    rec.pow(2).mean().backward()
    for part in (learned.encoder_positions, learned.decoder_positions):
        assert isinstance(part.table, torch.nn.Parameter) and part.table.grad is not None
        assert float(part.table.grad.abs().sum()) > 0


def test_decoder_transformer_sees_its_own_position_code() -> None:
    model = dae("learned")
    z = torch.randn(2, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        before = model.decode(z)
        assert model.decoder_positions.table is not None
        model.decoder_positions.table.add_(torch.randn(T, D))
        assert not torch.allclose(model.decode(z), before, atol=1e-4)


def test_padding_still_cannot_reach_the_latent_with_a_position_code() -> None:
    model = dae("sinusoidal")
    lengths = torch.tensor([4, 9])
    x = torch.randn(2, T, D)
    x[0, 4:] = 0.0
    noisy = x.clone()
    noisy[0, 4:] = 1e3 * torch.randn(T - 4, D)
    with torch.no_grad():
        torch.testing.assert_close(model.encode(x, lengths), model.encode(noisy, lengths))


def test_pre_norm_is_the_default_and_ends_in_a_final_layer_norm() -> None:
    cfg = ModelConfig()
    assert cfg.norm_first and cfg.positional == "sinusoidal"
    pre, post = dae("sinusoidal", True), dae("sinusoidal", False)
    for stack in (pre.encoder_transformer, pre.decoder_transformer):
        assert isinstance(stack.norm, torch.nn.LayerNorm)
        assert all(layer.norm_first for layer in stack.layers)
    for stack in (post.encoder_transformer, post.decoder_transformer):
        assert stack.norm is None
        assert not any(layer.norm_first for layer in stack.layers)
    # The final norm really sits on the output: its bias moves every output position.
    with torch.no_grad():
        x = torch.randn(2, T, D)
        before = pre.contextualize(x)
        assert pre.encoder_transformer.norm is not None
        pre.encoder_transformer.norm.bias.add_(1.0)
        torch.testing.assert_close(pre.contextualize(x), before + 1.0)
    # The output projection stays after the decoder stack in both layouts.
    assert isinstance(pre.output, torch.nn.Linear) and isinstance(post.output, torch.nn.Linear)


def test_model_config_reaches_every_sequence_dae() -> None:
    shapes = {"visual": (7, 10), "lexical": (9, 12)}
    model = EmotionModel(shapes, 3, ModelConfig(feedforward_dim=16, positional="learned"))
    for m in shapes:
        assert model.daes[m].encoder_positions.kind == "learned"
    plain = EmotionModel(shapes, 3, ModelConfig(feedforward_dim=16, positional="none"))
    assert plain.daes["lexical"].encoder_positions.table is None


def test_unknown_positional_kind_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="model.positional"):
        config_from_dict({"data": {"store": "s"}, "model": {"positional": "rotary"}})
