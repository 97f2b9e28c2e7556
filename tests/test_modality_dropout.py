"""train.modality_dropout: modalities of labelled utterances made absent at random while
training, through the data.missing: mask path; off (and drawing nothing) by default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from emomatch.config import ExperimentConfig
from emomatch.errors import ConfigError
from emomatch.model.losses import objective, stream_terms
from emomatch.runs import train_and_report
from emomatch.synthetic import write_synthetic_store
from emomatch.training import module as module_file
from emomatch.training.module import EmoMatchModule, drop_modalities
from emomatch.training.prepare import prepare_training_data
from tests.support.builders import make_config, tiny_corpus
from tests.support.runs import EPOCHS, CrashMidEpoch, assert_same_run, config, losses

MODS = ("acoustic", "visual", "lexical")


def _inputs(lengths: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """One column of ``lengths`` per modality; the features do not matter here."""
    return {m: (torch.randn(len(lengths), 3), lengths[:, i]) for i, m in enumerate(MODS)}


def _absent(inputs: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    return torch.stack([inputs[m][1] == 0 for m in MODS], 1)


def test_the_key_is_off_by_default_and_validated(tiny_store) -> None:
    assert make_config(tiny_store).train.modality_dropout == 0.0
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ConfigError, match="modality_dropout"):
            make_config(tiny_store, train={"modality_dropout": bad})


def test_each_modality_is_dropped_at_the_rate_and_never_every_one_of_a_row() -> None:
    n = 90_000
    lengths = torch.full((n, 3), 5)
    # a third of the rows already lack one modality (data.missing: mask), some two
    lengths[::3, 1] = 0
    lengths[::6, 2] = 0
    inputs = _inputs(lengths)
    out = drop_modalities(inputs, 0.3, torch.Generator().manual_seed(0))
    before, after = lengths == 0, _absent(out)
    assert not (before & ~after).any(), "an absent modality came back"
    assert not after.all(1).any(), "a row lost every modality"
    # rows with all three: each one dropped with p, except where all three were drawn
    # (p^3 = 2.7 %), which keeps one of them back: 0.3 - 0.027 / 3 = 0.291
    full = ~before.any(1)
    rate = after[full].float().mean(0)
    torch.testing.assert_close(rate, torch.full((3,), 0.291), atol=0.01, rtol=0)
    # the one kept back is uniform among the modalities the row had
    single = after[full].sum(1) == 2
    kept = (~after[full][single]).float().mean(0)
    torch.testing.assert_close(kept, torch.full((3,), 1 / 3), atol=0.03, rtol=0)
    # a row with one modality keeps it whatever the draw
    assert not after[before.sum(1) == 2].all(1).any()
    # features are untouched: absence is a length of 0, as in the store
    assert all(out[m][0] is inputs[m][0] for m in MODS)


def test_the_same_generator_seed_drops_the_same_modalities() -> None:
    lengths = torch.full((64, 3), 4)
    inputs = _inputs(lengths)
    # the draws come from the given generator: the global one (dropout) is left as it was
    state = torch.get_rng_state()
    drop_modalities(inputs, 0.5, torch.Generator().manual_seed(7))
    assert torch.equal(torch.get_rng_state(), state)
    a = _absent(drop_modalities(inputs, 0.5, torch.Generator().manual_seed(7)))
    b = _absent(drop_modalities(inputs, 0.5, torch.Generator().manual_seed(7)))
    c = _absent(drop_modalities(inputs, 0.5, torch.Generator().manual_seed(8)))
    assert torch.equal(a, b) and not torch.equal(a, c)


class Spy:
    """Records the lengths each stream_terms call of the module sees."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[dict[str, torch.Tensor]] = []
        real = module_file.stream_terms

        def spy(model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
            self.calls.append({m: n.clone() for m, (_, n) in inputs.items()})
            return real(model, inputs, *args, **kwargs)

        monkeypatch.setattr(module_file, "stream_terms", spy)


def _module(cfg: ExperimentConfig) -> tuple[EmoMatchModule, dict[str, Any]]:
    data = prepare_training_data(cfg)
    torch.manual_seed(0)
    module = EmoMatchModule(
        cfg.model_dump(mode="json"), {m: list(s) for m, s in data.shapes.items()}, data.classes
    )
    module.normalizer.set_stats(data.stats)
    train_loader, _ = data.loaders(cfg)
    return module, next(iter(train_loader))


def _step(module: EmoMatchModule, batch: dict[str, Any]) -> float:
    torch.manual_seed(1)  # the same dropout masks for every call
    return float(module.training_step(batch, 0))


@pytest.fixture(scope="module")
def masked_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Some utterances already lack a modality, and training keeps them (missing: mask)."""
    path = tmp_path_factory.mktemp("stores") / "masked"
    write_synthetic_store(tiny_corpus(missing={"visual": 0.2}), path)
    return path


def _cfg(store: Path, p: float) -> ExperimentConfig:
    return make_config(
        store, data={"missing": "mask"}, train={"batch_size": 48, "modality_dropout": p}
    )


def test_a_training_step_masks_some_modalities_of_labelled_rows_only(
    masked_store, monkeypatch
) -> None:
    spy = Spy(monkeypatch)
    module, batch = _module(_cfg(masked_store, 0.4))
    _step(module, batch)
    labeled, unlabeled = spy.calls
    stored = {m: n for m, (_, n) in batch["labeled"]["inputs"].items()}
    was = torch.stack([stored[m] == 0 for m in MODS], 1)
    now = torch.stack([labeled[m] == 0 for m in MODS], 1)
    assert was.any() and not (was & ~now).any()
    dropped = now & ~was
    assert dropped.any(0).all(), "every modality is dropped in some rows"
    assert (~dropped.any(1)).any(), "some rows keep everything they had"
    assert not now.all(1).any()
    # a modality kept keeps its length: dropping only ever sets lengths to 0
    for m in MODS:
        kept = labeled[m] > 0
        assert torch.equal(labeled[m][kept], stored[m][kept])
    # the unlabeled stream has no classifier term to make robust: left as stored
    for m, (_, n) in batch["unlabeled"]["inputs"].items():
        assert torch.equal(unlabeled[m], n)


def test_p_zero_changes_no_loss(masked_store) -> None:
    off, batch = _module(_cfg(masked_store, 0.0))
    on, _ = _module(_cfg(masked_store, 0.4))
    on.load_state_dict(off.state_dict())
    loss_off = _step(off, batch)
    # the step by hand, as before the option existed: the stored lengths, the paper's objective
    torch.manual_seed(1)
    shuffles = torch.Generator().manual_seed(off.cfg.seed * 7919)
    lab, unl = batch["labeled"], batch["unlabeled"]
    labeled = stream_terms(
        off.model, off.normalized(lab), off.cfg.loss, labels=lab["labels"], generator=shuffles
    )
    unlabeled = stream_terms(off.model, off.normalized(unl), off.cfg.loss, generator=shuffles)
    assert loss_off == float(objective(labeled, unlabeled, off.cfg.loss)[0])
    assert _step(on, batch) != loss_off


def test_validation_and_prediction_never_drop(masked_store, monkeypatch) -> None:
    off, batch = _module(_cfg(masked_store, 0.0))
    on, _ = _module(_cfg(masked_store, 0.9))
    on.load_state_dict(off.state_dict())
    spy = Spy(monkeypatch)
    lab = batch["labeled"]
    for module in (off, on):
        module.eval()
        with torch.no_grad():
            module.validation_step(batch, 0)
            assert torch.equal(module(lab), off(lab))
    stored = {m: n for m, (_, n) in lab["inputs"].items()}
    for call in spy.calls:
        assert all(torch.equal(call[m], stored[m]) for m in MODS)
    assert torch.equal(on._val_pred[0], off._val_pred[0])


def test_resume_with_modality_dropout_repeats_the_run(tiny_store, tmp_path) -> None:
    cfg = config(tiny_store, True, modality_dropout=0.3)
    straight = tmp_path / "straight"
    reference = (train_and_report(cfg, straight), straight)
    assert reference[0]["best_epoch"] > 0
    # the option is in effect: the same run without it has other losses
    plain = tmp_path / "plain"
    train_and_report(config(tiny_store, True, epochs=1), plain)
    assert losses(straight)[0] != losses(plain)[0]
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_and_report(cfg, run, callbacks=[CrashMidEpoch(epoch=2, batch=3)])
    resumed = train_and_report(cfg, run, resume=True)
    assert len(losses(run)) == EPOCHS
    assert_same_run(resumed, run, reference)


def test_the_model_card_says_how_training_saw_missing_modalities() -> None:
    from emomatch.bundle.card import model_card

    def limits(missing: str, p: float) -> str:
        card = model_card({}, {"data": {"missing": missing}, "train": {"modality_dropout": p}}, {})
        return next(line for line in card.splitlines() if line.startswith("- A clip missing"))

    assert "less reliable" in limits("drop", 0.0)
    assert "`missing: mask`" in limits("mask", 0.0)
    for missing in ("drop", "mask"):
        line = limits(missing, 0.3)
        assert "chance 0.3 (`train.modality_dropout`)" in line and "less reliable" not in line
