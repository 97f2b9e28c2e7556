"""``emomatch import``: stores from .npz/.npy/CSV/Parquet arrays, ids matched to the manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from emomatch.cli import app
from emomatch.config import config_from_dict
from emomatch.corpora import write_manifest
from emomatch.errors import DataError
from emomatch.importing import import_features, parse_split_rule
from emomatch.store import FeatureStore
from emomatch.training.prepare import prepare_training_data

CLASSES = ("angry", "happy", "sad")


def manifest(tmp_path: Path, n: int = 24, split: bool = True) -> Path:
    rows = {
        "id": [f"u{i:02d}" for i in range(n)],
        "audio": [""] * n,
        "video": [""] * n,
        "text": [""] * n,
        "start": [""] * n,
        "end": [""] * n,
        "speaker": [f"{i % 4:02d}" for i in range(n)],
        "label": [CLASSES[i % 3] for i in range(n)],
    }
    if split:
        rows["split"] = ["test" if i % 4 == 3 else "train" for i in range(n)]
    df = pd.DataFrame(rows)
    path = tmp_path / "manifest.csv"
    if split:
        write_manifest(df, path)
    else:
        df.to_csv(path, index=False)
    return path


def arrays(n: int = 24, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = np.array([f"u{i:02d}" for i in range(n)])[::-1]  # another order than the manifest
    lengths = rng.integers(1, 6, n)
    seq = rng.normal(size=(n, 5, 3)).astype(np.float32)
    seq[np.arange(5)[None, :] >= lengths[:, None]] = 0.0
    return {
        "ids": ids,
        "au": rng.normal(size=(n, 7)).astype(np.float32),
        "frames": seq,
        "frames_lengths": lengths,
    }


def test_npz_vector_and_sequence_matched_by_id(tmp_path) -> None:
    data = arrays()
    np.savez(tmp_path / "f.npz", **data)
    summary = import_features(
        tmp_path / "f.npz",
        manifest(tmp_path),
        tmp_path / "store",
        {"visual": "au", "acoustic": "frames"},
        description="made by hand",
    )
    assert summary.written == 24
    store = FeatureStore(tmp_path / "store")
    assert store.modalities["visual"].shape == (7,)
    assert store.modalities["acoustic"].shape == (5, 3)
    assert store.modalities["visual"].extractor["name"] == "imported"
    assert store.modalities["visual"].extractor["description"] == "made by hand"
    assert len(store.modalities["visual"].extractor["sha256"]) == 64
    rows = store.select("split", "train")
    position = {str(u): i for i, u in enumerate(data["ids"])}
    for row in rows[:5]:
        uid = store.ids(np.array([row]))[0]
        src = position[uid]
        np.testing.assert_array_equal(store.fetch("visual", np.array([row]))[0], data["au"][src])
        assert store.lengths("acoustic", np.array([row]))[0] == data["frames_lengths"][src]
    assert len(rows) == 18


def test_rerun_skips_what_is_written(tmp_path) -> None:
    np.savez(tmp_path / "f.npz", **arrays())
    args = (tmp_path / "f.npz", manifest(tmp_path), tmp_path / "store", {"visual": "au"})
    import_features(*args)
    again = import_features(*args)
    assert (again.written, again.skipped) == (0, 24)


def test_missing_and_extra_ids_are_named(tmp_path) -> None:
    data = arrays()
    data["ids"] = np.array([*data["ids"][:-1], "stranger"])
    np.savez(tmp_path / "f.npz", **data)
    with pytest.raises(DataError) as err:
        import_features(tmp_path / "f.npz", manifest(tmp_path), tmp_path / "s", {"visual": "au"})
    message = str(err.value)
    assert "1 manifest id(s) have no features: 'u00'" in message
    assert "1 id(s) are not in the manifest: 'stranger'" in message
    assert not (tmp_path / "s").exists()


def test_object_arrays_are_never_unpickled(tmp_path) -> None:
    data = arrays()
    np.savez(tmp_path / "f.npz", ids=data["ids"], au=np.array([{"x": 1}] * 24, dtype=object))
    with pytest.raises(DataError, match="cannot be read safely"):
        import_features(tmp_path / "f.npz", manifest(tmp_path), tmp_path / "s", {"visual": "au"})


def test_csv_columns_and_parquet_lists(tmp_path) -> None:
    data = arrays()
    table = pd.DataFrame({"id": data["ids"]})
    for j in range(7):
        table[f"au_{j}"] = data["au"][:, j]
    table.to_csv(tmp_path / "f.csv", index=False)
    import_features(tmp_path / "f.csv", manifest(tmp_path), tmp_path / "csv", {"visual": "au"})
    # Parquet: a list column per modality, sequences as lists of frames
    seqs = [data["frames"][i, : data["frames_lengths"][i]].tolist() for i in range(24)]
    pd.DataFrame({"id": data["ids"], "au": list(data["au"]), "frames": seqs}).to_parquet(
        tmp_path / "f.parquet"
    )
    import_features(
        tmp_path / "f.parquet",
        manifest(tmp_path),
        tmp_path / "pq",
        {"visual": "au", "acoustic": "frames"},
    )
    a, b = FeatureStore(tmp_path / "csv"), FeatureStore(tmp_path / "pq")
    rows = np.arange(24)
    assert a.ids(rows) == b.ids(rows)
    np.testing.assert_allclose(a.fetch("visual", rows), b.fetch("visual", rows), rtol=1e-6)
    # ragged sequences come back padded, with their lengths
    order = {uid: i for i, uid in enumerate(data["ids"])}
    src = [order[u] for u in b.ids(rows)]
    np.testing.assert_array_equal(b.lengths("acoustic", rows), data["frames_lengths"][src])
    width = b.modalities["acoustic"].max_len
    np.testing.assert_allclose(b.fetch("acoustic", rows), data["frames"][src][:, :width])


def test_long_csv_gives_sequences_with_lengths(tmp_path) -> None:
    data = arrays()
    long = [
        {"id": uid, "frame": t, **{f"f_{j}": data["frames"][i, t, j] for j in range(3)}}
        for i, uid in enumerate(data["ids"])
        for t in range(int(data["frames_lengths"][i]))
    ]
    pd.DataFrame(long).sample(frac=1.0, random_state=0).to_csv(tmp_path / "f.csv", index=False)
    import_features(
        tmp_path / "f.csv",
        manifest(tmp_path),
        tmp_path / "s",
        {"acoustic": "f"},
        frame_column="frame",
    )
    store = FeatureStore(tmp_path / "s")
    order = {uid: i for i, uid in enumerate(data["ids"])}
    rows = np.arange(24)
    src = [order[u] for u in store.ids(rows)]
    np.testing.assert_array_equal(store.lengths("acoustic", rows), data["frames_lengths"][src])
    got = store.fetch("acoustic", rows)
    width = store.modalities["acoustic"].max_len
    np.testing.assert_allclose(got, data["frames"][src][:, :width], rtol=1e-6)


def test_npy_rows_follow_the_manifest(tmp_path) -> None:
    values = np.arange(24 * 4, dtype=np.float32).reshape(24, 4)
    np.save(tmp_path / "f.npy", values)
    import_features(tmp_path / "f.npy", manifest(tmp_path), tmp_path / "s", {"acoustic": "x"})
    store = FeatureStore(tmp_path / "s")
    row = store.index.index[store.index["id"] == "u05"].to_numpy()
    np.testing.assert_array_equal(store.fetch("acoustic", row)[0], values[5])
    np.save(tmp_path / "short.npy", values[:20])
    with pytest.raises(DataError, match="20 rows for 24 ids"):
        import_features(
            tmp_path / "short.npy", manifest(tmp_path), tmp_path / "t", {"acoustic": "x"}
        )


def test_split_rules_for_a_manifest_without_splits(tmp_path) -> None:
    np.savez(tmp_path / "f.npz", **arrays())
    rules = [parse_split_rule("test=speaker:03"), parse_split_rule("validation=speaker:02")]
    import_features(
        tmp_path / "f.npz",
        manifest(tmp_path, split=False),
        tmp_path / "s",
        {"visual": "au"},
        split_rules=rules,
    )
    store = FeatureStore(tmp_path / "s")
    assert store.index.groupby("split")["speaker"].unique().map(list).to_dict() == {
        "test": ["03"],
        "train": ["00", "01"],
        "validation": ["02"],
    }
    with pytest.raises(DataError, match="no manifest row has speaker"):
        import_features(
            tmp_path / "f.npz",
            manifest(tmp_path, split=False),
            tmp_path / "t",
            {"visual": "au"},
            split_rules=[parse_split_rule("test=speaker:99")],
        )
    with pytest.raises(DataError, match="expected SPLIT=COLUMN"):
        parse_split_rule("test=speaker")


def test_cli_import_info_and_a_vector_visual_model(tmp_path) -> None:
    np.savez(tmp_path / "f.npz", **arrays(n=48))
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "import",
            str(tmp_path / "f.npz"),
            "--manifest",
            str(manifest(tmp_path, n=48)),
            "--out",
            str(tmp_path / "s"),
            "--map",
            "visual=au",
            "--map",
            "acoustic=frames",
        ],
    )
    assert result.exit_code == 0, result.output
    info = runner.invoke(app, ["info", str(tmp_path / "s")])
    assert "48 utterances" in info.output
    assert "visual: vector [7]" in info.output and "acoustic: sequence [5, 3]" in info.output
    bad = runner.invoke(
        app,
        ["import", str(tmp_path / "f.npz"), "--manifest", str(tmp_path / "manifest.csv")]
        + ["--out", str(tmp_path / "t"), "--map", "visual=nope"],
    )
    assert bad.exit_code == 2 and "error:" in bad.output and "no array 'nope'" in bad.output
    cfg = config_from_dict(
        {
            "data": {
                "store": str(tmp_path / "s"),
                "modalities": ["acoustic", "visual"],
                "validation_split": "train",
                "train_fraction": 0.5,
                "unlabeled_pool": "train_rest",
            },
        }
    )
    data = prepare_training_data(cfg)
    assert data.unlabeled is not None
    assert len(data.train) + len(data.unlabeled) == 36
    assert not set(data.train.rows) & set(data.unlabeled.rows)
    # normalisation on the labelled rows and the pool: the mean over all 36 training rows
    pooled = prepare_training_data(
        cfg.model_copy(
            update={"data": cfg.data.model_copy(update={"normalize_on": "labeled_and_pool"})}
        )
    )
    store = FeatureStore(tmp_path / "s")
    everything = store.fetch("visual", store.select("split", "train"))
    np.testing.assert_allclose(pooled.stats["visual"][0], everything.mean(0), rtol=1e-5, atol=1e-6)
    assert not np.allclose(data.stats["visual"][0], everything.mean(0))


def test_a_model_on_imported_features_says_which_features_it_needs(tmp_path) -> None:
    from emomatch.extract.provenance import extractor_options

    np.savez(tmp_path / "f.npz", **arrays())
    import_features(
        tmp_path / "f.npz", manifest(tmp_path), tmp_path / "s", {"visual": "au"}, description="AUs"
    )
    recorded = FeatureStore(tmp_path / "s").modalities["visual"]
    with pytest.raises(DataError, match=r"imported from 'f.npz' \(array 'au', sha256 .*AUs"):
        extractor_options("visual", {"kind": "vector", "extractor": recorded.extractor})


def test_pool_from_the_training_rest_is_one_store(tmp_path) -> None:
    from emomatch.errors import ConfigError

    with pytest.raises(ConfigError, match="unlabeled_pool: train_rest"):
        config_from_dict(
            {
                "data": {
                    "store": str(tmp_path),
                    "unlabeled_store": str(tmp_path),
                    "unlabeled_pool": "train_rest",
                }
            }
        )
