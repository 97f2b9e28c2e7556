"""emomatch's built-in baselines on real data: class weights balanced or not, C on validation.

    .venv/bin/python bench/baselines.py [--emodb /work/shared/data/emodb/wav]
                                        [--meld-store STORE] [--work runs/bench_baselines]

1. EmoDB (the shared 8 speakers): a manifest with one ``fold_k`` column per speaker (speaker k is
   the test speaker, the next one in sorted order selects C, the other six train), IS10 features
   through ``emomatch extract``'s own code, then ``emomatch.baseline.run_baselines`` with
   ``folds="all"`` on the 7 classes and on the 4-class view (anger, happiness, sadness, neutral),
   selection metric UA.
2. MELD text (optional): an existing lexical store with a ``split`` field of train / validation /
   test (e.g. the one ``bench/meld_lexical.py`` writes), selection metric weighted F1.

Each is run with ``class_weight`` balanced and none; the table gives test UA, WA and weighted F1
(mean ± std over folds for EmoDB) and the chosen C values. Resumable: ``--work`` keeps the store.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# The EmoDB naming and class views are the acoustic benchmark's (this folder is on sys.path
# when a benchmark runs as a script).
from emodb_acoustic import EMOTIONS, VIEWS  # noqa: E402

from emomatch.baseline import BASELINES, run_baselines
from emomatch.config import config_from_dict
from emomatch.corpora import write_manifest
from emomatch.extract.run import build_extractors, run_extraction
from emomatch.store import FeatureStore, StoreWriter

FOUR = VIEWS["4"]


def emodb_manifest(root: Path, out: Path) -> Path:
    rows = []
    for path in sorted(root.glob("*.wav")):
        name = path.stem
        if len(name) == 7 and name[5] in EMOTIONS:
            rows.append(
                {"id": name, "audio": str(path), "speaker": name[:2], "label": EMOTIONS[name[5]]}
            )
    df = pd.DataFrame(rows)
    df["split"] = "train"
    speakers = sorted(df["speaker"].unique())
    for k, test_speaker in enumerate(speakers, start=1):
        role = np.full(len(df), "train", dtype=object)
        role[(df["speaker"] == speakers[k % len(speakers)]).to_numpy()] = "validation"
        role[(df["speaker"] == test_speaker).to_numpy()] = "test"
        df[f"fold_{k}"] = role
    return write_manifest(df, out)


def four_class_store(store: FeatureStore, out: Path) -> Path:
    """The 4-class view as its own store (a store's classes are all required in training)."""
    if (out / "store.json").is_file():
        return out
    rows = np.flatnonzero(store.index["label"].isin(FOUR).to_numpy())
    index = store.index.iloc[rows][["id", "speaker", "label", *store.fields, "acoustic_length"]]
    writer = StoreWriter(
        out,
        classes=FOUR,
        modalities=store.modalities,
        fields=store.fields,
        info={"view": "EmoDB 4-class"},
    )
    writer.write_part(index.reset_index(drop=True), {"acoustic": store.fetch("acoustic", rows)})
    return out


def run(store: Path, out: Path, modalities: list[str], metric: str, folds: Any) -> dict:
    results = {}
    for weight in ("balanced", "none"):
        cfg = config_from_dict(
            {
                "data": {"store": str(store), "modalities": modalities},
                "train": {"select_metric": metric},
            },
            "bench",
        )
        t0 = time.perf_counter()
        results[weight] = run_baselines(cfg, out / weight, folds=folds, class_weight=weight)
        results[weight]["seconds"] = time.perf_counter() - t0
    return results


def show(title: str, results: dict) -> None:
    print(f"\n{title}")
    print(f"{'class_weight':<13}{'baseline':<12}{'UA':>14}{'WA':>14}{'wF1':>14}  C  (s)")
    for weight, by_name in results.items():
        for name in BASELINES:
            m = by_name[name]
            cells = [
                f"{100 * m[k]:.1f} ± {100 * m.get(k + '_std', 0.0):.1f}"
                for k in ("ua", "wa", "weighted_f1")
            ]
            c = m["C"]
            cs = ",".join(f"{v:g}" for v in c.values()) if isinstance(c, dict) else f"{c:g}"
            print(
                f"{weight:<13}{name:<12}{cells[0]:>14}{cells[1]:>14}{cells[2]:>14}  {cs}"
                f"  ({by_name['seconds']:.0f})"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emodb", type=Path, default=Path("/work/shared/data/emodb/wav"))
    parser.add_argument("--meld-store", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=Path("runs/bench_baselines"))
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.emodb.is_dir():
        manifest = emodb_manifest(args.emodb, args.work / "emodb" / "manifest.csv")
        store = args.work / "emodb" / "store7"
        extractors = build_extractors(["acoustic"], {})
        summary = run_extraction(manifest, store, extractors, workers=args.workers, progress=False)
        print(f"EmoDB IS10 extraction: {summary}")
        four = four_class_store(FeatureStore(store), args.work / "emodb" / "store4")
        for classes, path in (("7", store), ("4", four)):
            results = run(path, args.work / f"emodb{classes}", ["acoustic"], "ua", "all")
            show(f"EmoDB IS10, {classes} classes, leave-one-speaker-out (8 folds)", results)
    else:
        print(f"EmoDB wavs not found under {args.emodb}: skipped")
    if args.meld_store is not None:
        results = run(args.meld_store, args.work / "meld", ["lexical"], "weighted_f1", None)
        show(f"MELD text, store {args.meld_store} (test = its test split)", results)


if __name__ == "__main__":
    main()
