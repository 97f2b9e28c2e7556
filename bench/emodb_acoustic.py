"""EmoDB acoustic benchmark: IS10 features from real speech, leave-one-speaker-out, 4 classes.

    .venv/bin/python bench/emodb_acoustic.py [--root /work/shared/data/emodb/wav]
                                             [--epochs 40] [--seeds 1] [--out DIR]

Classes (EmoDB letter): anger (W), happiness (F), sadness (T), neutral (N); the other emotions
are left out. File names are ``SSTTTEV.wav``: SS speaker, E emotion letter.

1. Extraction: emomatch's ``OpenSmileExtractor`` (IS10, 1582 functionals), one object in this
   process; files/s and real-time factor.
2. Leave-one-speaker-out over the speakers present. For the fold that holds speaker S out, S is
   the test speaker and nothing about S is used before testing.

   a. scikit-learn: ``StandardScaler`` + ``SVC`` (rbf and linear, C=1, class_weight balanced),
      fitted on all other speakers, fixed hyper-parameters (no selection at all); and the rbf
      SVC once more fitted on emomatch's six training speakers only.
   b. emomatch's acoustic model, fully supervised (``loss.unlabeled: false``), trained on six
      speakers; the next speaker (in sorted order, cyclically) is the validation speaker that
      selects the epoch (validation UA); the test speaker is only scored with that checkpoint.
      One feature store with ``fold_1..fold_K`` fields, trained with ``emomatch.runs.
      train_folds``.

UA = mean per-class recall, WA = accuracy, each averaged over the held-out speakers. Last line:
``emodb_loso_ua: <emomatch UA>``. Without the data folder it says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emomatch.extract import Features, ItemError, Utterance
from emomatch.extract.acoustic import OpenSmileExtractor
from emomatch.store import StoreWriter

DEFAULT_ROOT = Path("/work/shared/data/emodb/wav")
#: EmoDB emotion letter -> class of the 4-class view
EMOTIONS = {"W": "anger", "F": "happiness", "T": "sadness", "N": "neutral"}
CLASSES = ["anger", "happiness", "sadness", "neutral"]


def read_corpus(root: Path) -> pd.DataFrame:
    """One row per 4-class utterance: id, path, speaker, text code, label."""
    rows = []
    for path in sorted(root.glob("*.wav")):
        name = path.stem
        if len(name) != 7:
            print(f"skipping {path.name}: not an EmoDB name (SSTTTEV.wav)", file=sys.stderr)
            continue
        letter = name[5]
        if letter in EMOTIONS:
            rows.append(
                {
                    "id": name,
                    "path": path,
                    "speaker": name[:2],
                    "text": name[2:5],
                    "label": EMOTIONS[letter],
                }
            )
    return pd.DataFrame(rows)


def extract(df: pd.DataFrame) -> tuple[np.ndarray, list[bool], dict[str, Any]]:
    start = time.perf_counter()
    extractor = OpenSmileExtractor(feature_set="IS10")
    spec = extractor.spec()
    results = extractor.extract([Utterance(r.id, audio=r.path) for r in df.itertuples()])
    seconds = time.perf_counter() - start
    ok = [isinstance(r, Features) for r in results]
    for row, r in zip(df.itertuples(), results, strict=True):
        if isinstance(r, ItemError):
            print(f"  {row.id}: {r.reason}", file=sys.stderr)
    features = np.stack(
        [r.array if isinstance(r, Features) else np.zeros(spec.dim, np.float32) for r in results]
    )
    media = sum(r.seconds for r in results if isinstance(r, Features))
    info = {
        "files": len(results),
        "failed": ok.count(False),
        "seconds": seconds,
        "media_seconds": media,
        "files_per_s": len(results) / seconds,
        "realtime_factor": media / seconds,
        "spec": spec,
    }
    return features, ok, info


def ua_wa(truth: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    present = [c for c in CLASSES if (truth == c).any()]
    recalls = [float((predicted[truth == c] == c).mean()) for c in present]
    return float(np.mean(recalls)), float((truth == predicted).mean())


def svm_loso(
    df: pd.DataFrame, x: np.ndarray, kernel: str, drop_validation: bool = False
) -> dict[str, Any]:
    """``drop_validation``: train on the same six speakers as emomatch (its validation speaker
    left unused), for a like-for-like comparison."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    per_speaker = {}
    labels = df["label"].to_numpy()
    speakers = sorted(df["speaker"].unique())
    for k, speaker in enumerate(speakers):
        test = (df["speaker"] == speaker).to_numpy()
        train = ~test
        if drop_validation:
            train &= (df["speaker"] != speakers[(k + 1) % len(speakers)]).to_numpy()
        model = make_pipeline(StandardScaler(), SVC(kernel=kernel, C=1.0, class_weight="balanced"))
        model.fit(x[train], labels[train])
        per_speaker[speaker] = ua_wa(labels[test], model.predict(x[test]))
    uas = [v[0] for v in per_speaker.values()]
    was = [v[1] for v in per_speaker.values()]
    return {
        "ua": float(np.mean(uas)),
        "ua_std": float(np.std(uas)),
        "wa": float(np.mean(was)),
        "wa_std": float(np.std(was)),
        "per_speaker": per_speaker,
    }


def write_fold_store(df: pd.DataFrame, x: np.ndarray, spec: Any, path: Path) -> list[str]:
    """One store, fold k = speaker k held out for test, the next speaker for validation."""
    speakers = sorted(df["speaker"].unique())
    fields = ["split", *(f"fold_{k}" for k in range(1, len(speakers) + 1))]
    index = pd.DataFrame(
        {
            "id": df["id"].to_numpy(),
            "speaker": df["speaker"].to_numpy(),
            "label": df["label"].to_numpy(),
            "split": "train",
            "acoustic_length": np.ones(len(df), dtype=np.int32),
        }
    )
    for k, test_speaker in enumerate(speakers, start=1):
        validation_speaker = speakers[k % len(speakers)]
        role = np.full(len(df), "train", dtype=object)
        role[(df["speaker"] == validation_speaker).to_numpy()] = "validation"
        role[(df["speaker"] == test_speaker).to_numpy()] = "test"
        index[f"fold_{k}"] = role
    writer = StoreWriter(
        path,
        classes=CLASSES,
        modalities={"acoustic": spec},
        fields=fields,
        info={"corpus": "emodb", "view": "4-class W/F/T/N", "protocol": "LOSO"},
    )
    writer.write_part(index, {"acoustic": x.astype(np.float32)})
    return speakers


def emomatch_loso(store: Path, out: Path, epochs: int, seed: int) -> dict[str, Any]:
    from emomatch.config import config_from_dict
    from emomatch.runs import train_folds

    cfg = config_from_dict(
        {
            "seed": seed,
            "data": {"store": str(store), "modalities": ["acoustic"]},
            "loss": {"unlabeled": False, "class_weights": True},
            "train": {
                "batch_size": 32,
                "max_epochs": epochs,
                "lr": 1e-3,
                "select_metric": "ua",
                "progress_bar": False,
                "accelerator": "cpu",
                "devices": 1,
            },
        },
        "emodb benchmark",
    )
    return train_folds(cfg, out)


def quiet() -> None:
    """Lightning's per-fit banners would bury the figures."""
    import pytorch_lightning  # noqa: F401  (it sets its loggers' levels on import)

    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "emomatch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.ERROR)
    os.environ.setdefault("PYTHONWARNINGS", "ignore")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="folder of EmoDB WAVs")
    parser.add_argument("--epochs", type=int, default=25, help="emomatch epochs per fold")
    parser.add_argument("--seeds", type=int, default=3, help="emomatch runs per fold (seeds)")
    parser.add_argument("--out", type=Path, help="keep the store and runs here (default: temp)")
    args = parser.parse_args()
    if not args.root.is_dir():
        print(f"EmoDB folder {args.root} not found; nothing to benchmark")
        return
    quiet()
    df = read_corpus(args.root)
    if df.empty:
        print(f"no 4-class EmoDB files (SSTTTEV.wav, E in W/F/T/N) in {args.root}")
        return
    counts = df["label"].value_counts().reindex(CLASSES).to_dict()
    speakers = sorted(df["speaker"].unique())
    print(f"EmoDB 4-class: {len(df)} files, {len(speakers)} speakers {speakers}, {counts}")

    x, ok, info = extract(df)
    print(
        f"extraction (IS10, {info['spec'].dim} features): {info['files']} files "
        f"({info['media_seconds']:.1f} s of audio) in {info['seconds']:.2f} s = "
        f"{info['files_per_s']:.1f} files/s, real-time factor {info['realtime_factor']:.1f}, "
        f"failed {info['failed']}"
    )
    df, x = df[ok].reset_index(drop=True), x[np.asarray(ok)]

    results: dict[str, Any] = {}
    for key, kernel, six in (
        ("svm_rbf", "rbf", False),
        ("svm_linear", "linear", False),
        ("svm_rbf_6", "rbf", True),
    ):
        started = time.perf_counter()
        results[key] = svm_loso(df, x, kernel, drop_validation=six)
        results[key]["seconds"] = time.perf_counter() - started

    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        store = out / "store"
        write_fold_store(df, x, info["spec"], store)
        runs = []
        started = time.perf_counter()
        for seed in range(args.seeds):
            runs.append(emomatch_loso(store, out / f"runs_seed{seed}", args.epochs, seed))
        seconds = time.perf_counter() - started
        per_speaker: dict[str, list[tuple[float, float]]] = {}
        for run in runs:
            for k, fold in run["folds"].items():
                per_speaker.setdefault(speakers[int(k) - 1], []).append((fold["ua"], fold["wa"]))
        results["emomatch"] = {
            "ua": float(np.mean([r["ua"] for r in runs])),
            "ua_std": float(np.mean([r["ua_std"] for r in runs])),
            "wa": float(np.mean([r["wa"] for r in runs])),
            "wa_std": float(np.mean([r["wa_std"] for r in runs])),
            "per_speaker": {s: tuple(np.mean(v, axis=0).tolist()) for s, v in per_speaker.items()},
            "seconds": seconds,
            "best_epochs": [f["best_epoch"] for r in runs for f in r["folds"].values()],
        }

    print(f"\nleave-one-speaker-out over {len(speakers)} speakers (mean ± std over speakers)")
    print(f"{'method':44s} {'UA':>14s} {'WA':>14s} {'time':>8s}")
    names = {
        "svm_rbf": "StandardScaler + SVC rbf (C=1, balanced)",
        "svm_linear": "StandardScaler + SVC linear (C=1, balanced)",
        "svm_rbf_6": "SVC rbf, emomatch's 6 training speakers only",
        "emomatch": f"emomatch acoustic model ({args.epochs} ep, {args.seeds} seed)",
    }
    for key, name in names.items():
        r = results[key]
        print(
            f"{name:44s} {r['ua']:.3f} ± {r['ua_std']:.3f}  {r['wa']:.3f} ± {r['wa_std']:.3f} "
            f"{r['seconds']:7.1f}s"
        )
    print("\nper held-out speaker UA:  " + "  ".join(speakers))
    for key in names:
        row = results[key]["per_speaker"]
        print(f"  {key:22s} " + "  ".join(f"{row[s][0]:.2f}" for s in speakers))
    print(f"emomatch selected epochs (validation UA): {results['emomatch']['best_epochs']}")
    if args.out is not None:
        (args.out / "emodb_results.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"emodb_loso_ua: {results['emomatch']['ua']:.4f}")


if __name__ == "__main__":
    main()
