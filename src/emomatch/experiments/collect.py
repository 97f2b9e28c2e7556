"""An experiment's results, read back from the finished runs on disk: each row's metrics over
its folds and seeds, the baselines, the epoch histories, the timings."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emomatch.baseline import BASELINES
from emomatch.errors import DataError
from emomatch.experiments.layout import MANIFEST, TIMINGS, training_runs
from emomatch.experiments.spec import ExperimentSpec, Row
from emomatch.rundir import METRICS_FILE, RunFolder

METRIC_NAMES = {
    "wap": "WAP",
    "ua": "UA",
    "wa": "WA",
    "weighted_f1": "weighted F1",
    "macro_f1": "macro F1",
}
BASELINE_NAMES = {"logreg": "logistic regression", "linear_svm": "linear SVM"}


@dataclass
class Scores:
    """Metrics of a set of runs (folds x seeds): one dict per run."""

    runs: list[dict[str, Any]]
    dirs: list[Path] = field(default_factory=list)

    def mean(self, key: str) -> float:
        return float(np.mean([r[key] for r in self.runs]))

    def std(self, key: str) -> float:
        return float(np.std([r[key] for r in self.runs]))

    def cell(self, key: str) -> str:
        if len(self.runs) == 1:
            return f"{100 * self.mean(key):.1f}"
        return f"{100 * self.mean(key):.1f} ± {100 * self.std(key):.1f}"

    def confusion(self) -> np.ndarray:
        return np.sum([np.asarray(r["confusion"]) for r in self.runs], axis=0)


@dataclass
class RowResult:
    row: Row
    dir: Path
    scores: Scores
    config: dict[str, Any]
    baselines: str | None = None
    #: the row's own metrics.json where it scored its seeds' ensemble (``--seeds N``)
    ensemble: dict[str, Any] | None = None


def baseline_runs(folder: Path) -> Scores:
    """One baseline's per-fold (or single) metrics under ``baselines/<data>/<model>``."""
    leaves = []
    for path in sorted(folder.rglob(METRICS_FILE)):
        m = json.loads(path.read_text())
        if "folds" not in m:
            leaves.append((path.parent, m))
    return Scores([m for _, m in leaves], [d for d, _ in leaves])


def read_scores(runs: Sequence[Path]) -> Scores:
    return Scores([RunFolder(d).read_metrics() for d in runs], list(runs))


def history(run_dir: Path) -> dict[str, dict[int, float]]:
    """``logs/metrics.csv`` as column -> epoch -> value (train and validation rows merged)."""
    path = RunFolder(run_dir).history_path
    out: dict[str, dict[int, float]] = defaultdict(dict)
    if not path.is_file():
        return out
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            if not row.get("epoch"):
                continue
            epoch = int(float(row["epoch"]))
            for key, value in row.items():
                if key not in ("epoch", "step") and value not in (None, ""):
                    out[key][epoch] = float(value)
    return out


def mean_history(runs: Sequence[Path]) -> dict[str, tuple[list[int], list[float]]]:
    """Each logged column's per-epoch mean over the runs that reached that epoch."""
    merged: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        for key, by_epoch in history(run).items():
            for epoch, value in by_epoch.items():
                merged[key][epoch].append(value)
    return {
        key: (sorted(v), [float(np.mean(v[e])) for e in sorted(v)]) for key, v in merged.items()
    }


# ---------------------------------------------------------------------------------------------
# Collecting


@dataclass
class Collected:
    spec: ExperimentSpec
    rows: list[RowResult]
    #: data folder -> baseline name -> scores
    baselines: dict[str, dict[str, Scores]]
    manifest: dict[str, Any]
    timings: dict[str, float]
    source: Path


def collect(folders: Sequence[Path]) -> Collected:
    """An experiment folder (with ``experiment.json``), or any number of run folders of
    ``emomatch train`` (one table row each)."""
    folders = [Path(f) for f in folders]
    if not folders:
        raise DataError("no run folders given")
    if len(folders) == 1 and (folders[0] / MANIFEST).is_file():
        return _collect_experiment(folders[0])
    for f in folders:
        if (f / MANIFEST).is_file():
            raise DataError(f"{f} is an experiment folder: give it alone, or give run folders only")
        if not training_runs(f):
            raise DataError(f"{f}: no finished training run here (no config.yaml + metrics.json)")
    rows = []
    for f in folders:
        runs = training_runs(f)
        config = run_config(runs[0])
        rows.append(RowResult(Row(name=_safe(f.name), label=f.name), f, read_scores(runs), config))
    spec = ExperimentSpec(title="Runs", baselines="none", rows=[r.row for r in rows], name="runs")
    return Collected(spec, rows, {}, {}, _timings_of(folders), folders[0].parent)


def _ensemble(row_dir: Path, manifest: dict[str, Any]) -> dict[str, Any] | None:
    run = RunFolder(row_dir)
    if int(manifest.get("seeds") or 1) < 2 or not run.is_finished():
        return None
    return run.read_metrics()


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_.+-" else "-" for c in name).lstrip("-.") or "run"


def run_config(run: Path) -> dict[str, Any]:
    return RunFolder(run).read_config()


def _timings_of(folders: Sequence[Path]) -> dict[str, float]:
    out = {}
    for f in folders:
        path = f / TIMINGS
        if path.is_file():
            out.update(json.loads(path.read_text()))
    return out


def _collect_experiment(folder: Path) -> Collected:
    manifest = json.loads((folder / MANIFEST).read_text())
    spec = ExperimentSpec.model_validate(manifest["spec"])
    rows = []
    missing = []
    for row in spec.rows:
        runs = training_runs(folder / row.name)
        if not runs:
            missing.append(row.name)
            continue
        entry = manifest["rows"].get(row.name, {})
        rows.append(
            RowResult(
                row,
                folder / row.name,
                read_scores(runs),
                entry.get("config") or run_config(runs[0]),
                entry.get("baselines"),
                _ensemble(folder / row.name, manifest),
            )
        )
    if not rows:
        raise DataError(f"{folder}: no row of experiment {spec.name!r} has finished a run yet")
    baselines: dict[str, dict[str, Scores]] = {}
    for data in sorted({r.baselines for r in rows if r.baselines}):
        found = {}
        for name in BASELINES:
            scores = baseline_runs(folder / data / name)
            if scores.runs:
                found[name] = scores
        if found:
            baselines[data] = found
    timings_path = folder / TIMINGS
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    manifest["missing_rows"] = missing
    return Collected(spec, rows, baselines, manifest, timings, folder)


# ---------------------------------------------------------------------------------------------
# Document blocks, rendered to Markdown and HTML
