"""metrics.json and the confusion-matrix picture of a run."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emomatch.files import atomic_path, atomic_write_text
from emomatch.rundir import METRICS_FILE


def figure_png(fig: Any) -> bytes:
    """A matplotlib figure as PNG bytes; the figure is closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, dpi=100, format="png")
    plt.close(fig)
    return buf.getvalue()


def confusion_png(confusion: Sequence[Sequence[float]], classes: Sequence[str]) -> bytes:
    """The confusion matrix as a PNG: each cell's colour and first number are the share of its
    true class (row-normalised), the count is in brackets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(confusion, dtype=float)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 2, 1.2 * len(classes) + 1.5))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            color = "white" if norm[i, j] > 0.5 else "black"
            ax.text(
                j,
                i,
                f"{norm[i, j]:.2f}\n({int(cm[i, j])})",
                ha="center",
                va="center",
                color=color,
                fontsize=8,
            )
    fig.tight_layout()
    return figure_png(fig)


def confusion_grid_png(
    panels: Sequence[tuple[str, Sequence[Sequence[float]]]], classes: Sequence[str]
) -> bytes:
    """Several confusion matrices of the same classes as small multiples: one titled panel
    each, up to four a line, one shared colour scale (the share of the true class)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(classes)
    cols = min(4, len(panels))
    lines = -(-len(panels) // cols)
    side = 0.45 * k + 1.2
    fig, axes = plt.subplots(lines, cols, figsize=(side * cols, side * lines + 0.3), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    for ax, (title, confusion) in zip(axes.flat, panels, strict=False):
        cm = np.asarray(confusion, dtype=float)
        norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        ax.set_title(title, fontsize=8)
        ax.set_xticks(range(k), classes, rotation=90, fontsize=6)
        ax.set_yticks(range(k), classes, fontsize=6)
        for i in range(k):
            for j in range(k):
                color = "white" if norm[i, j] > 0.5 else "black"
                ax.text(
                    j, i, f"{norm[i, j]:.2f}", ha="center", va="center", color=color, fontsize=5
                )
    fig.supxlabel("predicted", fontsize=8)
    fig.supylabel("true", fontsize=8)
    fig.tight_layout()
    return figure_png(fig)


def plot_confusion(
    confusion: Sequence[Sequence[float]], classes: Sequence[str], path: Path
) -> None:
    Path(path).write_bytes(confusion_png(confusion, classes))


def write_report(out_dir: str | Path, metrics: dict[str, Any]) -> Path:
    """Write ``metrics.json`` (atomically) and ``confusion.png`` into ``out_dir``; ``metrics``
    holds ``confusion`` and ``classes``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / METRICS_FILE
    atomic_write_text(path, json.dumps(metrics, indent=2))
    with atomic_path(out / "confusion.png") as tmp:
        plot_confusion(metrics["confusion"], metrics["classes"], tmp)
    return path
