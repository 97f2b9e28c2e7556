"""Training options beyond the paper: schedule, weight decay, early stopping, checkpoint
averaging, small-split batches and seed ensembles."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from emomatch.errors import ConfigError
from emomatch.evaluation import evaluate_checkpoint, load_checkpoint, predict_split
from emomatch.rundir import RunFolder
from emomatch.runs import train_and_report
from emomatch.training.module import lr_scale
from emomatch.training.prepare import labeled_batch_size, prepare_training_data
from tests.support.builders import make_config
from tests.support.runs import history


def test_warm_up_then_cosine_reaches_zero_at_the_budget() -> None:
    scale = lr_scale(per_epoch=10, total=100, warmup_epochs=2, schedule="cosine")
    assert [scale(s) for s in (0, 9, 19)] == pytest.approx([0.05, 0.5, 1.0])
    assert scale(20) == pytest.approx(1.0)
    assert scale(60) == pytest.approx(0.5)
    assert scale(100) == pytest.approx(0.0)
    constant = lr_scale(per_epoch=10, total=100, warmup_epochs=0, schedule="constant")
    assert {constant(s) for s in range(100)} == {1.0}


def test_learning_rate_follows_the_schedule_in_training(tiny_store, tmp_path) -> None:
    cfg = make_config(
        tiny_store,
        train={"max_epochs": 3, "warmup_epochs": 1, "schedule": "cosine", "lr": 0.01},
    )
    seen: list[float] = []

    from pytorch_lightning.callbacks import Callback

    class Watch(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    train_and_report(cfg, tmp_path / "run", callbacks=[Watch()])
    per_epoch = len(seen) // 3
    assert seen[0] == pytest.approx(0.01 / per_epoch)  # warm-up starts small
    assert max(seen) == pytest.approx(0.01, rel=1e-6)  # reaches the base rate
    assert seen[-1] < 0.01 * 0.1  # and decays towards 0 by the last step
    assert seen[per_epoch:] == sorted(seen[per_epoch:], reverse=True)


def test_weight_decay_shrinks_the_weights(tiny_store, tmp_path) -> None:
    norms = {}
    for wd in (0.0, 0.5):
        cfg = make_config(tiny_store, train={"max_epochs": 2, "weight_decay": wd})
        train_and_report(cfg, tmp_path / f"wd{wd}")
        module = load_checkpoint(tmp_path / f"wd{wd}" / "checkpoints" / "last.ckpt")
        norms[wd] = sum(float(p.norm()) for p in module.model.parameters())
    assert norms[0.5] < norms[0.0]


def test_early_stopping_ends_the_run_after_patience(tiny_store, tmp_path) -> None:
    # A learning rate of ~0 never improves on the first epoch: patience 2 stops after epoch 2.
    cfg = make_config(tiny_store, train={"max_epochs": 10, "patience": 2, "lr": 1e-12})
    metrics = train_and_report(cfg, tmp_path / "run")
    assert sorted(history(tmp_path / "run")) == [0, 1, 2]
    assert metrics["best_epoch"] == 0


def test_checkpoint_averaging_averages_the_best_epochs(tiny_store, tmp_path) -> None:
    cfg = make_config(tiny_store, train={"max_epochs": 4, "average": 3})
    metrics = train_and_report(cfg, tmp_path / "run")
    ckdir = tmp_path / "run" / "checkpoints"
    tops = sorted(ckdir.glob("top-*.ckpt"))
    assert len(tops) == 3
    assert metrics["checkpoint"] == "checkpoints/selected.ckpt"
    averaged = torch.load(ckdir / "selected.ckpt", map_location="cpu", weights_only=False)
    states = [torch.load(p, map_location="cpu", weights_only=False)["state_dict"] for p in tops]
    key = next(k for k in averaged["state_dict"] if k.endswith("weight"))
    expected = torch.stack([s[key] for s in states]).mean(0)
    assert torch.allclose(averaged["state_dict"][key], expected)
    assert not torch.equal(states[0][key], states[1][key])
    assert averaged["averaged_epochs"] == metrics["averaged_epochs"]
    assert len(metrics["averaged_epochs"]) == 3
    assert RunFolder(tmp_path / "run").scoring_checkpoints() == [ckdir / "selected.ckpt"]


def test_small_training_split_gets_smaller_batches(tiny_store) -> None:
    assert labeled_batch_size(300, 128, 0) == 128
    assert labeled_batch_size(300, 128, 10) == 30
    assert labeled_batch_size(3000, 128, 10) == 128
    cfg = make_config(tiny_store, train={"batch_size": 64, "min_steps_per_epoch": 8})
    train_loader, _ = prepare_training_data(cfg).loaders(cfg)
    assert len(train_loader) == 8  # 96 training utterances in batches of 12


def test_seed_ensemble_scores_the_mean_probability(tiny_store, tmp_path) -> None:
    cfg = make_config(tiny_store, train={"max_epochs": 2})
    metrics = train_and_report(cfg, tmp_path / "ens", seeds=3)
    assert metrics["ensemble_of_seeds"] == [0, 1, 2]
    per_seed = [metrics["seeds"][s]["ua"] for s in ("0", "1", "2")]
    assert metrics["per_seed"]["ua"] == pytest.approx(np.mean(per_seed))
    assert metrics["per_seed"]["ua_std"] == pytest.approx(np.std(per_seed))
    # the ensemble's confusion comes from the averaged probabilities, recomputed here
    checkpoints = RunFolder(tmp_path / "ens").scoring_checkpoints()
    assert len(checkpoints) == 3
    from emomatch.data import select_split
    from emomatch.store import FeatureStore

    store = FeatureStore(tiny_store)
    rows = select_split(store, "split", "test", ["acoustic", "visual", "lexical"], True)
    mean = sum(predict_split(load_checkpoint(c), rows) for c in checkpoints) / 3
    confusion = np.zeros((4, 4), dtype=int)
    for t, p in zip(rows.labels(), mean.argmax(1), strict=True):
        confusion[t, p] += 1
    assert metrics["confusion"] == confusion.tolist()
    single = evaluate_checkpoint(checkpoints[0])
    assert single["confusion"] == metrics["seeds"]["0"]["confusion"]
    saved = json.loads((tmp_path / "ens" / "metrics.json").read_text())
    assert saved["ensemble_of_seeds"] == [0, 1, 2]
    # resuming a finished ensemble trains nothing again
    again = train_and_report(cfg, tmp_path / "ens", seeds=3, resume=True)
    assert again["confusion"] == metrics["confusion"]


def test_select_last_keeps_the_last_epochs_and_trains_on_pooled_splits(tiny_store, tmp_path):
    cfg = make_config(
        tiny_store,
        data={"train_split": ["train", "validation"]},
        train={"max_epochs": 4, "select": "last", "average": 2},
    )
    metrics = train_and_report(cfg, tmp_path / "run")
    assert metrics["averaged_epochs"] == [2, 3]
    assert metrics["checkpoint"] == "checkpoints/selected.ckpt"
    data = prepare_training_data(cfg)
    assert len(data.train) == 96 + 48  # the validation speakers' utterances train too


def test_seeds_and_evaluate_from_the_command(tiny_store, tmp_path) -> None:
    from typer.testing import CliRunner

    from emomatch.cli import app

    config = tmp_path / "config.yaml"
    config.write_text(make_config(tiny_store, train={"max_epochs": 1}).to_yaml())
    run = tmp_path / "run"
    runner = CliRunner()
    trained = runner.invoke(app, ["train", str(config), "--out", str(run), "--seeds", "2"])
    assert trained.exit_code == 0, trained.output
    assert "2 seeds, UA" in trained.output and "their ensemble" in trained.output
    evaluated = runner.invoke(app, ["evaluate", str(run)])
    assert evaluated.exit_code == 0, evaluated.output
    again = json.loads((run / "evaluation" / "metrics.json").read_text())
    assert again["confusion"] == json.loads((run / "metrics.json").read_text())["confusion"]
    assert again["ensemble"] == 2


def test_several_validation_and_test_speakers(tmp_path) -> None:
    from emomatch.synthetic import write_synthetic_store
    from tests.support.builders import tiny_corpus

    store = tmp_path / "store"
    write_synthetic_store(tiny_corpus(n_unlabeled=0), store)
    speakers = [f"spk{s:02d}" for s in range(10)]
    cfg = make_config(
        store,
        data={
            "split_field": "speaker",
            "train_split": speakers[:6],
            "validation_split": speakers[6:8],
            "test_split": speakers[8:],
        },
        loss={"unlabeled": False},
        train={"max_epochs": 1},
    )
    metrics = train_and_report(cfg, tmp_path / "run")
    from emomatch.store import FeatureStore

    index = FeatureStore(store).index
    for key, chosen in (("validation", speakers[6:8]), ("test", speakers[8:])):
        scored = metrics[key] if key == "validation" else metrics
        assert sum(map(sum, scored["confusion"])) == index["speaker"].isin(chosen).sum()
    assert metrics["validation"]["split"] == "spk06+spk07"


def test_test_split_may_not_overlap_training_or_validation(tiny_store) -> None:
    with pytest.raises(ConfigError, match="test split must stay unseen"):
        make_config(tiny_store, data={"train_split": ["train", "test"]})
    with pytest.raises(ConfigError, match="empty list"):
        make_config(tiny_store, data={"validation_split": []})


def test_prediction_terms_threshold_and_teacher_without_gradient() -> None:
    from emomatch.config import LossConfig, ModelConfig
    from emomatch.model import EmotionModel
    from emomatch.model.losses import prediction_terms

    torch.manual_seed(0)
    model = EmotionModel({"acoustic": (6,), "visual": (5,)}, 3, ModelConfig(latent_dim=4))
    inputs = {
        m: (torch.randn(8, d), torch.ones(8, dtype=torch.long))
        for m, d in (("acoustic", 6), ("visual", 5))
    }
    gen = torch.Generator().manual_seed(0)
    none = prediction_terms(model, inputs, LossConfig(pseudo_threshold=1.0), gen)
    assert float(none["pseudo"]) == 0.0  # an untrained model is never that sure
    cfg = LossConfig(pseudo_threshold=0.0, consistency_weight=2.0, view_noise=0.0)
    model.eval()  # no dropout: the student's clean view is the teacher's
    parts = prediction_terms(model, inputs, cfg, gen)
    logits = model(inputs, reconstruct=False).logits
    expected = torch.nn.functional.cross_entropy(logits, logits.argmax(1))
    assert float(parts["pseudo"]) == pytest.approx(float(expected), rel=1e-5)
    assert float(parts["consistency"]) == pytest.approx(0.0, abs=1e-10)
    parts["pseudo"].backward()
    assert all(p.grad is not None for p in model.classifier.parameters())


@pytest.mark.parametrize(
    "loss",
    [
        {"pseudo_threshold": 0.7, "view_modality_dropout": 0.3},
        {"consistency_weight": 1.0, "ema_decay": 0.9},
    ],
    ids=["pseudo-labels", "ema-consistency"],
)
def test_unlabelled_prediction_terms_train(tiny_store, tmp_path, loss) -> None:
    cfg = make_config(tiny_store, loss=loss, train={"max_epochs": 4})
    metrics = train_and_report(cfg, tmp_path / "run")
    assert metrics["ua"] > 0.5  # four classes: chance is 0.25
    logged = history(tmp_path / "run")
    key = "train/pseudo" if "pseudo_threshold" in loss else "train/consistency"
    assert all(key in row for row in logged.values())
