"""Model bundles: export of a tiny trained run, loading without pickle, archives, provenance."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

import emomatch
from emomatch.bundle import BundleError, bundle_listing, read_bundle, write_archive
from emomatch.errors import DataError, EmomatchError
from emomatch.runs import train_and_report
from emomatch.store import FeatureStore
from emomatch.store.provenance import check_provenance, first_difference
from emomatch.synthetic import write_synthetic_store
from tests.support.builders import make_config, tiny_corpus


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bundle")
    store = root / "store"
    write_synthetic_store(tiny_corpus(), store)
    run = root / "run"
    # the public face of `emomatch train`: a config object plus --set style overrides
    metrics = emomatch.train(make_config(store), out=run, overrides=["train.max_epochs=2"])
    assert metrics["split"] == "test" and (run / "metrics.json").is_file()
    written = emomatch.export(run, root / "bundle", archive=True)
    return {"root": root, "store": store, "run": run, **written}


def _test_rows(store: Path) -> tuple[dict, dict]:
    fs = FeatureStore(store)
    rows = fs.select("split", "test")
    mods = list(fs.modalities)
    return {m: fs.fetch(m, rows) for m in mods}, {m: fs.lengths(m, rows) for m in mods}


def test_bundle_holds_what_the_issue_lists_and_no_pickle(trained) -> None:
    folder = trained["folder"]
    names = bundle_listing(folder)
    assert set(names) == {
        "bundle.json",
        "config.yaml",
        "metrics.json",
        "README.md",
        "weights/seed_0.safetensors",
    }
    for name in names:
        data = (folder / name).read_bytes()
        # pickle protocol 2+ streams start with PROTO (0x80); torch zips hold data.pkl
        assert not data.startswith(b"\x80") and b"data.pkl" not in data, name
        # nothing machine-specific: the run's absolute folder appears nowhere
        assert str(trained["root"]).encode() not in data, name
    meta = json.loads((folder / "bundle.json").read_text())
    assert meta["labels"] == ["angry", "happy", "neutral", "sad"]
    assert meta["modalities"] == ["acoustic", "visual", "lexical"]
    assert meta["features"]["acoustic"]["extractor"] == {"name": "synthetic", "seed": 7}
    assert meta["shapes"]["visual"] == [6, 12]
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics == json.loads((trained["run"] / "metrics.json").read_text())
    card = (folder / "README.md").read_text()
    for heading in ("## Data", "## Metrics", "## Intended use", "## Limits"):
        assert heading in card
    assert f"{100 * metrics['ua']:.1f}" in card
    from safetensors.torch import load_file

    tensors = load_file(folder / "weights" / "seed_0.safetensors")
    assert "normalizer.acoustic_mean" in tensors
    assert any(k.startswith("model.classifier.") for k in tensors)


def test_predictions_from_features_equal_the_checkpoints(trained) -> None:
    from emomatch.data import select_split
    from emomatch.evaluation import load_checkpoint, predict_split

    p = emomatch.load(trained["folder"])
    assert p.labels == ["angry", "happy", "neutral", "sad"]
    features, lengths = _test_rows(trained["store"])
    probs = p.predict_features(features, lengths)
    module = load_checkpoint(trained["run"] / "checkpoints" / "best.ckpt")
    split = select_split(FeatureStore(trained["store"]), "split", "test", p.modalities, True)
    np.testing.assert_allclose(probs, predict_split(module, split), atol=1e-5)
    # lengths left out are read off the zero padding
    np.testing.assert_allclose(p.predict_features(features), probs, atol=1e-6)
    # a modality left out is missing: the model still answers, from the other two
    partial = p.predict_features({m: features[m] for m in ("acoustic", "lexical")})
    assert partial.shape == probs.shape and not np.allclose(partial, probs)
    with pytest.raises(DataError, match="media"):
        p.predict(text="a synthetic model has no extractors")


def test_archives_round_trip(trained, tmp_path) -> None:
    features, lengths = _test_rows(trained["store"])
    want = emomatch.load(trained["folder"]).predict_features(features, lengths)
    zipped = write_archive(trained["folder"], tmp_path / "model.zip")
    for archive in (trained["archive"], zipped):
        got = emomatch.load(archive).predict_features(features, lengths)
        np.testing.assert_array_equal(got, want)
        assert "weights/seed_0.safetensors" in bundle_listing(archive)


def test_broken_bundles_are_named(trained, tmp_path) -> None:
    with pytest.raises(BundleError, match="does not exist"):
        read_bundle(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BundleError, match="bundle.json is missing"):
        read_bundle(empty)
    bad = tmp_path / "bad"
    bad.mkdir()
    for p in trained["folder"].rglob("*"):
        if p.is_file():
            target = bad / p.relative_to(trained["folder"])
            target.parent.mkdir(exist_ok=True)
            target.write_bytes(p.read_bytes())
    (bad / "weights" / "seed_0.safetensors").write_bytes(b"not tensors")
    with pytest.raises(BundleError, match="seed_0.safetensors is not a readable safetensors"):
        read_bundle(bad)
    meta = json.loads((bad / "bundle.json").read_text())
    meta["format_version"] = 99
    (bad / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="format_version 99"):
        read_bundle(bad)
    # an archive whose member climbs out of it is refused, not extracted
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tf:
        payload = b"{}"
        info = tarfile.TarInfo("../bundle.json")
        info.size = len(payload)
        tf.addfile(info, io.BytesIO(payload))
    with pytest.raises(BundleError, match="outside the archive"):
        read_bundle(evil)
    with pytest.raises(EmomatchError, match="not an empty folder"):
        emomatch.export(trained["run"], trained["folder"])
    with pytest.raises(EmomatchError, match="holds no finished run"):
        emomatch.export(empty, tmp_path / "out")
    (tmp_path / "folds" / "fold_1").mkdir(parents=True)
    with pytest.raises(EmomatchError, match="one run per fold"):
        emomatch.export(tmp_path / "folds", tmp_path / "out")


def test_first_difference_names_the_setting() -> None:
    trained = {
        "lexical": {
            "kind": "sequence",
            "dim": 384,
            "max_len": 22,
            "extractor": {"name": "transformer", "pooling": "mean", "layer": -1},
        }
    }
    other = json.loads(json.dumps(trained))
    other["lexical"]["extractor"]["pooling"] = "first"
    assert first_difference(trained, trained) is None
    assert (
        first_difference(trained, other)
        == "lexical.pooling: store has 'first', model was trained on 'mean'"
    )
    other["lexical"]["max_len"] = 12
    assert first_difference(trained, other).startswith("lexical.max_len: store has 12")
    del other["lexical"]
    with pytest.raises(DataError, match="store has no lexical features"):
        check_provenance(trained, other)


def test_evaluate_refuses_a_store_made_differently(trained, tmp_path) -> None:
    same = tmp_path / "same"
    write_synthetic_store(tiny_corpus(), same)
    metrics = emomatch.evaluate(trained["run"], store=same, out=tmp_path / "eval")
    assert 0 <= metrics["ua"] <= 1
    other = tmp_path / "other"
    write_synthetic_store(tiny_corpus(seed=8), other)
    with pytest.raises(DataError, match=r"acoustic\.seed: store has 8, model was trained on 7"):
        emomatch.evaluate(trained["run"], store=other)


def test_seed_ensemble_exports_every_member(tmp_path) -> None:
    store = tmp_path / "store"
    write_synthetic_store(tiny_corpus(n_unlabeled=16), store)
    cfg = make_config(store, train={"max_epochs": 1}, loss={"unlabeled": False})
    train_and_report(cfg, tmp_path / "run", seeds=2)
    folder = emomatch.export(tmp_path / "run", tmp_path / "bundle")["folder"]
    meta = json.loads((folder / "bundle.json").read_text())
    assert [m["seed"] for m in meta["members"]] == [0, 1]
    ensemble = emomatch.load(folder)
    features, lengths = _test_rows(store)
    from emomatch.data import select_split
    from emomatch.evaluation import load_checkpoint, predict_split

    split = select_split(FeatureStore(store), "split", "test", ensemble.modalities, True)
    members = [
        predict_split(
            load_checkpoint(tmp_path / "run" / f"seed_{s}" / "checkpoints" / "best.ckpt"), split
        )
        for s in (0, 1)
    ]
    np.testing.assert_allclose(
        ensemble.predict_features(features, lengths), np.mean(members, axis=0), atol=1e-5
    )
    assert "ensemble of seeds 0, 1" in (folder / "README.md").read_text()


def test_training_refuses_an_unlabeled_store_made_differently(tmp_path) -> None:
    from emomatch.training.prepare import prepare_training_data

    labeled, pool = tmp_path / "labeled", tmp_path / "pool"
    write_synthetic_store(tiny_corpus(n_unlabeled=8), labeled)
    write_synthetic_store(tiny_corpus(n_unlabeled=8, seed=8), pool)
    cfg = make_config(labeled, data={"store": str(labeled), "unlabeled_store": str(pool)})
    with pytest.raises(DataError, match=rf"acoustic\.seed: {pool} has 8, {labeled} has 7"):
        prepare_training_data(cfg)


def test_import_emomatch_stays_light() -> None:
    import subprocess
    import sys

    probe = (
        "import sys, emomatch; "
        "print(sorted(m for m in ('torch', 'pytorch_lightning') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert callable(emomatch.load) and emomatch.Predictor.__name__ == "Predictor"
