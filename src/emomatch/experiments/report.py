"""The report of an experiment, rebuilt from the finished runs on disk.

One Markdown file (figures beside it in ``figures/``) and one self-contained HTML file (the same
figures embedded as base64 PNG): the table in the paper's layout (mean ± std over every fold and
seed), the paper's figures where a row has them, the baselines, confusion matrices, the loss
terms per epoch, the curve of a quantity experiment, and what was run (configs, seeds,
versions, wall times). Everything is read from the run folders, so ``emomatch report`` can
rebuild it at any time.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emomatch.baseline import BASELINES
from emomatch.errors import DataError
from emomatch.evaluation.report import confusion_png, figure_png
from emomatch.experiments.run import MANIFEST, TIMINGS, training_runs, versions
from emomatch.experiments.spec import ExperimentSpec, Row
from emomatch.files import atomic_write_bytes, atomic_write_text

METRIC_NAMES = {
    "wap": "WAP",
    "ua": "UA",
    "wa": "WA",
    "weighted_f1": "weighted F1",
    "macro_f1": "macro F1",
}
BASELINE_NAMES = {"logreg": "logistic regression", "linear_svm": "linear SVM"}
#: the loss terms drawn, in the order of Eq. 7-9 (``train/`` and ``val/`` prefixes in the CSV)
LOSS_TERMS = ("cls", "rec", "match", "unlabeled_rec", "unlabeled_match", "loss")


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
    for path in sorted(folder.rglob("metrics.json")):
        m = json.loads(path.read_text())
        if "folds" not in m:
            leaves.append((path.parent, m))
    return Scores([m for _, m in leaves], [d for d, _ in leaves])


def read_scores(runs: Sequence[Path]) -> Scores:
    return Scores([json.loads((d / "metrics.json").read_text()) for d in runs], list(runs))


def _history(run_dir: Path) -> dict[str, dict[int, float]]:
    """``logs/metrics.csv`` as column -> epoch -> value (train and validation rows merged)."""
    path = run_dir / "logs" / "metrics.csv"
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
        for key, by_epoch in _history(run).items():
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
        config = _run_config(runs[0])
        rows.append(RowResult(Row(name=_safe(f.name), label=f.name), f, read_scores(runs), config))
    spec = ExperimentSpec(title="Runs", baselines="none", rows=[r.row for r in rows], name="runs")
    return Collected(spec, rows, {}, {}, _timings_of(folders), folders[0].parent)


def _ensemble(row_dir: Path, manifest: dict[str, Any]) -> dict[str, Any] | None:
    path = row_dir / "metrics.json"
    if int(manifest.get("seeds") or 1) < 2 or not path.is_file():
        return None
    return dict(json.loads(path.read_text()))


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_.+-" else "-" for c in name).lstrip("-.") or "run"


def _run_config(run: Path) -> dict[str, Any]:
    import yaml

    return dict(yaml.safe_load((run / "config.yaml").read_text()))


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
                entry.get("config") or _run_config(runs[0]),
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


@dataclass
class Figure:
    name: str
    caption: str
    png: bytes


Block = tuple[str, Any]


def _table(c: Collected) -> tuple[list[str], list[list[str]], list[str]]:
    """Header, body and notes of the main table."""
    spec = c.spec
    metrics = spec.metrics
    labels = list(dict.fromkeys(r.row.label for r in c.rows))
    columns = list(dict.fromkeys(r.row.column for r in c.rows))
    cells = {(r.row.label, r.row.column): r for r in c.rows}
    with_paper = {col for col in columns for r in c.rows if r.row.column == col and r.row.paper}
    # the seeds' ensemble is a model of its own (mean probabilities): shown beside the per-seed
    # mean, in the primary metric only
    primary = metrics[-1]
    ensembles = {col for col in columns for r in c.rows if r.row.column == col and r.ensemble}
    head = ["" if spec.name != "runs" else "run"]
    for col in columns:
        prefix = "" if col == "ours" and len(columns) == 1 else f"{col} "
        head += [f"{prefix}{METRIC_NAMES[m]}" for m in metrics]
        if col in ensembles:
            head.append(f"{prefix}{METRIC_NAMES[primary]} of the seeds' ensemble")
        if col in with_paper:
            head.append(f"{prefix}paper {' / '.join(METRIC_NAMES[m] for m in metrics)}")
    as_columns = spec.baselines == "columns" and c.baselines
    names = sorted({n for b in c.baselines.values() for n in b}, key=list(BASELINES).index)
    if as_columns:
        for name in names:
            head += [f"{BASELINE_NAMES[name]} {METRIC_NAMES[m]}" for m in metrics]
    notes = []
    body = []
    for label in labels:
        line = [label]
        for col in columns:
            r = cells.get((label, col))
            line += [r.scores.cell(m) if r else "" for m in metrics]
            if col in ensembles:
                ens = r.ensemble if r else None
                line.append(f"{100 * ens[primary]:.1f}" if ens else "")
            if col in with_paper:
                paper = r.row.paper if r else {}
                shown = [f"{paper[m]:.1f}" if m in paper else "–" for m in metrics]
                line.append(" / ".join(shown) if paper else "")
        if as_columns:
            settings = {
                cells[(label, col)].baselines or "" for col in columns if (label, col) in cells
            }
            if len(settings) > 1:
                notes.append(f"row {label}: its runs differ in their data; baselines not shown")
            same = c.baselines.get(settings.pop(), {}) if len(settings) == 1 else {}
            for name in names:
                s = same.get(name)
                line += [s.cell(m) if s else "" for m in metrics]
        body.append(line)
    if spec.baselines == "rows":
        several = len(c.baselines) > 1
        for data, found in c.baselines.items():
            mods = _modalities_of(c, data)
            for name, s in found.items():
                label = f"baseline: {BASELINE_NAMES[name]}" + (f" ({mods})" if several else "")
                line = [label]
                for i, col in enumerate(columns):
                    line += [s.cell(m) if i == 0 else "" for m in metrics]
                    if col in ensembles:
                        line.append("")
                    if col in with_paper:
                        line.append("")
                body.append(line)
    return head, body, notes


def _modalities_of(c: Collected, data: str) -> str:
    for r in c.rows:
        if r.baselines == data:
            return "+".join(m[0].upper() for m in r.config["data"]["modalities"])
    return data


def _against_baselines(c: Collected) -> list[str]:
    """One plain sentence per run row: its primary metric against the best baseline on the
    same data."""
    metric = c.spec.curve.metric if c.spec.curve else c.spec.metrics[-1]
    out = []
    for r in c.rows:
        found = c.baselines.get(r.baselines or "", {})
        if not found:
            continue
        best_name, best = max(found.items(), key=lambda kv: kv[1].mean(metric))
        diff = 100 * (r.scores.mean(metric) - best.mean(metric))
        where = f"{r.row.label}" + ("" if r.row.column == "ours" else f", {r.row.column}")
        verdict = "beats" if diff > 0 else "does not beat"
        out.append(
            f"{where}: {METRIC_NAMES[metric]} {100 * r.scores.mean(metric):.1f} {verdict} the "
            f"best baseline ({BASELINE_NAMES[best_name]}, {100 * best.mean(metric):.1f}): "
            f"{diff:+.1f} points"
        )
    return out


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _curve_figure(c: Collected) -> Figure | None:
    spec = c.spec
    if spec.curve is None:
        return None
    plt = _pyplot()

    metric = spec.curve.metric
    fig, ax = plt.subplots(figsize=(6.5, 4))
    columns = list(dict.fromkeys(r.row.column for r in c.rows))
    for col in columns:
        ours = sorted((r for r in c.rows if r.row.column == col), key=lambda r: r.row.x or 0.0)
        xs = [r.row.x for r in ours]
        ys = [100 * r.scores.mean(metric) for r in ours]
        err = [100 * r.scores.std(metric) for r in ours]
        ax.errorbar(
            xs,
            ys,
            yerr=err,
            marker="o",
            capsize=3,
            label="emomatch" + ("" if col == "ours" else f" {col}"),
        )
    first_col = [r for r in c.rows if r.row.column == columns[0]]
    for name in BASELINES:
        pts = []
        for r in sorted(first_col, key=lambda r: r.row.x or 0.0):
            s = c.baselines.get(r.baselines or "", {}).get(name)
            if s is not None:
                pts.append((r.row.x, 100 * s.mean(metric)))
        if pts:
            ax.plot(*zip(*pts, strict=True), ls="--", marker=".", label=BASELINE_NAMES[name])
    ax.set_xlabel(spec.curve.x)
    ax.set_ylabel(f"test {METRIC_NAMES[metric]} (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    caption = (
        f"test {METRIC_NAMES[metric]}, mean ± std over the runs of each point; dashed: the "
        "baselines on the same labelled data"
    )
    return Figure("curve", caption, figure_png(fig))


def _loss_figure(r: RowResult) -> Figure | None:
    history = mean_history(r.scores.dirs)
    terms = [t for t in LOSS_TERMS if f"train/{t}" in history or f"val/{t}" in history]
    if not terms:
        return None
    plt = _pyplot()

    cols = 3
    rows = math.ceil(len(terms) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(11, 3 * rows), squeeze=False)
    for ax, term in zip(axes.flat, terms, strict=False):
        for split, style in (("train", "-"), ("val", "--")):
            key = f"{split}/{term}"
            if key in history:
                xs, ys = history[key]
                ax.plot(xs, ys, style, marker=".", label="validation" if split == "val" else split)
        ax.set_title(term)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(terms) :]:
        ax.axis("off")
    fig.tight_layout()
    n = len(r.scores.dirs)
    caption = (
        f"{r.row.label} ({r.row.column}): weighted loss terms per epoch (as they enter Eq. 9), "
        f"mean over {n} run(s); validation has no unlabelled stream; a flat 0 is a term "
        "switched off"
    )
    return Figure(f"loss-{r.row.name}", caption, figure_png(fig))


def _wall(c: Collected, r: RowResult) -> str:
    total = 0.0
    approx = False
    for d in r.scores.dirs:
        key = str(d.resolve().relative_to(c.source.resolve())) if c.manifest else None
        if key is not None and key in c.timings:
            total += c.timings[key]
        else:
            # no timing recorded (a run trained outside `emomatch experiment`): from the files,
            # which miss the time before a resumption
            approx = True
            total += max(
                0.0, (d / "metrics.json").stat().st_mtime - (d / "config.yaml").stat().st_mtime
            )
    return ("≈ " if approx else "") + f"{total:.0f} s"


def build_blocks(c: Collected, folder: Path) -> tuple[list[Block], list[Figure]]:
    spec = c.spec
    blocks: list[Block] = [("h1", spec.title)]
    figures: list[Figure] = []
    if spec.about:
        blocks.append(("p", spec.about.strip()))
    m = c.manifest
    n_runs = {len(r.scores.runs) for r in c.rows}
    spread = (
        (
            f"folds {m.get('folds')}, {m.get('seeds', 1)} seed(s) per fold"
            if m.get("folds")
            else f"{m.get('seeds', 1)} seed(s)"
        )
        if m
        else "as trained"
    )
    blocks.append(
        (
            "p",
            f"Test split; mean ± std over the training runs of each cell ({spread}; "
            f"{'/'.join(str(n) for n in sorted(n_runs))} run(s) per cell), in percent. "
            "The baselines (logistic regression, linear SVM on utterance-level features, C "
            "chosen on validation) use the same store, modalities and splits.",
        )
    )
    if any(r.row.paper for r in c.rows):
        blocks.append(
            (
                "p",
                f"**paper** columns: the paper's own numbers ({spec.paper_corpus}), reference "
                "values copied from its tables, not measured here; they match the row's "
                "setting, not necessarily its corpus or features.",
            )
        )
    head, body, notes = _table(c)
    blocks.append(("table", (head, body)))
    for note in notes:
        blocks.append(("p", note))
    if m.get("missing_rows"):
        blocks.append(("p", f"Rows without a finished run yet: {', '.join(m['missing_rows'])}."))
    verdicts = _against_baselines(c)
    if verdicts:
        blocks.append(("h2", "Against the baselines"))
        blocks.append(("list", verdicts))
    curve = _curve_figure(c)
    if curve is not None:
        blocks.append(("h2", "Curve"))
        blocks.append(("figure", curve))
        figures.append(curve)
    blocks.append(("h2", "Confusion matrices"))
    blocks.append(
        (
            "p",
            "Counts summed over the runs of each row; the colour and the first number of each "
            "cell are the share of the true class (rows sum to 1), the count is in brackets.",
        )
    )
    for r in c.rows:
        classes = r.scores.runs[0]["classes"]
        fig = Figure(
            f"confusion-{r.row.name}",
            f"{r.row.label} ({r.row.column})",
            confusion_png(r.scores.confusion().tolist(), classes),
        )
        blocks.append(("figure", fig))
        figures.append(fig)
    blocks.append(("h2", "Loss terms per epoch"))
    for r in c.rows:
        loss = _loss_figure(r)
        if loss is not None:
            blocks.append(("figure", loss))
            figures.append(loss)
    blocks.append(("h2", "What was run"))
    facts = []
    if m.get("command_line"):
        facts.append(f"command: `{m['command_line']}`")
    if m:
        facts.append(f"experiment file: `{spec.name}`; base config: `{m.get('base_config')}`")
        facts.append(f"overrides given to every row: `{' '.join(m.get('overrides') or []) or '-'}`")
    runs_table = []
    for r in c.rows:
        seeds = sorted({int(x["seed"]) for x in r.scores.runs if "seed" in x})
        # each fold's run saved its own split field; the row's config has the base one
        fields = sorted({str(_run_config(d)["data"]["split_field"]) for d in r.scores.dirs})
        sets = " ".join(f"{k}={json.dumps(v)}" for k, v in {**spec.set, **r.row.set}.items())
        runs_table.append(
            [r.row.name, sets or "-", ", ".join(fields), ", ".join(map(str, seeds)), _wall(c, r)]
        )
    facts.append(f"versions: {json.dumps(m.get('versions') or versions())}")
    blocks.append(("list", facts))
    blocks.append(
        ("table", (["row", "overrides", "split field", "seeds", "wall time"], runs_table))
    )
    if m.get("base_config_text"):
        blocks.append(("details", ("base config", m["base_config_text"])))
    import yaml

    for r in c.rows:
        text = yaml.safe_dump(r.config, sort_keys=False)
        blocks.append(("details", (f"config of {r.row.name}", text)))
    return blocks, figures


def render_markdown(blocks: Sequence[Block]) -> str:
    out = []
    for kind, value in blocks:
        if kind in ("h1", "h2"):
            out.append(f"{'#' * int(kind[1])} {value}\n")
        elif kind == "p":
            out.append(f"{value}\n")
        elif kind == "list":
            out.append("\n".join(f"- {item}" for item in value) + "\n")
        elif kind == "table":
            head, body = value
            lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            lines += ["| " + " | ".join(row) + " |" for row in body]
            out.append("\n".join(lines) + "\n")
        elif kind == "figure":
            out.append(f"![{value.caption}](figures/{value.name}.png)\n\n*{value.caption}*\n")
        elif kind == "details":
            title, text = value
            out.append(
                f"<details><summary>{title}</summary>\n\n```yaml\n{text.rstrip()}\n```\n\n"
                "</details>\n"
            )
    return "\n".join(out)


def _inline(text: str) -> str:
    """The two Markdown marks the blocks use (**bold**, `code`) as HTML, the rest escaped."""
    escaped = html.escape(str(text))
    parts = escaped.split("`")
    for i in range(1, len(parts), 2):
        parts[i] = f"<code>{parts[i]}</code>"
    joined = "".join(parts)
    bold = joined.split("**")
    for i in range(1, len(bold), 2):
        bold[i] = f"<b>{bold[i]}</b>"
    return "".join(bold)


STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}
th{background:#f3f3f3}figure{margin:1em 0}figcaption{font-size:13px;color:#555}
img{max-width:100%}pre{background:#f6f6f6;padding:8px;overflow-x:auto;font-size:12px}"""


def render_html(blocks: Sequence[Block]) -> str:
    title = next((v for k, v in blocks if k == "h1"), "emomatch report")
    out = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
    ]
    for kind, value in blocks:
        if kind in ("h1", "h2"):
            out.append(f"<{kind}>{html.escape(value)}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{_inline(value)}</p>")
        elif kind == "list":
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in value) + "</ul>")
        elif kind == "table":
            head, body = value
            out.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head))
            out.append("</tr>")
            for row in body:
                out.append("<tr>" + "".join(f"<td>{html.escape(x)}</td>" for x in row) + "</tr>")
            out.append("</table>")
        elif kind == "figure":
            data = base64.b64encode(value.png).decode("ascii")
            out.append(
                f'<figure><img alt="{html.escape(value.caption)}" '
                f'src="data:image/png;base64,{data}"><figcaption>'
                f"{html.escape(value.caption)}</figcaption></figure>"
            )
        elif kind == "details":
            t, text = value
            out.append(
                f"<details><summary>{html.escape(t)}</summary>"
                f"<pre>{html.escape(text)}</pre></details>"
            )
    out.append("</body></html>")
    return "\n".join(out)


def write_report_files(c: Collected, out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    blocks, figures = build_blocks(c, out)
    (out / "figures").mkdir(exist_ok=True)
    for fig in figures:
        atomic_write_bytes(out / "figures" / f"{fig.name}.png", fig.png)
    atomic_write_text(out / "report.md", render_markdown(blocks))
    atomic_write_text(out / "report.html", render_html(blocks))
    head, body, _ = _table(c)
    summary = {
        "experiment": c.spec.name,
        "table": {"header": head, "rows": body},
        "rows": {
            r.row.name: {
                "label": r.row.label,
                "column": r.row.column,
                "runs": len(r.scores.runs),
                **{k: r.scores.mean(k) for k in METRIC_NAMES},
                **{f"{k}_std": r.scores.std(k) for k in METRIC_NAMES},
                "paper": r.row.paper,
            }
            for r in c.rows
        },
        "baselines": {
            data: {
                name: {
                    **{k: s.mean(k) for k in METRIC_NAMES},
                    **{f"{k}_std": s.std(k) for k in METRIC_NAMES},
                }
                for name, s in found.items()
            }
            for data, found in c.baselines.items()
        },
    }
    atomic_write_text(out / "results.json", json.dumps(summary, indent=2))
    return summary


def write_experiment_report(folders: Path | Sequence[Path], out: str | Path) -> dict[str, Any]:
    """Collect the finished runs of ``folders`` and write ``out/report.md``, ``report.html``,
    ``results.json`` and ``figures/``; returns what ``results.json`` holds."""
    given = [folders] if isinstance(folders, Path) else list(folders)
    return write_report_files(collect(given), Path(out))
