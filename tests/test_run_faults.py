"""Faults and bad input around training runs: one clear sentence, exit code 2, nothing stray."""

from __future__ import annotations

import fcntl
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from emomatch.cli import app
from emomatch.errors import ConfigError, DataError, LockedError
from emomatch.runs import train_and_report
from emomatch.store import FeatureStore
from emomatch.synthetic import write_synthetic_store
from tests.support.builders import make_config, tiny_corpus

runner = CliRunner()


def write_config(tmp_path: Path, store: Path, **sections) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(make_config(store, **sections).to_yaml())
    return path


def one_line_error(result) -> str:
    """The CLI's answer to bad input: exit 2, an ``error:`` line, no traceback."""
    assert result.exit_code == 2, result.output
    text = result.output
    assert "Traceback" not in text
    assert "error:" in text
    return text


def test_gpu_asked_on_a_machine_without_one(tiny_store, tmp_path) -> None:
    if __import__("torch").cuda.is_available():
        pytest.skip("this machine has a GPU")
    config = write_config(tmp_path, tiny_store)
    out = tmp_path / "run"
    result = runner.invoke(
        app, ["train", str(config), "--out", str(out), "--set", "train.accelerator=gpu"]
    )
    assert "no usable CUDA GPU" in one_line_error(result)
    assert not out.exists()  # no stray config.yaml in a fresh --out


def test_truncated_last_checkpoint_is_one_clear_error(tiny_store, tmp_path) -> None:
    config = write_config(tmp_path, tiny_store, train={"max_epochs": 1})
    out = tmp_path / "run"
    assert runner.invoke(app, ["train", str(config), "--out", str(out)]).exit_code == 0
    last = out / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    result = runner.invoke(app, ["train", str(config), "--out", str(out), "--resume"])
    text = one_line_error(result)
    assert str(last) in text and "damaged" in text


def test_evaluate_something_that_is_not_a_checkpoint(tmp_path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best.ckpt").write_text("not a checkpoint\n")
    result = runner.invoke(app, ["evaluate", str(run)])
    assert "not a readable emomatch checkpoint" in one_line_error(result)


def test_nan_in_the_test_split_is_found_before_training(tmp_path) -> None:
    path = tmp_path / "store"
    write_synthetic_store(tiny_corpus(), path)
    store = FeatureStore(path)
    row = int(store.select("split", "test")[5])
    part_no = int(store.index.loc[row, "_part"])
    part = path / "parts" / f"part-{part_no:05d}" / "acoustic.npy"
    arr = np.load(part)
    arr[row - int(store.index["_part"].eq(part_no).idxmax()), 3] = np.inf
    np.save(part, arr)
    with pytest.raises(DataError, match=r"split 'test'.*NaN or infinite"):
        train_and_report(make_config(path), tmp_path / "run")
    assert not (tmp_path / "run").exists()  # found before any epoch, nothing written


def test_second_writer_of_a_run_folder_gets_exit_2(tiny_store, tmp_path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    # Another process's lock: flock conflicts between open file descriptions even within one
    # process, so a descriptor of our own stands in for the other trainer.
    fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(LockedError, match="being written by another emomatch process"):
            train_and_report(make_config(tiny_store, train={"max_epochs": 1}), out)
        config = write_config(tmp_path, tiny_store, train={"max_epochs": 1})
        result = runner.invoke(app, ["train", str(config), "--out", str(out)])
        assert "another emomatch process" in one_line_error(result)
    finally:
        os.close(fd)
    assert not (out / "checkpoints").exists()


def test_run_files_are_readable_by_others(tiny_store, tmp_path) -> None:
    old = os.umask(0o022)
    try:
        train_and_report(make_config(tiny_store, train={"max_epochs": 1}), tmp_path / "run")
    finally:
        os.umask(old)
    for name in ("config.yaml", "metrics.json", "confusion.png", "logs/metrics.csv"):
        mode = stat.S_IMODE((tmp_path / "run" / name).stat().st_mode)
        assert mode == 0o644, (name, oct(mode))


def test_config_typo_is_reported_before_lightning_is_imported(tiny_store, tmp_path) -> None:
    config = tmp_path / "typo.yaml"
    raw = yaml.safe_load(make_config(tiny_store).to_yaml())
    raw["loss"]["alpah"] = 0.5
    config.write_text(yaml.safe_dump(raw))
    script = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from emomatch.cli import app\n"
        f"r = CliRunner().invoke(app, ['train', {str(config)!r}])\n"
        "print(r.exit_code, 'pytorch_lightning' in sys.modules)\n"
        "print(r.output)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    first, *rest = proc.stdout.splitlines()
    assert first == "2 False", proc.stdout + proc.stderr
    assert "loss.alpah" in "\n".join(rest)


def test_unknown_key_is_a_config_error_naming_it(tiny_store) -> None:
    with pytest.raises(ConfigError, match="train.max_epoch"):
        make_config(tiny_store, train={"max_epoch": 3})


def test_disk_full_while_training_keeps_checkpoints_and_resume_completes(
    tiny_store, tmp_path, monkeypatch
) -> None:
    import errno

    from emomatch.errors import WriteError
    from emomatch.runtime import StreamingCheckpointIO

    cfg = make_config(tiny_store, train={"max_epochs": 4})
    calls = {"n": 0}
    # the checkpoint writer the trainer uses (it streams to the file)
    original = StreamingCheckpointIO.save_checkpoint

    def full_disk(self, checkpoint, path, storage_options=None):
        calls["n"] += 1
        if calls["n"] > 3:  # epochs 0 and 1 saved (best + last), then the disk is full
            with open(path, "wb") as fh:
                fh.write(b"half a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return original(self, checkpoint, path, storage_options)

    monkeypatch.setattr(StreamingCheckpointIO, "save_checkpoint", full_disk)
    run = tmp_path / "run"
    with pytest.raises(WriteError, match="No space left on device.*--resume"):
        train_and_report(cfg, run)
    # whatever was written before is whole and readable; no half file is left behind
    from emomatch.training.persist import checkpoint_epoch

    assert checkpoint_epoch(run / "checkpoints" / "last.ckpt") in (0, 1)
    assert not list((run / "checkpoints").glob(".*.tmp"))
    monkeypatch.setattr(StreamingCheckpointIO, "save_checkpoint", original)  # space freed
    metrics = train_and_report(cfg, run, resume=True)
    straight = train_and_report(cfg, tmp_path / "straight")
    assert metrics["confusion"] == straight["confusion"]
