"""Faults against the feature store and `emomatch extract`: kills at random moments, two writers
at once, a full disk, a read-only folder, damaged stores, empty manifests.

The fast variants run in `make test`; EMOMATCH_LONG_FAULTS=1 runs more kill points (see
docs/reliability.md). Kills and races run the real command in processes of their own
(tests/store_faults_driver.py registers two small extractors for it).
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from emomatch.cli import app
from emomatch.errors import DataError, LockedError, StoreError, WorkerError, WriteError
from emomatch.extract.run import run_extraction
from emomatch.files import atomic_path, atomic_write_text, hold_lock, lock_holder
from emomatch.store import FeatureStore
from emomatch.store.spec import StoreDamagedError
from tests.support.extract_fakes import HashedWords, WavStats
from tests.support.manifests import make_manifest
from tests.support.store_faults_driver import extract_args, register

ROOT = Path(__file__).resolve().parents[1]
LONG = os.environ.get("EMOMATCH_LONG_FAULTS") == "1"
N_ITEMS = 40  # 36 extractable, 4 bad (see make_manifest)
DRIVER = "import tests.support.store_faults_driver as d; d.main()"
runner = CliRunner()


def start(args: list[str]) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, so workers can be killed with it
    )


def finish(proc: subprocess.Popen[str], timeout: float = 180) -> tuple[int, str]:
    """Exit status and what the run printed: its summary (stdout) after its log (stderr)."""
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        kill_group(proc)
    return proc.returncode, err + out


def kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def contents(path: Path) -> dict[str, tuple]:
    """id -> every value the store holds for it (row order and part layout left out)."""
    store = FeatureStore(path)
    assert store.index["id"].is_unique
    rows = np.arange(len(store))
    acoustic = store.fetch("acoustic", rows)
    lexical = store.fetch("lexical", rows)
    out = {}
    for r, uid in enumerate(store.ids(rows)):
        row = store.index.iloc[r]
        out[uid] = (
            row["speaker"],
            row["label"],
            row["split"],
            row["fold_1"],
            int(row["lexical_length"]),
            acoustic[r].tobytes(),
            lexical[r].tobytes(),
        )
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, tuple]]:
    """A 40-row manifest and what an uninterrupted, single-process extraction stores for it."""
    root = tmp_path_factory.mktemp("corpus")
    make_manifest(root, n=N_ITEMS)
    run_extraction(
        root / "manifest.csv",
        root / "reference",
        {"acoustic": WavStats(), "lexical": HashedWords()},
        progress=False,
        chunk_size=7,
    )
    reference = contents(root / "reference")
    assert len(reference) == N_ITEMS - 4
    return root / "manifest.csv", reference


def assert_readable_or_empty(path: Path) -> set[str]:
    """An interrupted store is readable (or honestly holds nothing yet): never damaged."""
    try:
        store = FeatureStore(path)
    except StoreDamagedError:
        raise
    except StoreError as exc:
        assert "holds no finished part" in str(exc) or "store.json is missing" in str(exc), exc
        assert not any((path / "parts").glob("part-*")) if (path / "parts").exists() else True
        return set()
    assert store.index["id"].is_unique
    return set(store.index["id"])


# -- shared helpers ------------------------------------------------------------------------


def test_atomic_writes_get_ordinary_modes_and_never_leave_half_a_file(tmp_path) -> None:
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)
    atomic_write_text(tmp_path / "a.json", "first")
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    with pytest.raises(OSError), atomic_path(tmp_path / "a.json") as tmp:
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert (tmp_path / "a.json").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_lock_refuses_a_second_process_and_is_freed_when_the_holder_is_killed(tmp_path) -> None:
    code = (
        "import sys, time\nfrom emomatch.files import hold_lock\n"
        f"with hold_lock({str(tmp_path)!r}, 'store'):\n"
        "    print('locked', flush=True)\n    time.sleep(120)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        busy = rf"another emomatch process \(pid {holder.pid}\)"
        with pytest.raises(LockedError, match=busy), hold_lock(tmp_path, "store"):
            pass
        assert lock_holder(tmp_path) == holder.pid
        holder.kill()
        holder.wait()
        with hold_lock(tmp_path, "store"):
            assert lock_holder(tmp_path) == os.getpid()
        assert lock_holder(tmp_path) is None
    finally:
        holder.kill()
        holder.wait()


def test_file_system_without_locks_warns_and_writes(tmp_path, monkeypatch, caplog) -> None:
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with hold_lock(tmp_path / "s", "store"):
        atomic_write_text(tmp_path / "s" / "x", "written")
    assert "without file locks" in caplog.text and "would not be stopped" in caplog.text
    assert (tmp_path / "s" / "x").read_text() == "written"


# -- two writers -----------------------------------------------------------------------------


def test_second_extract_on_one_store_is_refused_and_the_first_completes(corpus, tmp_path) -> None:
    manifest, reference = corpus
    out = tmp_path / "store"
    first = start(extract_args(manifest, out, delay=0.1))
    try:
        deadline = time.monotonic() + 120
        while lock_holder(out) != first.pid:
            assert first.poll() is None and time.monotonic() < deadline, "first never locked"
            time.sleep(0.02)
        # A reader meanwhile is told that the store is being written.
        info = runner.invoke(app, ["info", str(out)])
        assert f"being written now by pid {first.pid}" in info.output
        second = start(extract_args(manifest, out, delay=0.0, workers=1))
        rc2, err2 = finish(second)
        rc1, err1 = finish(first)
    finally:
        kill_group(first)
    assert rc2 == 2, err2
    assert f"is being written by another emomatch process (pid {first.pid})" in err2
    assert "Traceback" not in err2
    assert rc1 == 0, err1
    assert contents(out) == reference
    assert not list((out / "parts").glob(".tmp-*"))


def test_synth_into_an_existing_store_is_refused_and_leaves_it_intact(corpus, tmp_path) -> None:
    manifest, reference = corpus
    out = tmp_path / "store"
    shutil.copytree(manifest.parent / "reference", out)
    result = runner.invoke(app, ["synth", str(out), "--n-unlabeled", "10"])
    assert result.exit_code == 2
    assert "already holds a feature store" in result.output
    assert contents(out) == reference
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    result = runner.invoke(app, ["synth", str(tmp_path / "other")])
    assert result.exit_code == 2 and "not an empty folder" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", "store"]


def test_interrupted_synth_leaves_no_half_store(tmp_path, monkeypatch) -> None:
    from emomatch.store import StoreWriter
    from emomatch.synthetic import SyntheticCorpus, write_synthetic_store

    real = StoreWriter.write_part
    calls = []

    def failing(self, index, arrays):
        calls.append(1)
        if len(calls) == 3:
            raise WriteError("disk full (simulated)")
        return real(self, index, arrays)

    monkeypatch.setattr(StoreWriter, "write_part", failing)
    corpus = SyntheticCorpus(n_train=20, n_validation=10, n_test=10, n_unlabeled=30)
    with pytest.raises(WriteError):
        write_synthetic_store(corpus, tmp_path / "synth", part_size=8)
    assert list(tmp_path.iterdir()) == []  # neither a partial store nor its temporary folder
    monkeypatch.setattr(StoreWriter, "write_part", real)
    assert len(write_synthetic_store(corpus, tmp_path / "synth", part_size=8)) == 70


SLOW_SYNTH = """
import sys, time
from emomatch.store import StoreWriter
from emomatch.synthetic import SyntheticCorpus, write_synthetic_store
real = StoreWriter.write_part
def slow(self, index, arrays):
    time.sleep(0.05)
    return real(self, index, arrays)
StoreWriter.write_part = slow
write_synthetic_store(SyntheticCorpus(n_unlabeled=2000), sys.argv[1], part_size=16)
"""


def test_killed_synth_leaves_no_store_and_its_leftover_is_cleaned(tmp_path) -> None:
    target = tmp_path / "synth"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SYNTH, str(target)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob(".synth.tmp-*/parts/part-*"))) < 2:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        proc.kill()
        proc.wait()
    finally:
        proc.kill()
    assert not target.exists()
    assert len(list(tmp_path.glob(".synth.tmp-*"))) == 1  # the killed writer's, hidden
    result = runner.invoke(app, ["synth", str(target), "--n-unlabeled", "20"])
    assert result.exit_code == 0, result.output
    assert [p.name for p in tmp_path.iterdir()] == ["synth"]
    assert len(FeatureStore(target)) == 520


# -- kills -----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(12) if LONG else (0, 1, 2))
def test_sigkill_at_a_random_moment_then_rerun_gives_every_item_once(
    corpus, tmp_path, seed
) -> None:
    """Killed at a random moment with 2 workers, then run again: every item once, the same
    values as an uninterrupted run. Even seeds kill once k parts exist (k random: during
    extraction), odd seeds after a random time (also during start-up). Seeds 2 mod 4 send
    SIGINT to the process group (Ctrl-C in a terminal); the others SIGKILL, seeds 0 mod 3 to
    the main process only (its workers orphaned), the rest to the whole group."""
    manifest, reference = corpus
    rng = random.Random(seed)
    out = tmp_path / "store"
    proc = start(extract_args(manifest, out, delay=0.05))
    try:
        if seed % 2 == 0:
            parts = rng.randint(1, 14)
            while proc.poll() is None and len(list((out / "parts").glob("part-*"))) < parts:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.05))
        else:
            time.sleep(rng.uniform(0.0, 3.0))
        interrupted = proc.poll() is None
        if seed % 4 == 2:
            os.killpg(proc.pid, signal.SIGINT)
        elif seed % 3 == 0:
            proc.send_signal(signal.SIGKILL)
        else:
            kill_group(proc)
        # An interrupted run stops, never hangs; workers left orphaned by a SIGKILL of the main
        # process leave on their own (they hold stderr open, so this waits for them too).
        _, err = proc.communicate(timeout=60)
    finally:
        kill_group(proc)
    if seed % 2 == 0:
        assert interrupted, "the run ended before the kill point"
    kept = assert_readable_or_empty(out)
    if seed % 4 == 2:
        # A Ctrl-C that lands once the last part is written (seen on a loaded machine) may find
        # the run finishing: then it exits 0 with the whole store, which is not a loss.
        finished = proc.returncode == 0 and kept == set(reference)
        interrupted_cleanly = proc.returncode != 0 and "the parts already written" in err
        assert finished or interrupted_cleanly, err[-2000:]
    assert kept <= set(reference)
    for uid, values in (contents(out) if kept else {}).items():
        assert values == reference[uid]
    rerun = start(extract_args(manifest, out, delay=0.0))
    rc, err = finish(rerun)
    assert rc == 0, err
    assert f"skipped (already in the store) {len(kept)}" in err
    assert contents(out) == reference
    assert not list((out / "parts").glob(".tmp-*"))


@pytest.mark.skipif(not LONG, reason="starts Ray twice (long variant)")
def test_ray_actor_that_dies_is_a_clear_error_and_a_rerun_completes(corpus, tmp_path) -> None:
    pytest.importorskip("ray")
    manifest, reference = corpus
    out = tmp_path / "store"
    crashing = {"acoustic": WavStats(crash_on="u20"), "lexical": HashedWords()}
    with pytest.raises(WorkerError, match=r"worker \(Ray actor\) died"):
        run_extraction(manifest, out, crashing, progress=False, engine="ray", workers=2)
    kept = assert_readable_or_empty(out)
    extractors = {"acoustic": WavStats(), "lexical": HashedWords()}
    summary = run_extraction(manifest, out, extractors, progress=False, engine="ray", workers=2)
    assert summary.skipped == len(kept)
    assert contents(out) == reference


@pytest.mark.skipif(not LONG, reason="openSMILE in two workers, killed and rerun (long variant)")
@pytest.mark.parametrize("seed", [0, 1])
def test_real_acoustic_extractor_killed_then_rerun_is_identical(corpus, tmp_path, seed) -> None:
    """The same with the real openSMILE extractor (eGeMAPS, 88 functionals) on the tiny wavs."""
    from emomatch.extract.acoustic import OpenSmileExtractor

    manifest, _ = corpus
    reference = tmp_path / "reference"
    run_extraction(manifest, reference, {"acoustic": OpenSmileExtractor(feature_set="eGeMAPSv02")})
    args = [
        "extract",
        str(manifest),
        "--out",
        str(tmp_path / "store"),
        "--modalities",
        "acoustic",
        "--option",
        "acoustic.feature_set=eGeMAPSv02",
        "--workers",
        "2",
        "--chunk-size",
        "1",
        "--no-progress",
    ]
    proc = start(args)
    try:
        parts = random.Random(seed).randint(2, 20)
        while proc.poll() is None and len(list((tmp_path / "store/parts").glob("part-*"))) < parts:
            time.sleep(0.005)
        assert proc.poll() is None, "the run ended before the kill point"
        kill_group(proc)
        proc.communicate(timeout=60)
    finally:
        kill_group(proc)
    kept = assert_readable_or_empty(tmp_path / "store")
    rc, err = finish(start(args))
    assert rc == 0 and f"skipped (already in the store) {len(kept)}" in err, err[-2000:]
    a, b = FeatureStore(reference), FeatureStore(tmp_path / "store")
    assert sorted(a.index["id"]) == sorted(b.index["id"])
    order_a, order_b = np.argsort(a.index["id"].to_numpy()), np.argsort(b.index["id"].to_numpy())
    assert np.array_equal(a.fetch("acoustic", order_a), b.fetch("acoustic", order_b))


# -- disk full -------------------------------------------------------------------------------


def test_disk_full_during_extraction_is_a_clear_error_and_a_rerun_completes(
    corpus, tmp_path, monkeypatch
) -> None:
    """A patched write fails with ENOSPC on the 5th array: exit 2 naming the cause, the parts
    already written stay readable, and the run completes once space is back."""
    manifest, reference = corpus
    register()
    out = tmp_path / "store"
    real_save = np.save
    calls = []

    def full_disk(file, arr, *args, **kwargs):
        calls.append(1)
        if len(calls) >= 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(file, arr, *args, **kwargs)

    monkeypatch.setattr(np, "save", full_disk)
    result = runner.invoke(app, extract_args(manifest, out, delay=0.0, workers=1))
    assert result.exit_code == 2, result.output
    assert "No space left on device (free some space" in result.output
    assert "the parts already written are kept" in result.output
    assert not list((out / "parts").glob(".tmp-*"))
    # Two parts (u0; u5: u1-u4 are bad items) were written before the failing fifth array.
    assert set(FeatureStore(out).index["id"]) == {"u0", "u5"}
    monkeypatch.setattr(np, "save", real_save)
    summary = run_extraction(
        manifest, out, {"acoustic": WavStats(), "lexical": HashedWords()}, progress=False
    )
    assert summary.skipped == 2
    assert contents(out) == reference


@pytest.fixture
def tmpfs(tmp_path) -> Iterator[Path]:
    """A real tmpfs of 48 KiB (root with mount rights only: skipped elsewhere)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48k,mode=0755", "tmpfs", str(mnt)],
        capture_output=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def remount(mnt: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(mnt)], check=True)


# Sizes at which the disk fills while writing store.json (4), the first part's arrays (8) or
# index (16), errors.jsonl (24) and a later part (48); the long variant tries every 4 KiB.
FULL_AT = range(4, 100, 4) if LONG else (4, 8, 16, 24, 48)


@pytest.mark.parametrize("kib", FULL_AT)
def test_real_full_disk_then_space_freed(corpus, tmpfs, kib) -> None:
    manifest, reference = corpus
    remount(tmpfs, f"size={kib}k")
    out = tmpfs / "store"
    extractors = {"acoustic": WavStats(), "lexical": HashedWords()}
    with pytest.raises(WriteError, match=r"No space left on device \(free some space"):
        run_extraction(manifest, out, extractors, progress=False, chunk_size=1)
    assert not list((out / "parts").glob(".tmp-*"))
    kept = assert_readable_or_empty(out)
    assert len(kept) < len(reference)
    remount(tmpfs, "size=4m")
    summary = run_extraction(manifest, out, extractors, progress=False, chunk_size=1)
    assert summary.skipped == len(kept)
    assert contents(out) == reference


# -- read-only -------------------------------------------------------------------------------


def test_read_only_output_folder_is_a_clear_error(corpus, tmpfs) -> None:
    manifest, reference = corpus
    remount(tmpfs, "ro")
    result = runner.invoke(app, ["extract", *extract_args(manifest, tmpfs / "store")[1:]])
    assert result.exit_code == 2
    assert "Read-only file system (choose a folder you can write to)" in result.output
    assert "Traceback" not in result.output


def test_store_in_a_folder_gone_read_only_is_read_and_not_written(corpus, tmpfs) -> None:
    manifest, reference = corpus
    remount(tmpfs, "size=4m")
    register()
    assert runner.invoke(app, extract_args(manifest, tmpfs / "store", 0.0, 1)).exit_code == 0
    remount(tmpfs, "ro")
    info = runner.invoke(app, ["info", str(tmpfs / "store")])
    assert info.exit_code == 0 and "36 utterances" in info.output
    again = runner.invoke(app, extract_args(manifest, tmpfs / "store", 0.0, 1))
    assert again.exit_code == 2 and "Read-only file system" in again.output
    assert contents(tmpfs / "store") == reference


def test_unwritable_output_folder_without_root(corpus, tmp_path) -> None:
    """The same for an ordinary user's read-only folder (root writes through chmod)."""
    if os.geteuid() == 0:
        pytest.skip("root writes into a 0555 folder; the tmpfs tests cover root")
    manifest, _ = corpus
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        register()
        result = runner.invoke(app, extract_args(manifest, locked / "store", 0.0, 1))
        assert result.exit_code == 2 and "Permission denied" in result.output
    finally:
        locked.chmod(0o755)


# -- bad input -------------------------------------------------------------------------------


def test_empty_manifest_creates_no_store(tmp_path) -> None:
    register()
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("id,audio,video,text,start,end,speaker,label,split\n")
    result = runner.invoke(app, extract_args(manifest, tmp_path / "store", 0.0, 1))
    assert result.exit_code == 2
    # The manifest reader or, behind it, the extraction refuses it, naming the file.
    assert "no rows" in result.output or "no utterance rows" in result.output, result.output
    assert str(manifest) in result.output
    assert not (tmp_path / "store").exists()


def test_extraction_itself_never_creates_a_store_from_zero_rows(tmp_path, monkeypatch) -> None:
    import emomatch.extract.run as run

    make_manifest(tmp_path, n=2)
    empty = run.read_manifest(tmp_path / "manifest.csv").iloc[:0]
    monkeypatch.setattr(run, "read_manifest", lambda path: empty)
    with pytest.raises(DataError, match="the manifest has no utterance rows"):
        run_extraction(tmp_path / "manifest.csv", tmp_path / "store", {"acoustic": WavStats()})
    assert not (tmp_path / "store").exists()


def test_manifest_of_only_bad_rows_creates_no_store(tmp_path) -> None:
    register()
    df = make_manifest(tmp_path, n=5)
    df["id"] = ""  # every row lacks its id
    df.to_csv(tmp_path / "manifest.csv", index=False)
    result = runner.invoke(app, extract_args(tmp_path / "manifest.csv", tmp_path / "st", 0.0, 1))
    assert result.exit_code == 2 and "none of its 5 row(s)" in result.output, result.output
    assert not (tmp_path / "st").exists()


# -- damaged stores --------------------------------------------------------------------------


def _duplicate_part(parts: Path) -> str:
    shutil.copytree(parts / "part-00001", parts / "part-00009")
    return "also in part-00001"


def _truncate_array(parts: Path) -> str:
    npy = parts / "part-00002" / "lexical.npy"
    npy.write_bytes(npy.read_bytes()[:-40])
    return "probably truncated"


def _truncate_index(parts: Path) -> str:
    index = parts / "part-00000" / "index.parquet"
    index.write_bytes(index.read_bytes()[:100])
    return "index.parquet cannot be read"


def _missing_array(parts: Path) -> str:
    (parts / "part-00003" / "acoustic.npy").unlink()
    return "acoustic.npy is missing"


@pytest.mark.parametrize(
    "damage", [_duplicate_part, _truncate_array, _truncate_index, _missing_array]
)
def test_info_reports_a_damaged_store_and_a_rerun_repairs_it(corpus, tmp_path, damage) -> None:
    manifest, reference = corpus
    out = tmp_path / "store"
    shutil.copytree(manifest.parent / "reference", out)
    reason = damage(out / "parts")
    result = runner.invoke(app, ["info", str(out)])
    assert result.exit_code == 2
    assert "is damaged" in result.output and reason in result.output
    assert "run the same `emomatch extract` again" in result.output
    summary = run_extraction(
        manifest, out, {"acoustic": WavStats(), "lexical": HashedWords()}, progress=False
    )
    assert len(summary.dropped) == 1 and "repaired the store" in str(summary)
    assert contents(out) == reference


def test_store_without_store_json_is_explained_and_not_added_to(corpus, tmp_path) -> None:
    manifest, _ = corpus
    out = tmp_path / "store"
    shutil.copytree(manifest.parent / "reference", out)
    (out / "store.json").unlink()
    result = runner.invoke(app, ["info", str(out)])
    assert result.exit_code == 2
    assert "store.json is missing" in result.output and "move the folder away" in result.output
    with pytest.raises(StoreError, match="store.json is missing"):
        run_extraction(manifest, out, {"acoustic": WavStats(), "lexical": HashedWords()})
    assert not (out / "store.json").exists()


def test_store_files_are_readable_by_others(corpus, tmp_path) -> None:
    """mkstemp/mkdtemp make 0600/0700 entries; a shared store needs the umask's modes."""
    manifest, _ = corpus
    old = os.umask(0o022)
    try:
        run_extraction(manifest, tmp_path / "s", {"acoustic": WavStats(), "lexical": HashedWords()})
    finally:
        os.umask(old)
    entries = [tmp_path / "s", *(tmp_path / "s").rglob("*")]
    modes = {p.relative_to(tmp_path).as_posix(): p.stat().st_mode & 0o777 for p in entries}
    assert {m for p, m in modes.items() if (tmp_path / p).is_dir()} == {0o755}, modes
    assert {m for p, m in modes.items() if (tmp_path / p).is_file()} == {0o644}, modes
    index = pd.read_parquet(tmp_path / "s" / "parts" / "part-00000" / "index.parquet")
    assert len(index) > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--chunk-size", "0"], "--chunk-size and --workers must be at least 1"),
        (["--workers", "-1"], "--chunk-size and --workers must be at least 1"),
    ],
)
def test_bad_run_options_are_refused_before_anything_is_written(
    corpus, tmp_path, args, message
) -> None:
    manifest, _ = corpus
    register()
    result = runner.invoke(app, [*extract_args(manifest, tmp_path / "s", 0.0, 1), *args])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "s").exists()


def test_output_that_is_a_file_or_missing_store_is_named(corpus, tmp_path) -> None:
    manifest, _ = corpus
    register()
    (tmp_path / "file").write_text("not a folder")
    result = runner.invoke(app, extract_args(manifest, tmp_path / "file", 0.0, 1))
    assert result.exit_code == 2 and f"cannot create store {tmp_path / 'file'}" in result.output
    assert (tmp_path / "file").read_text() == "not a folder"
    result = runner.invoke(app, ["info", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert "is not a feature store: store.json is missing" in result.output
