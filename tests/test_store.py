import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from emomatch.errors import StoreError
from emomatch.store import FeatureStore, ModalitySpec, StoreWriter

SPECS = {
    "acoustic": ModalitySpec(kind="vector", dim=3, extractor={"name": "x", "version": "1"}),
    "lexical": ModalitySpec(kind="sequence", dim=2, max_len=4, extractor={"name": "y"}),
}


def part(ids: list[str], split: str = "train") -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    n = len(ids)
    index = pd.DataFrame(
        {
            "id": ids,
            "speaker": "s1",
            "label": ["a" if i % 2 else "b" for i in range(n)],
            "split": split,
            "acoustic_length": 1,
            "lexical_length": [1 + i % 4 for i in range(n)],
        }
    )
    arrays = {
        "acoustic": np.arange(n * 3, dtype=np.float32).reshape(n, 3),
        "lexical": np.ones((n, 4, 2), dtype=np.float32),
    }
    return index, arrays


def test_round_trip_over_several_parts(tmp_path) -> None:
    writer = StoreWriter(tmp_path / "s", ["a", "b"], SPECS)
    writer.write_part(*part(["u0", "u1", "u2"]))
    writer.write_part(*part(["u3", "u4"], split="test"))
    store = FeatureStore(tmp_path / "s")
    assert len(store) == 5
    assert store.ids(store.select("split", "test")) == ["u3", "u4"]
    rows = np.array([4, 0, 3])
    got = store.fetch("acoustic", rows)
    assert got.tolist() == [[3, 4, 5], [0, 1, 2], [0, 1, 2]]
    assert store.lengths("lexical", rows).tolist() == [2, 1, 1]
    assert store.labels(np.array([0, 1])).tolist() == [1, 0]
    assert got.dtype == np.float32
    assert writer.done_ids() == {"u0", "u1", "u2", "u3", "u4"}


def test_reopening_with_other_settings_is_refused(tmp_path) -> None:
    StoreWriter(tmp_path / "s", ["a", "b"], SPECS)
    other = dict(SPECS, acoustic=ModalitySpec(kind="vector", dim=3, extractor={"name": "z"}))
    with pytest.raises(StoreError, match="other modalities"):
        StoreWriter(tmp_path / "s", ["a", "b"], other)


def test_interrupted_part_is_invisible_and_cleaned(tmp_path) -> None:
    writer = StoreWriter(tmp_path / "s", ["a", "b"], SPECS)
    writer.write_part(*part(["u0", "u1"]))
    (tmp_path / "s" / "parts" / ".tmp-crashed").mkdir()
    assert len(FeatureStore(tmp_path / "s")) == 2
    StoreWriter(tmp_path / "s", ["a", "b"], SPECS)
    assert not (tmp_path / "s" / "parts" / ".tmp-crashed").exists()


def test_bad_parts_are_refused_with_the_reason(tmp_path) -> None:
    writer = StoreWriter(tmp_path / "s", ["a", "b"], SPECS)
    index, arrays = part(["u0", "u1"])
    with pytest.raises(StoreError, match="shape"):
        writer.write_part(index, dict(arrays, acoustic=np.zeros((2, 4), np.float32)))
    bad = index.copy()
    bad.loc[0, "label"] = "zzz"
    with pytest.raises(StoreError, match="zzz"):
        writer.write_part(bad, arrays)
    with pytest.raises(StoreError, match="duplicate"):
        writer.write_part(*part(["u0", "u0"]))


def test_not_a_store_and_wrong_version(tmp_path) -> None:
    with pytest.raises(StoreError, match="store.json is missing"):
        FeatureStore(tmp_path)
    StoreWriter(tmp_path / "s", ["a", "b"], SPECS).write_part(*part(["u0", "u1"]))
    meta = json.loads((tmp_path / "s" / "store.json").read_text())
    meta["format_version"] = 99
    (tmp_path / "s" / "store.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="format_version 99"):
        FeatureStore(tmp_path / "s")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "expected a JSON object"),
        ('{"format": "emomatch-feature-store", "format_version": 1}', "'classes' is missing"),
        ("\xff\xfe", "not valid JSON"),
    ],
)
def test_malformed_store_json_is_named(tmp_path, text, message) -> None:
    StoreWriter(tmp_path / "s", ["a", "b"], SPECS).write_part(*part(["u0", "u1"]))
    (tmp_path / "s" / "store.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(StoreError, match=message):
        FeatureStore(tmp_path / "s")


def test_writer_refuses_ids_already_in_the_store(tmp_path) -> None:
    with StoreWriter(tmp_path / "s", ["a", "b"], SPECS) as writer:
        writer.write_part(*part(["u0", "u1"]))
        with pytest.raises(StoreError, match="'u1' is already in"):
            writer.write_part(*part(["u1", "u2"]))
    assert len(FeatureStore(tmp_path / "s")) == 2


def test_a_part_that_cannot_be_read_now_is_never_dropped(tmp_path, monkeypatch) -> None:
    """Permissions or an I/O error are not damage: the writer stops instead of repairing."""
    import errno

    from emomatch.store import parts as store_parts
    from emomatch.store.spec import PartUnreadableError

    with StoreWriter(tmp_path / "s", ["a", "b"], SPECS) as writer:
        writer.write_part(*part(["u0", "u1"]))
    real = store_parts.open_array

    def denied(file, *args, **kwargs):
        if str(file).endswith("lexical.npy"):
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real(file, *args, **kwargs)

    monkeypatch.setattr(store_parts, "open_array", denied)
    with pytest.raises(PartUnreadableError, match="cannot read .*lexical.npy: Permission denied"):
        StoreWriter(tmp_path / "s", ["a", "b"], SPECS)
    with pytest.raises(StoreError, match="Permission denied"):
        FeatureStore(tmp_path / "s")
    monkeypatch.setattr(store_parts, "open_array", real)
    assert len(FeatureStore(tmp_path / "s")) == 2


def test_float16_store_reads_back_as_float32_and_refuses_overflow(tmp_path) -> None:
    half = {m: dataclasses.replace(s, dtype="float16") for m, s in SPECS.items()}
    writer = StoreWriter(tmp_path / "s", ["a", "b"], half)
    index, arrays = part(["u0", "u1", "u2"])
    arrays["lexical"] = np.random.default_rng(0).normal(size=(3, 4, 2)).astype(np.float32)
    writer.write_part(index, arrays)
    assert np.load(tmp_path / "s/parts/part-00000/lexical.npy").dtype == np.float16
    store = FeatureStore(tmp_path / "s")
    got = store.fetch("lexical", np.array([2, 0]))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, arrays["lexical"][[2, 0]], rtol=1e-3, atol=1e-3)
    assert not np.array_equal(got, arrays["lexical"][[2, 0]])  # it really went through float16
    index, arrays = part(["u3", "u4"])
    arrays["acoustic"][1, 2] = 1e6
    with pytest.raises(StoreError, match="acoustic features hold 1e\\+06, beyond the range"):
        writer.write_part(index, arrays)
    with pytest.raises(StoreError, match="dtype must be one of"):
        ModalitySpec(kind="vector", dim=3, dtype="int8")


def test_float32_spec_keeps_the_store_json_of_earlier_versions(tmp_path) -> None:
    StoreWriter(tmp_path / "s", ["a", "b"], SPECS)
    meta = json.loads((tmp_path / "s" / "store.json").read_text())
    assert "dtype" not in meta["modalities"]["acoustic"]
    StoreWriter(tmp_path / "s", ["a", "b"], SPECS)  # reopened: the same settings
    half = dict(SPECS, acoustic=dataclasses.replace(SPECS["acoustic"], dtype="float16"))
    with pytest.raises(StoreError, match="other modalities"):
        StoreWriter(tmp_path / "s", ["a", "b"], half)


def test_fetch_reads_runs_of_rows_in_the_order_asked_and_names_a_truncated_file(tmp_path) -> None:
    writer = StoreWriter(tmp_path / "s", ["a", "b"], SPECS)
    writer.write_part(*part([f"u{i}" for i in range(10)]))
    store = FeatureStore(tmp_path / "s")
    rows = np.array([9, 3, 4, 5, 0, 8, 4])
    expected = np.arange(30, dtype=np.float32).reshape(10, 3)[rows]
    assert np.array_equal(store.fetch("acoustic", rows), expected)
    assert [len(r) for r, _ in store.iter_chunks("acoustic", np.arange(10), chunk=4)] == [4, 4, 2]
    assert store.chunk_rows("lexical", budget_bytes=64) == 2  # 4 x 2 float32 = 32 bytes a row
    npy = tmp_path / "s/parts/part-00000/acoustic.npy"
    npy.write_bytes(npy.read_bytes()[:-12])  # the last row gone after the store was opened
    with pytest.raises(StoreError, match="acoustic.npy: rows 9..9 end past the end"):
        store.fetch("acoustic", np.array([9]))
