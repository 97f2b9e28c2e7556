"""The built-in demo: fully vs semi-supervised A+V+L, side by side.

By default it runs from raw media, as a user would: a generated corpus of speech-like audio,
drawn talking faces and transcripts (``emomatch.synthetic.media``) is extracted with the real
extractors (openSMILE IS10, Haar faces + mini-Xception, MiniLM words), then trained on. The
older feature-level corpus (``source="features"``) skips extraction.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emomatch.baseline import BASELINES, fit_baselines
from emomatch.config import config_from_dict
from emomatch.errors import ConfigError
from emomatch.metrics import METRIC_KEYS, aggregate
from emomatch.runs import resume_or_train
from emomatch.store import FeatureStore
from emomatch.synthetic import SyntheticCorpus, write_synthetic_store

SOURCES = ("media", "features")

#: Raw-media demo: per class 80 labeled clips (train/validation/test 40/16/24) and a 640-clip
#: unlabeled pool skewed towards neutral; about 2 s each.
MEDIA_PER_CLASS = 80
MEDIA_UNLABELED = 640
MEDIA_SEED = 2020
#: The faces fill the 2 s, 12 fps clips: every 3rd frame gives 8 faces per utterance.
MEDIA_EXTRACTORS: dict[str, dict[str, Any]] = {"visual": {"every": 3}, "lexical": {"max_words": 12}}

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


def build_media_store(out: Path, workers: int, progress: bool) -> tuple[Path, dict[str, Any]]:
    """Generate the raw-media corpus (once) and extract it (resumable) into ``out/store``."""
    from emomatch.extract.run import build_extractors, run_extraction
    from emomatch.synthetic.media import write_media_corpus

    manifest = out / "media" / "manifest.csv"
    if not manifest.is_file():
        write_media_corpus(
            out / "media",
            per_class_labeled=MEDIA_PER_CLASS,
            unlabeled=MEDIA_UNLABELED,
            seed=MEDIA_SEED,
        )
    store = out / "store"
    extractors = build_extractors(["acoustic", "visual", "lexical"], MEDIA_EXTRACTORS)
    summary = run_extraction(manifest, store, extractors, workers=workers, progress=progress)
    counts = FeatureStore(store).index["split"].value_counts().to_dict()
    return store, {
        "source": "media",
        "manifest": str(manifest),
        **{k: int(v) for k, v in counts.items()},
        "extraction": {
            "done": summary.done,
            "skipped": summary.skipped,
            "failed": summary.failed,
            "seconds": round(summary.seconds, 1),
            "realtime_factor": round(summary.realtime_factor, 1),
        },
    }


def build_feature_store(out: Path) -> tuple[Path, dict[str, Any]]:
    store = out / "store"
    if (store / "store.json").exists():
        FeatureStore(store)  # reuse a finished store; fail loudly on a broken one
    else:
        write_synthetic_store(DEMO_CORPUS, store)
    return store, {
        "source": "features",
        "train": DEMO_CORPUS.n_train,
        "validation": DEMO_CORPUS.n_validation,
        "test": DEMO_CORPUS.n_test,
        "unlabeled": DEMO_CORPUS.n_unlabeled,
    }


def run_demo(
    out: str | Path,
    seeds: Sequence[int] = (0, 1, 2),
    epochs: int = 15,
    progress: bool = True,
    source: str = "media",
    workers: int = 2,
) -> dict[str, Any]:
    """Build the demo store, train fully and semi-supervised models per seed (finished runs are
    reused, interrupted ones resumed) and write ``out/summary.json``."""
    out = Path(out)
    if source not in SOURCES:
        raise ConfigError(f"demo source must be one of {', '.join(SOURCES)}, got {source!r}")
    if source == "media":
        store_path, corpus = build_media_store(out, workers, progress)
    else:
        store_path, corpus = build_feature_store(out)
    summary: dict[str, Any] = {}
    for mode, semi in (("fully", False), ("semi", True)):
        runs = []
        for seed in seeds:
            raw = demo_config(store_path.resolve(), semi, seed, epochs)
            raw["train"]["progress_bar"] = progress
            cfg = config_from_dict(raw, "demo")
            runs.append(resume_or_train(cfg, out / f"{mode}-seed{seed}", resume=True))
        summary[mode] = {**aggregate(runs), "runs": runs}
    # The simplest alternatives on the same store and splits: semi-supervised learning is worth
    # its cost only where it beats them (C is chosen on validation; the fit is deterministic).
    first = config_from_dict(demo_config(store_path.resolve(), False, seeds[0], epochs), "demo")
    for name, metrics in fit_baselines(first).items():
        summary[name] = {k: metrics[k] for k in (*METRIC_KEYS, "C", "description")}
    summary["seeds"] = list(seeds)
    summary["corpus"] = corpus
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def format_table(summary: dict[str, Any]) -> str:
    """Fully and semi-supervised (mean ± std over seeds) beside the baselines."""
    baselines = [b for b in BASELINES if b in summary]
    lines = [f"{'metric':<12}{'fully':>16}{'semi':>16}" + "".join(f"{b:>12}" for b in baselines)]
    for key in METRIC_KEYS:
        cells = [
            f"{100 * summary[m][key]:6.1f} ± {100 * summary[m][key + '_std']:4.1f}"
            for m in ("fully", "semi")
        ]
        extra = "".join(f"{100 * summary[b][key]:12.1f}" for b in baselines)
        lines.append(f"{key:<12}{cells[0]:>16}{cells[1]:>16}{extra}")
    return "\n".join(lines)
