"""The built-in demo: a synthetic corpus, fully vs semi-supervised A+V+L, side by side."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emomatch.config import config_from_dict
from emomatch.metrics import METRIC_KEYS, aggregate
from emomatch.runs import train_and_report
from emomatch.store import FeatureStore
from emomatch.synthetic import SyntheticCorpus, write_synthetic_store

#: A small labeled set and a larger unlabeled pool skewed towards neutral, like IEMOCAP + AMI.
DEMO_CORPUS = SyntheticCorpus(
    n_train=240,
    n_validation=200,
    n_test=400,
    n_unlabeled=2000,
    unlabeled_class_weights=(0.15, 0.3, 0.4, 0.15),
    seed=2020,
)

DEMO_MODEL = {"feedforward_dim": 128, "acoustic_hidden": [128, 128], "lexical_hidden": [128]}


def demo_config(store: Path, semi: bool, seed: int, epochs: int) -> dict[str, Any]:
    return {
        "seed": seed,
        "data": {"store": str(store), "modalities": ["acoustic", "visual", "lexical"]},
        "model": dict(DEMO_MODEL),
        "loss": {"unlabeled": semi},
        "train": {"batch_size": 32, "unlabeled_batch_size": 128, "max_epochs": epochs},
    }


def run_demo(
    out: str | Path, seeds: Sequence[int] = (0, 1, 2), epochs: int = 15, progress: bool = True
) -> dict[str, Any]:
    out = Path(out)
    store_path = out / "store"
    if (store_path / "store.json").exists():
        FeatureStore(store_path)  # reuse a finished store; fail loudly on a broken one
    else:
        write_synthetic_store(DEMO_CORPUS, store_path)
    summary: dict[str, Any] = {}
    for mode, semi in (("fully", False), ("semi", True)):
        runs = []
        for seed in seeds:
            raw = demo_config(store_path.resolve(), semi, seed, epochs)
            raw["train"]["progress_bar"] = progress
            cfg = config_from_dict(raw, "demo")
            run_dir = out / f"{mode}-seed{seed}"
            done = run_dir / "metrics.json"
            if done.is_file():
                runs.append(json.loads(done.read_text()))
                continue
            runs.append(
                train_and_report(
                    cfg, run_dir, resume=(run_dir / "checkpoints" / "last.ckpt").is_file()
                )
            )
        summary[mode] = {**aggregate(runs), "runs": runs}
    summary["seeds"] = list(seeds)
    summary["corpus"] = {
        "train": DEMO_CORPUS.n_train,
        "validation": DEMO_CORPUS.n_validation,
        "test": DEMO_CORPUS.n_test,
        "unlabeled": DEMO_CORPUS.n_unlabeled,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def format_table(summary: dict[str, Any]) -> str:
    lines = [f"{'metric':<12}{'fully':>16}{'semi':>16}"]
    for key in METRIC_KEYS:
        cells = [
            f"{100 * summary[m][key]:6.1f} ± {100 * summary[m][key + '_std']:4.1f}"
            for m in ("fully", "semi")
        ]
        lines.append(f"{key:<12}{cells[0]:>16}{cells[1]:>16}")
    return "\n".join(lines)
