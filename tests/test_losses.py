import pytest
import torch

from emomatch.config import LossConfig, ModelConfig
from emomatch.model import EmotionModel
from emomatch.model.losses import Terms, objective, reversed_target, stream_terms

SHAPES = {"acoustic": (20,), "visual": (7, 10), "lexical": (9, 12)}


def make_model() -> EmotionModel:
    torch.manual_seed(0)
    cfg = ModelConfig(latent_dim=8, feedforward_dim=16, acoustic_hidden=[16], lexical_hidden=[16])
    return EmotionModel(SHAPES, 4, cfg).eval()


def make_inputs(n: int = 16, seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    inputs = {"acoustic": (torch.randn(n, 20, generator=g), torch.ones(n, dtype=torch.long))}
    for m in ("visual", "lexical"):
        t, d = SHAPES[m]
        lengths = torch.randint(1, t + 1, (n,), generator=g)
        x = torch.randn(n, t, d, generator=g)
        x[torch.arange(t)[None, :] >= lengths[:, None]] = 0.0
        inputs[m] = (x, lengths)
    return inputs


def terms_of(model, inputs, cfg, labels=None, seed=5) -> Terms:
    return stream_terms(
        model, inputs, cfg, labels=labels, generator=torch.Generator().manual_seed(seed)
    )


def test_reversed_target_reverses_valid_part_only() -> None:
    x = torch.arange(5.0)[None, :, None].repeat(2, 1, 1)
    x[1, 3:] = 0
    out = reversed_target(x, torch.tensor([5, 3]))
    assert out[0, :, 0].tolist() == [4, 3, 2, 1, 0]
    assert out[1, :, 0].tolist() == [2, 1, 0, 0, 0]


def test_padding_never_changes_a_loss() -> None:
    model = make_model()
    inputs = make_inputs()
    labels = torch.arange(16) % 4
    for measure in ("pairwise", "batch"):
        cfg = LossConfig(measure=measure)
        clean = terms_of(model, inputs, cfg, labels)
        noisy = {m: (x.clone(), n) for m, (x, n) in inputs.items()}
        for m in ("visual", "lexical"):
            x, n = noisy[m]
            pad = torch.arange(x.shape[1])[None, :] >= n[:, None]
            x[pad] = 1e3 * torch.randn(int(pad.sum()), x.shape[2])
        dirty = terms_of(model, noisy, cfg, labels)
        for name in ("rec", "pair", "unpaired", "cls"):
            assert torch.allclose(getattr(clean, name), getattr(dirty, name), atol=1e-5), name


def test_padding_is_visible_to_the_test_above() -> None:
    # Guard: the same perturbation on *valid* positions must change the losses.
    model = make_model()
    inputs = make_inputs()
    cfg = LossConfig()
    clean = terms_of(model, inputs, cfg)
    x, n = inputs["visual"]
    changed = dict(
        inputs, visual=(x + 1.0 * (torch.arange(7)[None, :, None] < n[:, None, None]), n)
    )
    assert not torch.allclose(clean.rec, terms_of(model, changed, cfg).rec)


def _parts(cfg: LossConfig):
    model = make_model()
    labels = torch.arange(16) % 4
    lab = terms_of(model, make_inputs(seed=0), cfg, labels)
    unl = terms_of(model, make_inputs(seed=1), cfg)
    total, parts = objective(lab, unl, cfg)
    assert float(total) == pytest.approx(float(sum(parts.values())), rel=1e-6)
    return {k: float(v) for k, v in parts.items()}


WEIGHT_TERMS = {
    "alpha": {"rec", "unlabeled_rec"},
    "beta": {"match", "unlabeled_match"},
    "omega": {"unlabeled_rec", "unlabeled_match"},
}


@pytest.mark.parametrize("weight", ["alpha", "beta", "omega"])
def test_each_weight_changes_exactly_its_terms(weight: str) -> None:
    base = _parts(LossConfig())
    changed = _parts(LossConfig(**{weight: getattr(LossConfig(), weight) * 3}))
    for key in base:
        if key in WEIGHT_TERMS[weight]:
            assert changed[key] == pytest.approx(3 * base[key], rel=1e-5), key
            assert abs(base[key]) > 1e-6, key
        else:
            assert changed[key] == pytest.approx(base[key], rel=1e-6), key


SWITCH_TERMS = {
    "reconstruction": {"rec", "unlabeled_rec"},
    "matching": {"match", "unlabeled_match"},
    "unlabeled": {"unlabeled_rec", "unlabeled_match"},
}


@pytest.mark.parametrize("switch", ["reconstruction", "matching", "unlabeled"])
def test_each_ablation_switch_removes_exactly_its_terms(switch: str) -> None:
    base = _parts(LossConfig())
    off = _parts(LossConfig(**{switch: False}))
    for key in base:
        if key in SWITCH_TERMS[switch]:
            assert off[key] == 0.0 and base[key] != 0.0, key
        else:
            assert off[key] == pytest.approx(base[key], rel=1e-6), key


def test_switched_off_reconstruction_leaves_decoders_untouched() -> None:
    model = make_model().train()
    cfg = LossConfig(reconstruction=False)
    lab = terms_of(model, make_inputs(), cfg, torch.arange(16) % 4)
    total, _ = objective(lab, None, cfg)
    total.backward()
    assert model.daes["acoustic"].decoder[0].weight.grad is None
    assert model.daes["acoustic"].encoder[0].weight.grad is not None


def test_matching_gradients_flow_into_encoders() -> None:
    model = make_model().train()
    cfg = LossConfig(reconstruction=False)
    lab = terms_of(model, make_inputs(), cfg)
    (lab.pair + lab.unpaired).backward()
    assert model.daes["visual"].encoder_head[0].weight.grad.abs().sum() > 0
    assert model.classifier[0].weight.grad is None


def test_batch_measure_makes_matching_vanish_as_the_paper_writes_it() -> None:
    model = make_model()
    cfg = LossConfig(measure="batch")
    t = terms_of(model, make_inputs(), cfg)
    assert abs(float(t.pair + t.unpaired)) < 1e-5
    assert abs(float(t.pair)) > 1e-4
    default = terms_of(model, make_inputs(), LossConfig())
    assert abs(float(default.pair + default.unpaired)) > 1e-4


def test_masked_missing_modality_changes_nothing() -> None:
    """With a modality absent (length 0), whatever its features hold changes no term, no
    logit: the masked-missing option relies on it."""
    from emomatch.config import LossConfig, ModelConfig
    from emomatch.model import EmotionModel
    from emomatch.model.losses import stream_terms

    shapes = {"acoustic": (12,), "visual": (6, 10), "lexical": (5, 16)}
    torch.manual_seed(0)
    model = EmotionModel(shapes, 3, ModelConfig(latent_dim=8, feedforward_dim=16)).eval()
    n = 8
    inputs = {
        m: (torch.randn(n, *s), torch.full((n,), s[0] if len(s) == 2 else 1))
        for m, s in shapes.items()
    }
    inputs["visual"][1][:2] = 0  # rows 0, 1: no face
    inputs["acoustic"][1][5] = 0  # row 5: no audio
    labels = torch.randint(0, 3, (n,))

    def terms(inp):
        t = stream_terms(
            model, inp, LossConfig(), labels, generator=torch.Generator().manual_seed(1)
        )
        return [t.rec, t.pair, t.unpaired, t.cls, t.logits]

    before = terms(inputs)
    changed = {m: (x.clone(), lengths) for m, (x, lengths) in inputs.items()}
    changed["visual"][0][:2] = 1e3 * torch.randn(2, 6, 10)
    changed["acoustic"][0][5] = -1e3
    after = terms(changed)
    for a, b in zip(before, after, strict=True):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b)
    # ... while a present row's features do matter.
    changed["visual"][0][3] += 1.0
    assert not torch.allclose(terms(changed)[0], before[0])


def test_label_smoothing_is_the_mix_of_cross_entropy_and_the_uniform_target() -> None:
    # CE with smoothing e = (1 - e) * CE(one-hot) + e * mean over classes of -log p.
    model = make_model()
    labels = torch.arange(16) % 4
    plain = terms_of(model, make_inputs(), LossConfig(), labels)
    smooth = terms_of(model, make_inputs(), LossConfig(label_smoothing=0.2), labels)
    assert plain.logits is not None and smooth.cls is not None and plain.cls is not None
    uniform = -torch.log_softmax(plain.logits, 1).mean(1).mean()
    expected = 0.8 * plain.cls + 0.2 * uniform
    assert float(smooth.cls) == pytest.approx(float(expected), rel=1e-5)
    assert abs(float(smooth.cls) - float(plain.cls)) > 1e-4
    # The other terms do not see the labels.
    assert float(smooth.rec) == pytest.approx(float(plain.rec), rel=1e-6)


def test_input_dropout_corrupts_the_encoder_input_only_while_training() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(
        latent_dim=8, feedforward_dim=16, acoustic_hidden=[16], lexical_hidden=[16], dropout=0.0
    )
    plain = EmotionModel(SHAPES, 4, cfg)
    noisy = EmotionModel(SHAPES, 4, cfg.model_copy(update={"input_dropout": 0.5}))
    noisy.load_state_dict(plain.state_dict())  # dropout has no weights: old checkpoints load
    inputs = make_inputs()
    labels = torch.arange(16) % 4
    plain.eval(), noisy.eval()
    a, b = (
        terms_of(plain, inputs, LossConfig(), labels),
        terms_of(noisy, inputs, LossConfig(), labels),
    )
    assert a.logits is not None and b.logits is not None
    torch.testing.assert_close(a.logits, b.logits)
    plain.train(), noisy.train()
    torch.manual_seed(1)
    a = terms_of(plain, inputs, LossConfig(), labels)
    torch.manual_seed(1)
    b = terms_of(noisy, inputs, LossConfig(), labels)
    assert a.logits is not None and b.logits is not None
    assert not torch.allclose(a.logits, b.logits)
    # The target stays the clean input (a denoising auto-encoder).
    from emomatch.model.losses import reconstruction_loss

    torch.manual_seed(2)
    out = noisy(inputs)
    clean_target = sum(reconstruction_loss(out.reconstructions[m], *inputs[m]) for m in SHAPES)
    torch.manual_seed(2)
    assert float(terms_of(noisy, inputs, LossConfig(), labels).rec) == pytest.approx(
        float(clean_target), rel=1e-6
    )
