"""The experiment report: Markdown and self-contained HTML, rebuilt by `emomatch report`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from emomatch.cli import app
from emomatch.errors import DataError
from emomatch.experiments import load_spec, run_experiment, write_experiment_report
from emomatch.runs import train_and_report
from tests.support.builders import make_config
from tests.support.experiments import write_base, write_spec


@pytest.fixture(scope="module")
def experiment(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("report")
    spec = load_spec(write_spec(folder))
    run_experiment(spec, write_base(folder, tiny_store), folder / "out")
    return folder / "out"


def _table(markdown: str) -> list[str]:
    return [line for line in markdown.splitlines() if line.startswith("|")]


def test_markdown_has_the_table_the_paper_column_and_the_baselines(experiment: Path) -> None:
    text = (experiment / "report.md").read_text()
    table = _table(text)
    head = table[0]
    for column in (
        "fully WAP",
        "fully UA",
        "fully paper WAP / UA",
        "semi paper WAP / UA",
        "logistic regression UA",
        "linear SVM WAP",
    ):
        assert column in head
    results = json.loads((experiment / "results.json").read_text())
    semi = results["rows"]["semi"]
    (row,) = [line for line in table if line.startswith("| A+L |")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    # ours, measured, beside the paper's 72.6 / 72.1 for A+L semi
    assert f"{100 * semi['ua']:.1f}" in cells
    assert "70.3 / 68.6" in cells and "72.6 / 72.1" in cells
    assert "the paper's own numbers (a test)" in text
    assert "## Against the baselines" in text
    for figure in re.findall(r"\(figures/([^)]+\.png)\)", text):
        assert (experiment / "figures" / figure).stat().st_size > 1000
    assert "figures/curve.png" in text
    assert "figures/loss-semi.png" in text and "figures/confusion-matrices.png" in text
    assert "confusion-fully" not in text, "one grid of small multiples, not a figure per row"
    # the runs table's "seeds" column: how many, then which
    assert any(line.startswith("| semi |") and "| 1 (" in line for line in _table(text))
    assert "config of semi" in text and '"torch"' in text


def test_html_is_self_contained(experiment: Path) -> None:
    page = (experiment / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    images = re.findall(r'<img [^>]*src="([^"]+)"', page)
    # one grid of confusion matrices, two loss figures, one curve; none refers to a file
    assert len(images) == 4
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert "<th>fully paper WAP / UA</th>" in page
    assert "<td>70.3 / 68.6</td>" in page


def test_report_command_rebuilds_the_same_table(experiment: Path, tmp_path) -> None:
    result = CliRunner().invoke(app, ["report", str(experiment), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    again = json.loads((tmp_path / "r" / "results.json").read_text())
    first = json.loads((experiment / "results.json").read_text())
    assert again["table"] == first["table"]
    assert _table((tmp_path / "r" / "report.md").read_text()) == _table(
        (experiment / "report.md").read_text()
    )


def test_report_of_plain_runs(tiny_store: Path, tmp_path) -> None:
    for name, semi in (("fully", False), ("semi", True)):
        cfg = make_config(tiny_store, train={"max_epochs": 1}, loss={"unlabeled": semi})
        train_and_report(cfg, tmp_path / name)
    summary = write_experiment_report([tmp_path / "fully", tmp_path / "semi"], tmp_path / "r")
    assert [row[0] for row in summary["table"]["rows"]] == ["fully", "semi"]
    text = (tmp_path / "r" / "report.md").read_text()
    assert "paper" not in _table(text)[0]
    with pytest.raises(DataError, match="no finished training run"):
        write_experiment_report([tmp_path / "r"], tmp_path / "r2")


def test_experiment_command_runs_and_reports(tiny_store: Path, tmp_path) -> None:
    spec = write_spec(tmp_path)
    base = write_base(tmp_path, tiny_store)
    out = tmp_path / "out"
    args = [
        "experiment",
        str(spec),
        str(base),
        "--out",
        str(out),
        "--set",
        "seed=3",
        "--seeds",
        "2",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "run 4 of 4: semi" in result.output
    assert (out / "report.html").is_file()
    ensemble = json.loads((out / "semi" / "metrics.json").read_text())
    assert ensemble["ensemble_of_seeds"] == [3, 4]
    # the table: per-seed mean ± std, and the ensemble's own score beside it
    head = _table((out / "report.md").read_text())[0]
    assert "semi UA of the seeds' ensemble" in head
    (row,) = [line for line in _table((out / "report.md").read_text()) if line.startswith("| A+L")]
    assert f"| {100 * ensemble['ua']:.1f} |" in row
    manifest = json.loads((out / "experiment.json").read_text())
    assert manifest["overrides"] == ["seed=3"]
    bad = CliRunner().invoke(app, ["experiment", "nosuch", str(base), "--out", str(out)])
    assert bad.exit_code == 2 and "unknown experiment 'nosuch'" in bad.output


def test_confusion_matrices_are_small_multiples() -> None:
    import io

    import numpy as np
    from PIL import Image

    from emomatch.evaluation.report import confusion_grid_png, confusion_png

    classes = ["angry", "happy", "neutral", "sad"]
    cm = np.eye(4).tolist()
    grid = Image.open(io.BytesIO(confusion_grid_png([(f"row {i}", cm) for i in range(6)], classes)))
    one = Image.open(io.BytesIO(confusion_png(cm, classes)))
    # six rows in two lines of four panels: less tall than two full-size matrices stacked
    assert grid.size[1] < 2 * one.size[1] and grid.size[0] > one.size[0]


def test_experiment_whose_rows_all_score_the_same_is_flagged() -> None:
    from emomatch.experiments.run import all_rows_alike

    same = {"wap": 0.25, "ua": 0.25, "wa": 0.5, "weighted_f1": 0.3, "macro_f1": 0.2}
    assert "scored the same" in all_rows_alike({"rows": {"a": same, "b": dict(same)}})
    other = {**same, "ua": 0.3}
    assert all_rows_alike({"rows": {"a": same, "b": other}}) is None
    assert all_rows_alike({"rows": {"a": same}}) is None
