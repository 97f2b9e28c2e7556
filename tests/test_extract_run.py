"""The extraction run: store contents, bad items, resume, workers, Ray."""

from __future__ import annotations

import json

import numpy as np
import pytest

from emomatch.errors import StoreError
from emomatch.extract.mediawrite import write_wav
from emomatch.extract.run import run_extraction
from emomatch.store import FeatureStore
from tests.support.extract_fakes import HashedWords, NoFace, WavStats
from tests.support.manifests import make_manifest


def extractors() -> dict:
    return {"acoustic": WavStats(), "lexical": HashedWords()}


def test_store_holds_good_items_and_report_names_bad_ones(tmp_path) -> None:
    make_manifest(tmp_path)
    summary = run_extraction(
        tmp_path / "manifest.csv", tmp_path / "store", extractors(), progress=False, chunk_size=5
    )
    assert (summary.done, summary.failed, summary.skipped) == (8, 4, 0)
    store = FeatureStore(tmp_path / "store")
    assert sorted(store.index["id"]) == sorted(f"u{i}" for i in (0, 5, 6, 7, 8, 9, 10, 11))
    assert store.fields == ["split", "fold_1"]
    assert store.classes == ["ang", "neu"]
    row = int(np.flatnonzero(store.index["id"] == "u5")[0])
    assert store.fetch("acoustic", np.array([row]))[0, 0] == pytest.approx(1600 * 6 / 16000)
    assert store.lengths("lexical", np.array([row]))[0] == 4
    errors = [json.loads(line) for line in (tmp_path / "store" / "errors.jsonl").open()]
    reasons = {e["id"]: e["reason"] for e in errors}
    assert "missing" in reasons["u1"] and "zero-length" in reasons["u2"]
    assert "empty transcript" in reasons["u3"] and "corrupt" in reasons["u4"]
    assert summary.media_seconds > 0 and summary.realtime_factor > 0


def test_rerun_skips_finished_items_and_retries_failed(tmp_path) -> None:
    df = make_manifest(tmp_path)
    run_extraction(tmp_path / "manifest.csv", tmp_path / "store", extractors(), progress=False)
    parts_before = sorted(p.name for p in (tmp_path / "store" / "parts").iterdir())
    write_wav(tmp_path / "media" / "nowhere.wav", 0.1 * np.ones(1600))  # the user fixes one
    again = run_extraction(
        tmp_path / "manifest.csv", tmp_path / "store", extractors(), progress=False
    )
    assert (again.done, again.skipped, again.failed) == (1, 8, 3)
    parts_after = sorted(p.name for p in (tmp_path / "store" / "parts").iterdir())
    assert parts_after[: len(parts_before)] == parts_before
    assert "u1" in set(FeatureStore(tmp_path / "store").index["id"])
    assert len(df) == 12


def test_store_of_other_settings_is_refused(tmp_path) -> None:
    make_manifest(tmp_path)
    run_extraction(tmp_path / "manifest.csv", tmp_path / "store", extractors(), progress=False)
    with pytest.raises(StoreError, match="other modalities"):
        run_extraction(
            tmp_path / "manifest.csv",
            tmp_path / "store",
            {"acoustic": WavStats(), "lexical": HashedWords(max_words=9)},
            progress=False,
        )


def test_visual_missing_is_recorded_not_failed(tmp_path) -> None:
    make_manifest(tmp_path)
    summary = run_extraction(
        tmp_path / "manifest.csv",
        tmp_path / "store",
        {"acoustic": WavStats(), "visual": NoFace()},
        progress=False,
    )
    store = FeatureStore(tmp_path / "store")
    assert summary.done == len(store) == 9  # the empty transcript no longer matters
    assert not store.present("visual", np.arange(len(store))).any()


def test_worker_processes_write_the_same_store(tmp_path) -> None:
    make_manifest(tmp_path)
    run_extraction(tmp_path / "manifest.csv", tmp_path / "one", extractors(), progress=False)
    run_extraction(
        tmp_path / "manifest.csv",
        tmp_path / "two",
        extractors(),
        progress=False,
        workers=2,
        chunk_size=3,
    )
    a, b = FeatureStore(tmp_path / "one"), FeatureStore(tmp_path / "two")
    order_a = np.argsort(a.index["id"].to_numpy())
    order_b = np.argsort(b.index["id"].to_numpy())
    for m in ("acoustic", "lexical"):
        assert np.array_equal(a.fetch(m, order_a), b.fetch(m, order_b))


def test_crash_loses_only_items_in_flight_and_resume_finishes(tmp_path) -> None:
    from emomatch.errors import WorkerError

    make_manifest(tmp_path, n=12)
    crashing = {"acoustic": WavStats(crash_on="u9"), "lexical": HashedWords()}
    with pytest.raises(WorkerError, match="worker process died.*run the same command again"):
        run_extraction(
            tmp_path / "manifest.csv",
            tmp_path / "store",
            crashing,
            progress=False,
            workers=2,
            chunk_size=2,
        )
    kept = (
        set(FeatureStore(tmp_path / "store").index["id"])
        if (tmp_path / "store" / "parts").exists()
        and any((tmp_path / "store" / "parts").glob("part-*"))
        else set()
    )
    summary = run_extraction(
        tmp_path / "manifest.csv", tmp_path / "store", extractors(), progress=False
    )
    store = FeatureStore(tmp_path / "store")
    assert summary.skipped == len(kept)
    assert len(store) == 8 and store.index["id"].is_unique


def test_ray_engine_writes_the_same_store(tmp_path) -> None:
    pytest.importorskip("ray")
    make_manifest(tmp_path)
    run_extraction(tmp_path / "manifest.csv", tmp_path / "local", extractors(), progress=False)
    summary = run_extraction(
        tmp_path / "manifest.csv",
        tmp_path / "ray",
        extractors(),
        progress=False,
        engine="ray",
        workers=2,
        chunk_size=3,
    )
    assert summary.done == 8
    a, b = FeatureStore(tmp_path / "local"), FeatureStore(tmp_path / "ray")
    assert sorted(a.index["id"]) == sorted(b.index["id"])
    order_a = np.argsort(a.index["id"].to_numpy())
    order_b = np.argsort(b.index["id"].to_numpy())
    assert np.array_equal(a.fetch("lexical", order_a), b.fetch("lexical", order_b))
