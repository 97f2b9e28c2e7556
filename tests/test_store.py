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


def test_round_trip_over_several_parts_is_memory_mapped(tmp_path) -> None:
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
    assert isinstance(store._open_arrays()[0]["acoustic"], np.memmap)
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

    from emomatch.store.format import PartUnreadableError

    with StoreWriter(tmp_path / "s", ["a", "b"], SPECS) as writer:
        writer.write_part(*part(["u0", "u1"]))
    real = np.load

    def denied(file, *args, **kwargs):
        if str(file).endswith("lexical.npy"):
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real(file, *args, **kwargs)

    monkeypatch.setattr(np, "load", denied)
    with pytest.raises(PartUnreadableError, match="cannot read .*lexical.npy: Permission denied"):
        StoreWriter(tmp_path / "s", ["a", "b"], SPECS)
    with pytest.raises(StoreError, match="Permission denied"):
        FeatureStore(tmp_path / "s")
    monkeypatch.setattr(np, "load", real)
    assert len(FeatureStore(tmp_path / "s")) == 2
