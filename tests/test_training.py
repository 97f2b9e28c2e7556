"""End-to-end training behaviour on tiny synthetic stores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pytorch_lightning.callbacks import Callback

from emomatch.errors import DataError, EmomatchError
from emomatch.evaluation import evaluate_checkpoint
from emomatch.runs import train_and_report
from emomatch.store import FeatureStore
from emomatch.synthetic import write_synthetic_store
from tests.support.builders import make_config, tiny_corpus

REQUIRED_KEYS = {"wap", "ua", "wa", "weighted_f1", "macro_f1", "confusion"}


def test_short_semi_supervised_run_beats_chance_and_writes_report(tiny_store, tmp_path) -> None:
    cfg = make_config(tiny_store, train={"max_epochs": 8})
    metrics = train_and_report(cfg, tmp_path / "run")
    assert metrics["ua"] > 0.6  # 4 classes: chance is 0.25
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(saved) >= REQUIRED_KEYS
    assert saved["split"] == "test"
    assert saved["validation"]["split"] == "validation"
    assert np.asarray(saved["confusion"]).sum() == 64
    assert (tmp_path / "run" / "confusion.png").stat().st_size > 1000
    assert (tmp_path / "run" / "checkpoints" / "best.ckpt").is_file()
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "run" / "config.yaml").is_file()


class Recorder(Callback):
    def __init__(self, events: list[str]) -> None:
        self.events = events

    def on_fit_end(self, trainer, pl_module) -> None:
        self.events.append("fit_end")


def test_test_split_is_never_read_before_final_evaluation(
    tiny_store, tmp_path, monkeypatch
) -> None:
    import emomatch.training.prepare as prepare

    store = FeatureStore(tiny_store)
    test_rows = set(store.select("split", "test").tolist())
    events: list[str] = []
    original_fetch, original_labels = FeatureStore.fetch, FeatureStore.labels
    original_check = prepare.check_finite
    checking = {"now": False}

    def check_finite(split, modalities):
        # the one allowed early look: the test features' finiteness, before the first step
        checking["now"] = True
        try:
            return original_check(split, modalities)
        finally:
            checking["now"] = False

    def fetch(self, modality, rows):
        if test_rows & set(np.asarray(rows).tolist()):
            events.append("test_checked" if checking["now"] else "test_read")
        return original_fetch(self, modality, rows)

    def labels(self, rows):
        if test_rows & set(np.asarray(rows).tolist()):
            events.append("test_read")
        return original_labels(self, rows)

    monkeypatch.setattr(FeatureStore, "fetch", fetch)
    monkeypatch.setattr(FeatureStore, "labels", labels)
    monkeypatch.setattr(prepare, "check_finite", check_finite)
    cfg = make_config(tiny_store, train={"max_epochs": 2})
    train_and_report(cfg, tmp_path / "run", callbacks=[Recorder(events)])
    assert "fit_end" in events and "test_read" in events
    assert "test_read" not in events[: events.index("fit_end")]
    assert "test_checked" in events[: events.index("fit_end")]


class Crash(Callback):
    def __init__(self, at_epoch: int) -> None:
        self.at_epoch = at_epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.at_epoch:
            raise RuntimeError("simulated crash")


def test_resume_after_crash_reaches_the_same_metrics(tiny_store, tmp_path) -> None:
    cfg = make_config(tiny_store, train={"max_epochs": 4})
    straight = train_and_report(cfg, tmp_path / "straight")
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_and_report(cfg, tmp_path / "crashed", callbacks=[Crash(at_epoch=2)])
    assert not (tmp_path / "crashed" / "metrics.json").exists()
    resumed = train_and_report(cfg, tmp_path / "crashed", resume=True)
    for key in ("wap", "ua", "wa", "weighted_f1", "macro_f1", "confusion", "best_epoch"):
        assert resumed[key] == straight[key], key
    assert resumed["validation"]["ua"] == straight["validation"]["ua"]


def test_existing_run_is_not_overwritten_and_resume_checks_config(tiny_store, tmp_path) -> None:
    cfg = make_config(tiny_store, train={"max_epochs": 1})
    train_and_report(cfg, tmp_path / "run")
    with pytest.raises(EmomatchError, match="already holds a run"):
        train_and_report(cfg, tmp_path / "run")
    changed = make_config(tiny_store, train={"max_epochs": 1}, loss={"alpha": 0.9})
    with pytest.raises(EmomatchError, match=r"loss\.alpha"):
        train_and_report(changed, tmp_path / "run", resume=True)


def test_fully_supervised_unimodal_run(tiny_store, tmp_path) -> None:
    cfg = make_config(
        tiny_store,
        data={"modalities": ["lexical"]},
        loss={"unlabeled": False},
        train={"max_epochs": 2},
    )
    metrics = train_and_report(cfg, tmp_path / "run")
    assert metrics["modalities"] == ["lexical"] and metrics["semi_supervised"] is False


def test_shape_mismatch_is_a_clear_error(tiny_store, tmp_path) -> None:
    cfg = make_config(tiny_store, data={"expect_shapes": {"acoustic": [1582]}})
    with pytest.raises(DataError, match=r"acoustic features have shape \[24\].*1582"):
        train_and_report(cfg, tmp_path / "run")
    # A trained model evaluated on a store of other dims
    cfg = make_config(tiny_store, train={"max_epochs": 1})
    train_and_report(cfg, tmp_path / "ok")
    other = tmp_path / "other"
    write_synthetic_store(
        tiny_corpus(shapes={"acoustic": (30,), "visual": (6, 12), "lexical": (5, 16)}), other
    )
    with pytest.raises(DataError, match=r"acoustic\.dim: store has 30, model was trained on 24"):
        evaluate_checkpoint(tmp_path / "ok" / "checkpoints" / "best.ckpt", store=other)


def test_nan_in_features_is_a_clear_error(tmp_path) -> None:
    path = tmp_path / "store"
    write_synthetic_store(tiny_corpus(), path)
    store = FeatureStore(path)
    row = int(store.select("split", "unlabeled")[3])
    part = path / "parts" / "part-00003" / "visual.npy"
    arr = np.load(part)
    arr[row - int(store.index["_part"].eq(3).idxmax()), 0, 0] = np.nan
    np.save(part, arr)
    bad_id = store.ids(np.array([row]))[0]
    cfg = make_config(path)
    with pytest.raises(DataError, match=rf"visual features of utterance\(s\) {bad_id}.*NaN"):
        train_and_report(cfg, tmp_path / "run")


def test_missing_class_in_training_split_is_a_clear_error(tmp_path) -> None:
    path = tmp_path / "store"
    write_synthetic_store(tiny_corpus(labeled_class_weights=(1.0, 1.0, 1.0, 0.0)), path)
    cfg = make_config(path)
    with pytest.raises(DataError, match="has no utterance of class.*sad"):
        train_and_report(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_missing_modality_utterances_are_left_out(tmp_path, caplog) -> None:
    path = tmp_path / "store"
    write_synthetic_store(tiny_corpus(missing={"visual": 0.2}), path)
    cfg = make_config(path, train={"max_epochs": 1})
    with caplog.at_level("WARNING"):
        metrics = train_and_report(cfg, tmp_path / "run")
    assert "miss a modality in use" in caplog.text
    assert metrics["dropped_missing_modality"] > 0
    assert metrics["n"] == 64 - metrics["dropped_missing_modality"]


def test_separate_unlabeled_store_must_match(tiny_store, tmp_path) -> None:
    other = tmp_path / "pool"
    write_synthetic_store(
        tiny_corpus(shapes={"acoustic": (30,), "visual": (6, 12), "lexical": (5, 16)}), other
    )
    cfg = make_config(tiny_store, data={"unlabeled_store": str(other)})
    with pytest.raises(DataError, match=r"made differently: acoustic\.dim: .*pool has 30"):
        train_and_report(cfg, tmp_path / "run")


def test_same_seed_same_result(tiny_store, tmp_path: Path) -> None:
    cfg = make_config(tiny_store, train={"max_epochs": 2})
    a = train_and_report(cfg, tmp_path / "a")
    b = train_and_report(cfg, tmp_path / "b")
    assert a["confusion"] == b["confusion"] and a["ua"] == b["ua"]


def test_all_folds_aggregate_mean_and_std(tmp_path) -> None:
    from emomatch.runs import train_folds

    path = tmp_path / "store"
    write_synthetic_store(
        tiny_corpus(speakers=6, folds=3, n_train=120, n_validation=30, n_test=30), path
    )
    store = FeatureStore(path)
    labeled = store.index[store.index["split"] != "unlabeled"]
    for k in (1, 2, 3):
        roles = labeled.groupby("speaker")[f"fold_{k}"].unique()
        assert all(len(r) == 1 for r in roles)  # a speaker has one role per fold
        assert sorted(r[0] for r in roles) == [
            "test",
            "train",
            "train",
            "train",
            "train",
            "validation",
        ]
    cfg = make_config(path, train={"max_epochs": 1})
    summary = train_folds(cfg, tmp_path / "cv")
    assert sorted(summary["folds"]) == ["1", "2", "3"]
    uas = [summary["folds"][k]["ua"] for k in ("1", "2", "3")]
    assert summary["ua"] == pytest.approx(np.mean(uas))
    assert summary["ua_std"] == pytest.approx(np.std(uas))
    saved = json.loads((tmp_path / "cv" / "metrics.json").read_text())
    assert np.asarray(saved["confusion"]).sum() == sum(
        summary["folds"][k]["n"] for k in ("1", "2", "3")
    )
    # resuming keeps finished folds; asking for a fold the store lacks is an error
    again = train_folds(cfg, tmp_path / "cv", resume=True)
    assert again["ua"] == summary["ua"]
    with pytest.raises(EmomatchError, match=r"no fold\(s\) \[7\]"):
        train_folds(cfg, tmp_path / "cv7", folds=[7])


def test_missing_modality_masked_keeps_utterances(tmp_path) -> None:
    path = tmp_path / "store"
    write_synthetic_store(tiny_corpus(missing={"visual": 0.2, "acoustic": 0.1}), path)
    cfg = make_config(path, data={"store": str(path), "missing": "mask"}, train={"max_epochs": 1})
    metrics = train_and_report(cfg, tmp_path / "run")
    assert metrics["dropped_missing_modality"] == 0
    assert metrics["n"] == 64
    assert np.isfinite(metrics["ua"])


def test_a_fold_missing_a_class_fails_before_any_fold_trains(tmp_path) -> None:
    import pandas as pd

    from emomatch.runs import train_folds

    path = tmp_path / "store"
    write_synthetic_store(tiny_corpus(speakers=6, folds=3), path)
    # Fold 3's training split loses every "angry" utterance.
    for part in sorted((path / "parts").glob("part-*/index.parquet")):
        index = pd.read_parquet(part)
        gone = (index["label"] == "angry") & (index["fold_3"] == "train")
        index.loc[gone, "fold_3"] = "unused"
        index.to_parquet(part)
    cfg = make_config(path, train={"max_epochs": 1})
    with pytest.raises(DataError, match="angry"):
        train_folds(cfg, tmp_path / "cv")
    assert not (tmp_path / "cv" / "fold_1").exists()
