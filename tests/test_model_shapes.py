import pytest
import torch

from emomatch.config import ModelConfig
from emomatch.errors import ConfigError
from emomatch.model import EmotionModel, heads_for
from emomatch.synthetic import PAPER_SHAPES


def test_paper_intermediate_sizes_at_paper_shapes() -> None:
    model = EmotionModel(PAPER_SHAPES, 4, ModelConfig())
    visual, lexical = model.daes["visual"], model.daes["lexical"]
    assert visual.flat_dim == 1856 and visual.grid == (32, 2, 29)
    assert lexical.flat_dim == 2736 and lexical.grid == (4, 4, 171)
    # Table 3 linear layers
    acoustic_sizes = [
        (m.in_features, m.out_features)
        for m in model.daes["acoustic"].encoder
        if isinstance(m, torch.nn.Linear)
    ]
    assert acoustic_sizes == [(1582, 512), (512, 256), (256, 128)]
    lexical_sizes = [
        (m.in_features, m.out_features)
        for m in lexical.encoder_head
        if isinstance(m, torch.nn.Linear)
    ]
    assert lexical_sizes == [(2736, 512), (512, 128)]
    visual_sizes = [
        (m.in_features, m.out_features)
        for m in visual.encoder_head
        if isinstance(m, torch.nn.Linear)
    ]
    assert visual_sizes == [(1856, 128)]
    assert visual.heads == 3 and lexical.heads == 4
    assert model.classifier[0].in_features == 3 * 128


def test_paper_decoders_land_on_input_shape_without_cropping() -> None:
    model = EmotionModel(PAPER_SHAPES, 4, ModelConfig())
    for m in ("visual", "lexical"):
        dae = model.daes[m]
        z = torch.zeros(2, *dae.grid)
        assert tuple(dae.up(z).shape[2:]) == PAPER_SHAPES[m]


def test_heads_rule() -> None:
    assert heads_for(342, 4) == 3
    assert heads_for(1024, 4) == 4
    assert heads_for(384, 4) == 4
    assert heads_for(7, 4) == 1


@pytest.mark.parametrize(
    "mods",
    [
        ["acoustic"],
        ["visual"],
        ["lexical"],
        ["acoustic", "visual"],
        ["acoustic", "lexical"],
        ["visual", "lexical"],
        ["acoustic", "visual", "lexical"],
    ],
)
def test_every_modality_subset_runs(mods: list[str]) -> None:
    shapes = {"acoustic": (20,), "visual": (7, 10), "lexical": (9, 12)}
    cfg = ModelConfig(latent_dim=8, feedforward_dim=16, acoustic_hidden=[16], lexical_hidden=[16])
    model = EmotionModel({m: shapes[m] for m in mods}, 5, cfg)
    inputs = {
        m: (
            torch.randn(3, *shapes[m]),
            torch.tensor([1, 2, 3]) if m != "acoustic" else torch.ones(3),
        )
        for m in mods
    }
    out = model(inputs)
    assert out.logits.shape == (3, 5)
    for m in mods:
        assert out.latents[m].shape == (3, 8)
        assert out.reconstructions[m].shape == (3, *shapes[m])


def test_too_small_sequence_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="too small"):
        EmotionModel({"visual": (3, 10)}, 4, ModelConfig(feedforward_dim=8))


def test_keep_freed_memory_reports_whether_it_applied() -> None:
    import sys

    from emomatch.runtime import keep_freed_memory

    applied = keep_freed_memory()
    assert isinstance(applied, bool)
    if sys.platform.startswith("linux") and "glibc" in " ".join(__import__("platform").libc_ver()):
        assert applied


def test_autoencoder_follows_the_shape_not_the_name() -> None:
    from emomatch.model import SequenceDAE, VectorDAE

    cfg = ModelConfig(latent_dim=16, visual_hidden=[8], acoustic_hidden=[32], feedforward_dim=32)
    # face action units as a vector, acoustic frames as a sequence
    model = EmotionModel({"visual": (35,), "acoustic": (40, 24)}, 3, cfg)
    assert isinstance(model.dae("visual"), VectorDAE)
    assert isinstance(model.dae("acoustic"), SequenceDAE)
    sizes = [
        (m.in_features, m.out_features)
        for m in model.dae("visual").encoder
        if hasattr(m, "in_features")
    ]
    assert sizes == [(35, 8), (8, 16)]
    inputs = {
        "visual": (torch.randn(4, 35), torch.ones(4, dtype=torch.long)),
        "acoustic": (torch.randn(4, 40, 24), torch.tensor([40, 12, 3, 1])),
    }
    out = model(inputs)
    assert out.logits.shape == (4, 3)
    assert out.reconstructions["visual"].shape == (4, 35)
    assert out.reconstructions["acoustic"].shape == (4, 40, 24)
    with pytest.raises(ConfigError, match="vectors"):
        EmotionModel({"visual": (2, 3, 4)}, 3, cfg)
