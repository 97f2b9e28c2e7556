"""README.md's first "Use" block, run line by line as a new user would copy it, in an empty
folder holding only ``configs/`` of this checkout: every command must make what the next one
uses."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from emomatch.cli import app
from emomatch.rundir import METRICS_FILE, RunFolder

ROOT = Path(__file__).resolve().parents[1]


def use_commands(readme: Path) -> list[list[str]]:
    """The ``emomatch`` command lines of the first bash block after "## Use", comments cut."""
    text = readme.read_text(encoding="utf-8")
    section = text[text.index("## Use\n") :]
    block = re.search(r"^```bash\n(.*?)^```", section, re.S | re.M)
    assert block is not None, "README.md: no bash block under ## Use"
    lines = block.group(1).replace("\\\n", " ").splitlines()
    return [
        shlex.split(line, comments=True) for line in lines if line.strip().startswith("emomatch ")
    ]


def test_the_reader_takes_commands_and_cuts_comments(tmp_path: Path) -> None:
    doc = tmp_path / "R.md"
    doc.write_text("## Use\n```bash\nsource x  # no\nemomatch a b  # c\nemomatch d \\\n  e\n```\n")
    assert use_commands(doc) == [["emomatch", "a", "b"], ["emomatch", "d", "e"]]


def test_readme_use_block_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    commands = use_commands(ROOT / "README.md")
    assert len(commands) >= 10
    runner = CliRunner()
    for words in commands:
        result = runner.invoke(app, words[1:])
        assert result.exit_code == 0, f"{' '.join(words)}:\n{result.output}"
    assert RunFolder(tmp_path / "runs" / "y").is_finished()
    assert (
        RunFolder(tmp_path / "runs" / "x").evaluation_dir("validation") / METRICS_FILE
    ).is_file()
    assert (tmp_path / "bundles" / "x" / "bundle.json").is_file()
