"""The report's figures drawn from collected results: the curve of a quantity experiment and
the loss terms per epoch (confusion matrices come from :mod:`emomatch.evaluation.report`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from emomatch.baseline import BASELINES
from emomatch.evaluation.report import figure_png
from emomatch.experiments.collect import (
    BASELINE_NAMES,
    METRIC_NAMES,
    Collected,
    RowResult,
    mean_history,
)

#: the loss terms drawn, in the order of Eq. 7-9 (``train/`` and ``val/`` prefixes in the CSV)
LOSS_TERMS = ("cls", "rec", "match", "unlabeled_rec", "unlabeled_match", "loss")


@dataclass
class Figure:
    name: str
    caption: str
    png: bytes


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def curve_figure(c: Collected) -> Figure | None:
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


def loss_figure(r: RowResult) -> Figure | None:
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
