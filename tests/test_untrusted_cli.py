"""Commands given hostile or careless arguments: one ``error:`` line and a non-zero exit,
nothing of the user's destroyed, nothing left that blocks a rerun."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from emomatch.cli import app
from emomatch.extract.mediawrite import write_wav
from tests.support.builders import make_config
from tests.support.manifests import make_manifest
from tests.support.store_faults_driver import extract_args, register

runner = CliRunner()


def one_error(result, code: int = 2) -> str:  # type: ignore[no-untyped-def]
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    return errors[0]


@contextmanager
def lock_held_elsewhere(folder: Path) -> Iterator[int]:
    """Another process holding emomatch's writer lock on ``folder`` (as a running extract or
    train does); yields its pid."""
    code = (
        "import sys, time\n"
        "from emomatch.files import hold_lock\n"
        "with hold_lock(sys.argv[1], 'store'):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"held"
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def run(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli-run")
    config = root / "config.yaml"
    config.write_text(make_config(tiny_store, train={"max_epochs": 1}).to_yaml())
    result = runner.invoke(app, ["train", str(config), "--out", str(root / "run")])
    assert result.exit_code == 0, result.output
    return root / "run"


# -- predict ---------------------------------------------------------------------------------


def test_predict_out_onto_its_own_input_or_bundle_is_refused(tmp_path: Path) -> None:
    clip = write_wav(tmp_path / "clip.wav", [0.1] * 1600, 16000)
    before = clip.read_bytes()
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "bundle.json").write_text("{}")
    for target in (clip, bundle / "bundle.json"):
        result = runner.invoke(app, ["predict", str(bundle), str(clip), "--out", str(target)])
        assert "one of this command's inputs" in one_error(result)
    assert clip.read_bytes() == before
    assert (bundle / "bundle.json").read_text() == "{}"
    result = runner.invoke(
        app, ["predict", str(bundle), str(clip), "--out", str(tmp_path / "no" / "p.csv")]
    )
    assert "does not exist" in one_error(result)


def test_predict_segments_below_a_fifth_of_a_second_are_refused(tmp_path: Path) -> None:
    result = runner.invoke(app, ["predict", str(tmp_path), "--segments", "0.001"])
    assert "at least 0.2" in one_error(result)


def test_predict_onto_a_full_disk_is_one_error(tmp_path: Path, monkeypatch) -> None:
    import emomatch.bundle
    import emomatch.bundle.apply as apply
    import emomatch.files

    class Answer:
        labels = ["a", "b"]

    def full(path: object, text: str) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    # the bundle and the model are not what is tested here: only the writing of the answer
    monkeypatch.setattr(emomatch.bundle, "load", lambda *a, **k: Answer())
    monkeypatch.setattr(apply, "predict_inputs", lambda *a, **k: [])
    monkeypatch.setattr(apply, "format_predictions", lambda *a, **k: "id,label\n")
    monkeypatch.setattr(emomatch.files, "atomic_write_text", full)
    out = tmp_path / "p.csv"
    bundle = tmp_path / "bundle"
    result = runner.invoke(app, ["predict", str(bundle), "--text", "hi", "--out", str(out)])
    assert "No space left on device (free some space" in one_error(result)


# -- serve -----------------------------------------------------------------------------------


def test_serve_on_a_port_out_of_range_is_one_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["serve", str(tmp_path), "--port", "99999"])
    assert "--port must be 0 to 65535" in one_error(result)


# -- export ----------------------------------------------------------------------------------


def test_export_of_an_unfinished_run_is_refused(run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    (copy / "metrics.json").unlink()  # a copy made before the end, or an interrupted run
    result = runner.invoke(app, ["export", str(copy), "--out", str(tmp_path / "b")])
    assert "metrics.json is missing" in one_error(result)
    assert not (tmp_path / "b").exists()


def test_export_of_a_run_being_trained_is_refused(run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    with lock_held_elsewhere(copy) as pid:
        result = runner.invoke(app, ["export", str(copy), "--out", str(tmp_path / "b")])
        assert f"being trained now (pid {pid})" in one_error(result)


def test_export_stopped_while_archiving_leaves_nothing_in_the_way(
    run: Path, tmp_path: Path, monkeypatch
) -> None:
    import emomatch.bundle.format as fmt

    real = fmt.write_archive

    def stopped(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt  # what the command's SIGTERM handler raises

    monkeypatch.setattr(fmt, "write_archive", stopped)
    out = tmp_path / "ck" / "X"
    result = runner.invoke(app, ["export", str(run), "--out", str(out), "--archive"])
    assert "interrupted" in one_error(result, code=130)
    assert sorted(p.name for p in out.parent.iterdir()) == []
    monkeypatch.setattr(fmt, "write_archive", real)
    result = runner.invoke(app, ["export", str(run), "--out", str(out), "--archive"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.parent.iterdir()) == ["X", "X.tar.gz"]


def test_export_sigterm_then_rerun_completes(run: Path, tmp_path: Path) -> None:
    """A real SIGTERM at some moment of `export --archive`: whatever it hit, the rerun
    finishes the bundle and no temporary file is left by the handler's clean-up."""
    out = tmp_path / "ck" / "X"
    out.parent.mkdir()
    code = "from emomatch.cli import app; app()"
    args = [sys.executable, "-c", code, "export", str(run), "--out", str(out), "--archive"]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE)
    time.sleep(4.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert b"Traceback" not in err
    if proc.returncode != 0:  # stopped before it finished: nothing kept
        assert list(out.parent.iterdir()) == [], err
    result = runner.invoke(app, ["export", str(run), "--out", str(tmp_path / "ck" / "Y")])
    assert result.exit_code == 0, result.output
    if not out.exists():
        result = runner.invoke(app, ["export", str(run), "--out", str(out), "--archive"])
        assert result.exit_code == 0, result.output
    assert (out / "bundle.json").is_file() and (out.parent / "X.tar.gz").is_file()


# -- train and extract -----------------------------------------------------------------------


def test_train_on_a_store_being_written_is_refused_naming_the_writer(
    tiny_store: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    config = tmp_path / "config.yaml"
    config.write_text(make_config(store, train={"max_epochs": 1}).to_yaml())
    with lock_held_elsewhere(store) as pid:
        result = runner.invoke(app, ["train", str(config), "--out", str(tmp_path / "run")])
        assert f"being written now by another emomatch process (pid {pid}" in one_error(result)
    assert not (tmp_path / "run").exists()


def test_manifest_whose_every_file_is_missing_fails(tmp_path: Path) -> None:
    register()
    df = make_manifest(tmp_path, n=4)
    df["audio"] = [f"media/gone-{i}.wav" for i in range(len(df))]
    df["text"] = ""  # no transcript either: nothing of any row can be extracted
    df.to_csv(tmp_path / "manifest.csv", index=False)
    result = runner.invoke(
        app,
        extract_args(tmp_path / "manifest.csv", tmp_path / "st", 0.0, 1),
        catch_exceptions=False,
    )
    line = one_error(result)
    assert f"none of the {len(df)} item(s)" in line and "errors.jsonl" in line
