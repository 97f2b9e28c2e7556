"""The report of an experiment, rebuilt from the finished runs on disk.

One Markdown file (figures beside it in ``figures/``) and one self-contained HTML file (the same
figures embedded as base64 PNG): the table in the paper's layout (mean ± std over every fold and
seed), the paper's figures where a row has them, the baselines, confusion matrices, the loss
terms per epoch, the curve of a quantity experiment, and what was run (configs, seeds,
versions, wall times). Everything is read from the run folders, so ``emomatch report`` can
rebuild it at any time.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emomatch.baseline import BASELINES
from emomatch.evaluation.report import confusion_grid_png
from emomatch.experiments.collect import (
    BASELINE_NAMES,
    METRIC_NAMES,
    Collected,
    RowResult,
    collect,
    run_config,
)
from emomatch.experiments.figures import Figure, curve_figure, loss_figure
from emomatch.experiments.layout import versions
from emomatch.experiments.render import Block, render_html, render_markdown
from emomatch.files import atomic_write_bytes, atomic_write_text
from emomatch.rundir import RunFolder


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
            run = RunFolder(d)
            total += max(0.0, run.metrics_path.stat().st_mtime - run.config_path.stat().st_mtime)
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
    curve = curve_figure(c)
    if curve is not None:
        blocks.append(("h2", "Curve"))
        blocks.append(("figure", curve))
        figures.append(curve)
    blocks.append(("h2", "Confusion matrices"))
    blocks.append(
        (
            "p",
            "Counts summed over the runs of each row, one small panel per row; the colour and "
            "the number of each cell are the share of the true class (rows sum to 1).",
        )
    )
    # rows of the same classes side by side (an experiment's rows share them as a rule)
    by_classes: dict[tuple[str, ...], list[tuple[str, list[list[float]]]]] = {}
    for r in c.rows:
        classes = tuple(r.scores.runs[0]["classes"])
        panel = (f"{r.row.label} ({r.row.column})", r.scores.confusion().tolist())
        by_classes.setdefault(classes, []).append(panel)
    for i, (classes, panels) in enumerate(by_classes.items()):
        fig = Figure(
            "confusion-matrices" + (f"-{i + 1}" if i else ""),
            f"confusion matrices: {', '.join(p[0] for p in panels)}",
            confusion_grid_png(panels, classes),
        )
        blocks.append(("figure", fig))
        figures.append(fig)
    blocks.append(("h2", "Loss terms per epoch"))
    for r in c.rows:
        loss = loss_figure(r)
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
        fields = sorted({str(run_config(d)["data"]["split_field"]) for d in r.scores.dirs})
        sets = " ".join(f"{k}={json.dumps(v)}" for k, v in {**spec.set, **r.row.set}.items())
        runs_table.append(
            [
                r.row.name,
                sets or "-",
                ", ".join(fields),
                # how many, then which
                f"{len(seeds)} ({', '.join(map(str, seeds))})",
                _wall(c, r),
            ]
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
