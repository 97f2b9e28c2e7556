"""A checkpoint is never trusted: one whose pickle calls ``os.system`` runs nothing on
``train --resume``, ``evaluate`` or ``export``, and each ends with one ``error:`` line."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from emomatch.cli import app
from emomatch.safeload import CheckpointError, read_checkpoint
from tests.support.builders import make_config

runner = CliRunner()


class _Payload:
    """Unpickling this calls ``os.system('touch MARKER')``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def _craft(path: Path, marker: Path, legacy: bool) -> None:
    """A crafted checkpoint: torch's zip format, or a bare pickle (torch reads both)."""
    content = {"epoch": _Payload(marker), "state_dict": {}}
    if legacy:
        with open(path, "wb") as fh:
            pickle.dump(content, fh)
    else:
        torch.save(content, path)


@pytest.fixture(scope="module")
def finished_run(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("crafted")
    config = root / "config.yaml"
    config.write_text(make_config(tiny_store, train={"max_epochs": 1}).to_yaml())
    result = runner.invoke(app, ["train", str(config), "--out", str(root / "run")])
    assert result.exit_code == 0, result.output
    return root / "run"


def _one_error(result, marker: Path) -> str:  # type: ignore[no-untyped-def]
    assert not marker.exists(), "the crafted checkpoint's code ran"
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    return errors[0]


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "bare-pickle"])
def test_crafted_last_checkpoint_runs_nothing_on_resume(
    finished_run: Path, tmp_path: Path, legacy: bool
) -> None:
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (run / "metrics.json").unlink()  # an interrupted run: --resume reads last.ckpt
    marker = tmp_path / "MARKER"
    _craft(run / "checkpoints" / "last.ckpt", marker, legacy)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(yaml.safe_load((run / "config.yaml").read_text())))
    result = runner.invoke(app, ["train", str(config), "--out", str(run), "--resume"])
    line = _one_error(result, marker)
    assert "last.ckpt" in line and ("Python objects" in line or "mmap" in line)


@pytest.mark.parametrize("command", ["evaluate", "export"])
def test_crafted_selected_checkpoint_runs_nothing(
    finished_run: Path, tmp_path: Path, command: str
) -> None:
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    marker = tmp_path / "MARKER"
    _craft(run / "checkpoints" / "best.ckpt", marker, legacy=False)
    args = [command, str(run)] + (
        ["--out", str(tmp_path / "bundle")] if command == "export" else []
    )
    line = _one_error(runner.invoke(app, args), marker)
    assert "best.ckpt" in line and "Python objects" in line
    assert not (tmp_path / "bundle").exists()


def test_lightning_resume_load_is_safe_too(finished_run: Path, tmp_path: Path) -> None:
    """The trainer's own load (``trainer.fit(ckpt_path=...)``) goes through the checkpoint IO
    plugin, whose read refuses the file as well: no second, unsafe unpickling."""
    from emomatch.runtime import StreamingCheckpointIO

    marker = tmp_path / "MARKER"
    _craft(tmp_path / "x.ckpt", marker, legacy=False)
    with pytest.raises(CheckpointError, match="Python objects"):
        StreamingCheckpointIO().load_checkpoint(tmp_path / "x.ckpt", weights_only=False)
    assert not marker.exists()
    saved = StreamingCheckpointIO().load_checkpoint(finished_run / "checkpoints" / "last.ckpt")
    assert saved["epoch"] == 0 and saved["state_dict"]


def test_every_checkpoint_emomatch_writes_reads_safely(finished_run: Path) -> None:
    for path in sorted((finished_run / "checkpoints").glob("*.ckpt")):
        saved = read_checkpoint(path, mmap=True)
        assert isinstance(saved["hyper_parameters"], dict)


def test_no_unsafe_torch_load_in_the_package() -> None:
    """Every checkpoint read goes through emomatch.safeload (grep, so a new one is caught)."""
    root = Path(__file__).resolve().parents[1] / "src" / "emomatch"
    offenders = [
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if p.name != "safeload.py"
        and ("torch.load(" in p.read_text() or "load_from_checkpoint(" in p.read_text())
    ]
    assert offenders == []
