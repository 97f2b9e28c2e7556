"""What the trainer derives from the training split only (normalisation, class weights) and what
the unlabelled stream contributes to a step. Tiny hand-written stores, no training run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from emomatch.config import LossConfig, ModelConfig
from emomatch.data import fit_stats, select_split
from emomatch.model import EmotionModel, Normalizer
from emomatch.model.losses import stream_terms
from emomatch.store import FeatureStore, ModalitySpec, StoreWriter
from emomatch.training.prepare import prepare_training_data
from tests.support.builders import make_config

CLASSES = ["ang", "hap", "sad"]
SPLITS = {"train": 12, "validation": 6, "test": 6, "unlabeled": 9}
#: 6, 4 and 2 training items: inverse-frequency weights 12 / (3 * count)
TRAIN_LABELS = ["ang"] * 6 + ["hap"] * 4 + ["sad"] * 2
T, D, A = 5, 16, 6


def write_store(path: Path, others_scale: float = 1.0, others_shift: float = 0.0) -> Path:
    """A store whose training rows are always the same; validation, test and unlabeled rows are
    scaled and shifted by the arguments."""
    rng = np.random.default_rng(0)
    specs = {
        "acoustic": ModalitySpec("vector", A),
        "lexical": ModalitySpec("sequence", D, max_len=T),
    }
    with StoreWriter(path, CLASSES, specs, fields=["split"]) as writer:
        for split, n in SPLITS.items():
            acoustic = rng.normal(2.0, 3.0, size=(n, A))
            lexical = rng.normal(-1.0, 0.5, size=(n, T, D))
            lengths = rng.integers(1, T + 1, size=n)
            if split == "train":
                labels: list[str | None] = list(TRAIN_LABELS)
            elif split == "unlabeled":
                labels = [None] * n
            else:
                labels = [CLASSES[i % 3] for i in range(n)]
            if split != "train":
                acoustic = acoustic * others_scale + others_shift
                lexical = lexical * others_scale + others_shift
            lexical[np.arange(T)[None, :] >= lengths[:, None]] = 0.0
            index = pd.DataFrame(
                {
                    "id": [f"{split}{i}" for i in range(n)],
                    "speaker": "s1",
                    "label": labels,
                    "split": split,
                    "acoustic_length": 1,
                    "lexical_length": lengths,
                }
            )
            writer.write_part(
                index,
                {"acoustic": acoustic.astype(np.float32), "lexical": lexical.astype(np.float32)},
            )
    return path


def config(store: Path, **loss: Any):
    return make_config(
        store,
        data={"modalities": ["acoustic", "lexical"]},
        loss=loss,
        train={"batch_size": 12, "unlabeled_batch_size": 9},
    )


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("train_only")
    return write_store(root / "plain"), write_store(root / "moved", 100.0, 50.0)


def test_stats_are_the_train_split_over_valid_positions(stores) -> None:
    store = FeatureStore(stores[0])
    train = select_split(store, "split", "train", ["acoustic", "lexical"], True)
    stats = fit_stats(train, ["acoustic", "lexical"])
    acoustic = store.fetch("acoustic", train.rows).astype(np.float64)
    np.testing.assert_allclose(stats["acoustic"][0], acoustic.mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats["acoustic"][1], acoustic.std(0), rtol=1e-5)
    lexical = store.fetch("lexical", train.rows).astype(np.float64)
    lengths = store.lengths("lexical", train.rows)
    valid = lexical[np.arange(T)[None, :] < lengths[:, None]]
    np.testing.assert_allclose(stats["lexical"][0], valid.mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats["lexical"][1], valid.std(0), rtol=1e-5)
    # Guard: padding is really there, and counting it would move the mean.
    assert lengths.min() < T
    assert not np.allclose(stats["lexical"][0], lexical.mean((0, 1)), rtol=1e-3)


def test_values_outside_the_train_split_never_change_the_statistics(stores) -> None:
    plain, moved = (prepare_training_data(config(s)) for s in stores)
    assert plain.unlabeled is not None and moved.unlabeled is not None
    for m in ("acoustic", "lexical"):
        for got, want in zip(moved.stats[m], plain.stats[m], strict=True):
            np.testing.assert_array_equal(got, want)
    # Guard: validation and unlabeled values did change between the two stores.
    for a, b in ((plain.validation, moved.validation), (plain.unlabeled, moved.unlabeled)):
        xa = a.store.fetch("acoustic", a.rows)
        xb = b.store.fetch("acoustic", b.rows)
        assert np.abs(xa - xb).min() > 1.0


def test_normalizer_with_train_stats_z_normalises_the_train_split(stores) -> None:
    data = prepare_training_data(config(stores[1]))
    norm = Normalizer({"acoustic": A, "lexical": D})
    norm.set_stats(data.stats)
    assert {"acoustic_mean", "acoustic_std", "lexical_mean", "lexical_std"} <= set(
        norm.state_dict()
    )
    rows = data.train.rows
    x = torch.from_numpy(data.train.store.fetch("lexical", rows))
    n = torch.from_numpy(data.train.store.lengths("lexical", rows))
    z = norm("lexical", x, n)
    valid = torch.arange(T)[None, :] < n[:, None]
    torch.testing.assert_close(z[valid].mean(0), torch.zeros(D), atol=1e-4, rtol=0)
    torch.testing.assert_close(z[valid].std(0, unbiased=False), torch.ones(D), atol=1e-4, rtol=0)
    assert float(z[~valid].abs().max()) == 0.0
    # The moved validation split is far from standard: nothing was fitted on it.
    v = torch.from_numpy(data.validation.store.fetch("acoustic", data.validation.rows))
    assert float(norm("acoustic", v, torch.ones(len(v))).mean()) > 10.0


def test_class_weights_are_inverse_frequency_of_the_train_split(stores) -> None:
    weights = prepare_training_data(config(stores[0])).class_weights()
    assert weights == pytest.approx([12 / (3 * 6), 12 / (3 * 4), 12 / (3 * 2)])
    # Weighted by the class counts they average to 1, so the loss keeps its scale.
    assert np.dot(weights, [6, 4, 2]) / 12 == pytest.approx(1.0)


def _module(store: Path, **loss: Any):
    from emomatch.training.module import EmoMatchModule

    cfg = config(store, **loss)
    data = prepare_training_data(cfg)
    torch.manual_seed(0)
    module = EmoMatchModule(
        cfg.model_dump(mode="json"),
        {m: list(s) for m, s in data.shapes.items()},
        data.classes,
        class_weights=data.class_weights(),
    )
    module.normalizer.set_stats(data.stats)
    train_loader, _ = data.loaders(cfg)
    return module, next(iter(train_loader))


def _step_grads(module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    module.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # the same dropout masks for every call
    module.training_step(batch, 0).backward()
    return {
        k: p.grad.clone() if p.grad is not None else torch.zeros_like(p)
        for k, p in module.named_parameters()
    }


def test_class_weights_switch_changes_the_classification_loss(stores) -> None:
    labels = torch.tensor([0] * 6 + [1] * 4 + [2] * 2)
    weights = torch.tensor([2 / 3, 1.0, 2.0])
    torch.manual_seed(0)
    model = EmotionModel({"acoustic": (A,)}, 3, ModelConfig(latent_dim=4)).eval()
    inputs = {"acoustic": (torch.randn(12, A), torch.ones(12, dtype=torch.long))}
    plain = stream_terms(model, inputs, LossConfig(), labels)
    weighted = stream_terms(model, inputs, LossConfig(), labels, class_weights=weights)
    assert plain.logits is not None and plain.cls is not None and weighted.cls is not None
    per_item = F.cross_entropy(plain.logits, labels, reduction="none")
    expected = (weights[labels] * per_item).sum() / weights[labels].sum()
    torch.testing.assert_close(weighted.cls, expected)
    assert abs(float(weighted.cls - plain.cls)) > 1e-4
    # Through the trainer's step: loss.class_weights is what turns the weights on.
    on, batch = _module(stores[0], class_weights=True)
    off, _ = _module(stores[0], class_weights=False)
    on.eval(), off.eval()
    with torch.no_grad():
        assert abs(float(on.training_step(batch, 0) - off.training_step(batch, 0))) > 1e-4


def test_unlabeled_stream_changes_the_gradients_of_a_semi_supervised_step(stores) -> None:
    module, batch = _module(stores[0])
    assert "unlabeled" in batch and len(batch["unlabeled"]["positions"]) == 9
    full = _step_grads(module, batch)
    labeled_only = _step_grads(module, {"labeled": batch["labeled"]})
    changed = [k for k in full if not torch.equal(full[k], labeled_only[k])]
    assert any(k.startswith("model.daes.acoustic.encoder") for k in changed)
    assert any(k.startswith("model.daes.lexical.decoder") for k in changed)
    # The unlabeled part has no classification term: the classifier's gradient is the same.
    assert not any(k.startswith("model.classifier") for k in changed)


def test_with_unlabeled_off_the_pool_is_not_read_nor_computed(stores, monkeypatch) -> None:
    import emomatch.training.module as module_mod

    semi, semi_batch = _module(stores[0])
    sup, sup_batch = _module(stores[0], unlabeled=False)
    assert "unlabeled" not in sup_batch
    assert prepare_training_data(config(stores[0], unlabeled=False)).unlabeled is None
    calls: list[int] = []
    real = module_mod.stream_terms

    def counting(*args: Any, **kwargs: Any):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(module_mod, "stream_terms", counting)
    # Even handed a batch with an unlabeled part, the supervised module never computes it ...
    with_pool = _step_grads(sup, semi_batch)
    assert len(calls) == 1
    without = _step_grads(sup, {"labeled": semi_batch["labeled"]})
    for k in with_pool:
        torch.testing.assert_close(with_pool[k], without[k], rtol=0, atol=0)
    # ... while the semi-supervised one computes both streams.
    calls.clear()
    _step_grads(semi, semi_batch)
    assert len(calls) == 2
