"""An experiment's output folder: the names both running and reporting use.

Layout::

    DIR/experiment.json      what was asked (experiment, base config, overrides, folds, seeds),
                             each row's resolved config, versions; rewritten as runs finish
    DIR/timings.json         wall seconds of each training run (summed over resumptions)
    DIR/<row>/               the row's run, as `emomatch train` writes it (fold_k/, seed_S/)
    DIR/baselines/<data>/    `emomatch baseline` on each distinct data setting of the rows
    DIR/report.md, report.html
"""

from __future__ import annotations

import platform
from pathlib import Path

from emomatch.rundir import RunFolder

MANIFEST = "experiment.json"
TIMINGS = "timings.json"
BASELINES_DIR = "baselines"


def training_runs(folder: Path) -> list[Path]:
    """The finished single training runs under a row's folder (a run, its folds, its seeds)."""
    return [run.path for run in RunFolder(folder).training_runs()]


def versions() -> dict[str, str]:
    import numpy
    import pytorch_lightning as pl
    import sklearn
    import torch

    from emomatch.domain import __version__

    return {
        "emomatch": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pytorch_lightning": pl.__version__,
        "numpy": numpy.__version__,
        "scikit-learn": sklearn.__version__,
        "platform": platform.platform(),
    }
