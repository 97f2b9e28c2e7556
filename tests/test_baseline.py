"""Built-in baselines: features, selection on validation only, metrics, folds, command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from typer.testing import CliRunner

from emomatch import baseline as bl
from emomatch.cli import app
from emomatch.data import select_split
from emomatch.errors import ConfigError, DataError
from emomatch.store import FeatureStore, ModalitySpec, StoreWriter
from emomatch.synthetic import write_synthetic_store
from tests.support.builders import make_config, tiny_corpus

runner = CliRunner()
GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)


def test_sequences_are_mean_pooled_over_valid_positions_only(tmp_path) -> None:
    lexical = np.full((3, 4, 2), 1e6, dtype=np.float32)  # padding holds junk on purpose
    lexical[0, :2] = [[1, 2], [3, 4]]
    lexical[1, :4] = [[1, 1], [2, 2], [3, 3], [6, 6]]
    lexical[2, 0] = np.nan  # length 0: absent, never read
    acoustic = np.array([[1, 2, 3], [4, 5, 6], [9, 9, 9]], dtype=np.float32)
    writer = StoreWriter(
        tmp_path / "s",
        classes=["a", "b"],
        modalities={
            "acoustic": ModalitySpec("vector", 3),
            "lexical": ModalitySpec("sequence", 2, max_len=4),
        },
    )
    index = pd.DataFrame(
        {
            "id": ["u0", "u1", "u2"],
            "speaker": "s",
            "label": ["a", "b", "a"],
            "split": "train",
            "acoustic_length": [1, 0, 1],
            "lexical_length": [2, 4, 0],
        }
    )
    writer.write_part(index, {"acoustic": acoustic, "lexical": lexical})
    split = select_split(FeatureStore(tmp_path / "s"), "split", "train", ["lexical"], True, "mask")
    split = select_split(split.store, "split", "train", ["acoustic", "lexical"], True, "mask")
    x, present = bl.utterance_features(split, ["acoustic", "lexical"])
    np.testing.assert_allclose(
        x,
        [[1, 2, 3, 2, 3], [0, 0, 0, 3, 3], [9, 9, 9, 0, 0]],
    )
    assert present.tolist() == [[True, True], [False, True], [True, False]]
    # Statistics come from the utterances that have the modality; a missing one sits at the mean.
    norm = bl.ZNorm.fit(x, present, [3, 2])
    np.testing.assert_allclose(norm.mean, [5, 5.5, 6, 2.5, 3])
    z = norm(x, present)
    assert (z[1, :3] == 0).all() and (z[2, 3:] == 0).all()
    np.testing.assert_allclose(z[0, 3:], [-1, 0])  # std 0.5 and a constant dimension kept at 1


@pytest.fixture(scope="module")
def skewed_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Imbalanced classes and weaker signal, where class weights change the fitted models."""
    path = tmp_path_factory.mktemp("baseline") / "skewed"
    corpus = tiny_corpus(labeled_class_weights=[0.55, 0.25, 0.12, 0.08], separation=1.0)
    write_synthetic_store(corpus, path)
    return path


def _direct_features(store: FeatureStore, field: str, value: str) -> tuple[np.ndarray, np.ndarray]:
    """The baseline features computed independently of emomatch.baseline, from the raw store."""
    rows = store.select(field, value)
    parts = []
    for m in ("acoustic", "visual", "lexical"):
        x = store.fetch(m, rows).astype(np.float64)
        if x.ndim == 3:
            n = store.lengths(m, rows)
            x = np.stack([x[i, : n[i]].mean(0) for i in range(len(rows))])
        parts.append(x)
    return np.concatenate(parts, 1), store.labels(rows)


@pytest.mark.parametrize("weight", ["none", "balanced"])
@pytest.mark.parametrize("name", ["logreg", "linear_svm"])
def test_metrics_equal_scikit_learn_computed_directly(skewed_store, name, weight) -> None:
    store = FeatureStore(skewed_store)
    cfg = make_config(skewed_store, train={"select_metric": "weighted_f1"})
    got = bl.fit_baselines(cfg, models=[name], c_grid=GRID, class_weight=weight)[name]

    xtr, ytr = _direct_features(store, "split", "train")
    xva, yva = _direct_features(store, "split", "validation")
    xte, yte = _direct_features(store, "split", "test")
    scaler = StandardScaler().fit(xtr)
    cw = None if weight == "none" else "balanced"
    best, best_score, scores = None, -1.0, {}
    for c in GRID:
        model = (
            LogisticRegression(C=c, max_iter=2000, class_weight=cw)
            if name == "logreg"
            else LinearSVC(C=c, dual="auto", max_iter=10000, random_state=0, class_weight=cw)
        ).fit(scaler.transform(xtr), ytr)
        score = f1_score(yva, model.predict(scaler.transform(xva)), average="weighted")
        scores[repr(c)] = score
        if score > best_score:
            best, best_score = (c, model), score
    assert best is not None
    c, model = best
    assert got["C"] == c
    assert got["validation_by_C"] == pytest.approx(scores)
    assert got["validation"]["weighted_f1"] == pytest.approx(best_score)
    pred = model.predict(scaler.transform(xte))
    assert got["ua"] == pytest.approx(recall_score(yte, pred, average="macro"))
    assert got["wa"] == pytest.approx(accuracy_score(yte, pred))
    assert got["weighted_f1"] == pytest.approx(f1_score(yte, pred, average="weighted"))
    assert got["wap"] == pytest.approx(precision_score(yte, pred, average="weighted"))
    assert got["n"] == len(yte) and got["split"] == "test"
    assert got["selected_on"] == "validation weighted_f1"


def test_class_weights_change_the_models(skewed_store) -> None:
    cfg = make_config(skewed_store)
    balanced = bl.fit_baselines(cfg, c_grid=GRID, class_weight="balanced")
    plain = bl.fit_baselines(cfg, c_grid=GRID, class_weight="none")
    for name in bl.BASELINES:
        assert balanced[name]["validation_by_C"] != plain[name]["validation_by_C"]
        assert balanced[name]["class_weight"] == "balanced"


def test_choice_of_c_ignores_the_test_labels(tmp_path, tiny_store) -> None:
    """Two stores that differ only in the test split's labels choose the same C."""
    other = tmp_path / "shuffled"
    write_synthetic_store(tiny_corpus(), other)
    rng = np.random.default_rng(0)
    for part in sorted((other / "parts").glob("part-*/index.parquet")):
        index = pd.read_parquet(part)
        test = index["split"] == "test"
        index.loc[test, "label"] = rng.permutation(index.loc[test, "label"].to_numpy().copy())
        index.to_parquet(part)
    a = bl.fit_baselines(make_config(tiny_store), c_grid=GRID)
    b = bl.fit_baselines(make_config(other), c_grid=GRID)
    for name in bl.BASELINES:
        assert a[name]["C"] == b[name]["C"]
        assert a[name]["validation_by_C"] == b[name]["validation_by_C"]
        assert a[name]["confusion"] != b[name]["confusion"]


def test_a_tie_on_validation_keeps_the_smallest_c() -> None:
    x = np.array([[-2.0], [-1.0], [1.0], [2.0]])
    y = np.array([0, 0, 1, 1])
    sel = bl.select_c("logreg", (x, y), (x, y), 2, "ua", [10.0, 0.01, 1.0], "none", 0)
    assert sel.validation["ua"] == 1.0 and set(sel.scores.values()) == {1.0}
    assert sel.c == 0.01


def test_the_test_split_is_read_only_after_every_c_is_chosen(tiny_store, monkeypatch) -> None:
    store = FeatureStore(tiny_store)
    test_ids = set(store.ids(store.select("split", "test")))
    events: list[str] = []
    fetch, labels, lengths = FeatureStore.fetch, FeatureStore.labels, FeatureStore.lengths

    def reads(kind, original):
        def spy(self, *args):
            rows = args[-1]
            if test_ids & set(self.ids(np.asarray(rows))):
                events.append(f"test {kind}")
            return original(self, *args)

        return spy

    monkeypatch.setattr(FeatureStore, "fetch", reads("features", fetch))
    monkeypatch.setattr(FeatureStore, "labels", reads("labels", labels))
    monkeypatch.setattr(FeatureStore, "lengths", reads("lengths", lengths))
    fit = bl.fit_classifier

    def counted_fit(*args):
        events.append("fit")
        return fit(*args)

    monkeypatch.setattr(bl, "fit_classifier", counted_fit)
    bl.fit_baselines(make_config(tiny_store), c_grid=GRID)
    assert events.count("fit") == 2 * len(GRID)
    last_fit = len(events) - 1 - events[::-1].index("fit")
    first_test = min(i for i, e in enumerate(events) if e.startswith("test"))
    assert first_test > last_fit
    assert {"test features", "test labels"} <= set(events)


def test_folds_report_mean_and_std_per_baseline(tmp_path) -> None:
    path = tmp_path / "store"
    write_synthetic_store(
        tiny_corpus(speakers=6, folds=3, n_train=120, n_validation=30, n_test=30), path
    )
    out = tmp_path / "cv"
    results = bl.run_baselines(make_config(path), out, folds="all", c_grid=(0.01, 1.0))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["folds"] == [1, 2, 3]
    for name in bl.BASELINES:
        runs = [
            json.loads((out / name / f"fold_{k}" / "metrics.json").read_text()) for k in (1, 2, 3)
        ]
        assert all(r["split_field"] == f"fold_{k}" for k, r in zip((1, 2, 3), runs, strict=True))
        saved = json.loads((out / name / "metrics.json").read_text())
        uas = [r["ua"] for r in runs]
        assert saved["ua"] == pytest.approx(np.mean(uas))
        assert saved["ua_std"] == pytest.approx(np.std(uas))
        assert np.sum(saved["confusion"]) == sum(r["n"] for r in runs)
        assert saved["C"] == {str(k): r["C"] for k, r in zip((1, 2, 3), runs, strict=True)}
        assert summary["baselines"][name]["ua"] == saved["ua"] == results[name]["ua"]
        assert (out / name / "confusion.png").is_file()
    one = bl.run_baselines(make_config(path), tmp_path / "one", folds=[2], c_grid=[1.0])
    assert list(one["logreg"]["folds"]) == ["2"]
    with pytest.raises(ConfigError, match=r"no fold\(s\) \[7\]"):
        bl.run_baselines(make_config(path), tmp_path / "seven", folds=[7])


def test_missing_modality_masked_or_dropped(tmp_path) -> None:
    path = tmp_path / "store"
    write_synthetic_store(tiny_corpus(missing={"visual": 0.3}), path)
    masked = bl.fit_baselines(make_config(path, data={"store": str(path), "missing": "mask"}))
    dropped = bl.fit_baselines(make_config(path))
    assert masked["logreg"]["n"] == 64 and masked["logreg"]["dropped_missing_modality"] == 0
    assert dropped["logreg"]["n"] + dropped["logreg"]["dropped_missing_modality"] == 64
    assert dropped["logreg"]["dropped_missing_modality"] > 0


def test_nan_features_name_the_utterance(tmp_path) -> None:
    path = tmp_path / "store"
    write_synthetic_store(tiny_corpus(), path)
    part = sorted((path / "parts").glob("part-*"))[0]
    arr = np.load(part / "acoustic.npy")
    arr[3, 0] = np.nan
    np.save(part / "acoustic.npy", arr)
    bad_id = pd.read_parquet(part / "index.parquet")["id"].iloc[3]
    with pytest.raises(DataError, match=bad_id):
        bl.fit_baselines(make_config(path), c_grid=[1.0])


def _config_file(tmp_path: Path, store: Path, **extra) -> str:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"data": {"store": str(store)}, **extra}))
    return str(path)


def test_cli_writes_metrics_per_baseline_in_the_default_folder(
    tiny_store, tmp_path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = _config_file(tmp_path, tiny_store)
    result = runner.invoke(
        app, ["baseline", config, "--c-grid", "0.01,1", "--set", "data.modalities=[acoustic]"]
    )
    assert result.exit_code == 0, result.output
    assert "logreg (C=" in result.output and "linear_svm (C=" in result.output
    out = tmp_path / "runs" / "exp" / "baselines"
    for name in bl.BASELINES:
        metrics = json.loads((out / name / "metrics.json").read_text())
        assert metrics["C"] in (0.01, 1.0) and metrics["features"] == {"acoustic": 24}
        assert (out / name / "confusion.png").is_file()
    assert json.loads((out / "summary.json").read_text())["C_grid"] == [0.01, 1.0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "data.modalitys=[acoustic]"], "data.modalitys"),
        (["--folds", "some"], "--folds takes 'all'"),
        (["--fold", "9"], "no fold_k field"),
        (["--c-grid", "a,b"], "--c-grid"),
        (["--c-grid", "0,1"], "positive"),
        (["--class-weight", "heavy"], "class weight"),
        (["--model", "forest"], "forest"),
        (["--set", "data.test_split=tst"], "tst"),
    ],
)
def test_cli_bad_input_exits_2_with_one_message(tiny_store, tmp_path, args, message) -> None:
    config = _config_file(tmp_path, tiny_store)
    result = runner.invoke(app, ["baseline", config, "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "o").exists()  # nothing left behind by a refused run


def test_cli_folds_print_mean_and_std(tmp_path) -> None:
    store = tmp_path / "store"
    write_synthetic_store(
        tiny_corpus(speakers=6, folds=3, n_train=60, n_validation=20, n_test=20), store
    )
    config = _config_file(tmp_path, store)
    out = tmp_path / "o"
    args = ["baseline", config, "--out", str(out), "--fold", "1", "--fold", "3"]
    result = runner.invoke(app, [*args, "--c-grid", "1", "--model", "logreg"])
    assert result.exit_code == 0, result.output
    assert "logreg: mean over 2 fold(s)" in result.output
    assert sorted(p.name for p in (out / "logreg").glob("fold_*")) == ["fold_1", "fold_3"]
    assert not (out / "linear_svm").exists()
    assert runner.invoke(app, ["baseline", "--help"]).exit_code == 0
