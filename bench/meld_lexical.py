"""The lexical branch on real MELD text: L-only emomatch vs logistic regression, same features.

    .venv/bin/python bench/meld_lexical.py [--root ../shared/data/meld] [--work runs/meld_lexical]

MELD's official test split is held back on these machines, so: train on the official train split
minus 10 % of its dialogues (validation, for model selection), test on the official dev split.
Features: MiniLM-L6 word embeddings (384-d, 12 words), the default lexical extractor. Prints
weighted F1 (MELD's metric) for emomatch's L-only model and for a logistic regression on the
mean of the word vectors, fitted on the same training rows. Last line
``meld_dev_weighted_f1: <emomatch>``. The extraction is resumable (``--work`` keeps it).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

from emomatch.config import config_from_dict
from emomatch.corpora import prepare_corpus, read_manifest, write_manifest
from emomatch.extract.run import build_extractors, run_extraction
from emomatch.runs import train_and_report
from emomatch.store import FeatureStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("../shared/data/meld"))
    parser.add_argument("--work", type=Path, default=Path("runs/meld_lexical"))
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--post-norm", action="store_true", help="post-norm Transformer blocks")
    args = parser.parse_args()
    if not (args.root / "train_sent_emo.csv").is_file():
        print(f"MELD CSVs not found under {args.root}: skipped")
        return

    prepared = prepare_corpus("meld", args.root, args.work / "prepared")
    df = read_manifest(prepared.manifest).drop(columns="_line")
    # Official dev becomes the test split; 10 % of the training dialogues select the model.
    dialogues = sorted({i.split("_utt")[0] for i in df.loc[df["split"] == "train", "id"]})
    rng = np.random.default_rng(0)
    held = set(rng.choice(dialogues, size=len(dialogues) // 10, replace=False).tolist())
    is_train = df["split"] == "train"
    df.loc[df["split"] == "validation", "split"] = "test"
    df.loc[is_train & df["id"].map(lambda i: i.split("_utt")[0] in held), "split"] = "validation"
    manifest = write_manifest(df, args.work / "manifest.csv")
    print({k: int(v) for k, v in df["split"].value_counts().items()})

    store = args.work / "store"
    extractors = build_extractors(["lexical"], {"lexical": {"max_words": 12}})
    t0 = time.perf_counter()
    summary = run_extraction(manifest, store, extractors, workers=args.workers, progress=False)
    took = time.perf_counter() - t0
    print(f"lexical extraction: {summary}; {summary.done / max(took, 1e-9):.0f} utterances/s")

    fs = FeatureStore(store)
    classes = fs.classes

    def pooled(split: str) -> tuple[np.ndarray, np.ndarray]:
        rows = fs.select("split", split)
        x = fs.fetch("lexical", rows)
        n = fs.lengths("lexical", rows)
        mean = x.sum(1) / np.maximum(n, 1)[:, None]
        return mean, fs.labels(rows)

    xtr, ytr = pooled("train")
    xte, yte = pooled("test")
    clf = LogisticRegression(max_iter=2000, C=1.0).fit(xtr, ytr)
    lr_wf1 = f1_score(yte, clf.predict(xte), average="weighted")

    cfg = config_from_dict(
        {
            "seed": 0,
            "data": {"store": str(store.resolve()), "modalities": ["lexical"]},
            # As configs/meld.yaml: pre-norm blocks (post-norm barely trains here, docs/method.md)
            "model": {"norm_first": not args.post_norm},
            "loss": {"unlabeled": False},
            "train": {
                "max_epochs": args.epochs,
                "select_metric": "weighted_f1",
                "progress_bar": False,
            },
        },
        "meld_lexical",
    )
    run_dir = args.work / ("run-postnorm" if args.post_norm else "run")
    t0 = time.perf_counter()
    metrics = train_and_report(
        cfg, run_dir, resume=(run_dir / "checkpoints" / "last.ckpt").exists()
    )
    print(f"emomatch L-only training: {time.perf_counter() - t0:.0f} s")
    print(f"classes {classes}")
    print(f"logistic regression on mean word vectors, dev weighted F1: {100 * lr_wf1:.1f}")
    print(
        f"emomatch L-only, dev: weighted F1 {100 * metrics['weighted_f1']:.1f}, "
        f"WA {100 * metrics['wa']:.1f}, UA {100 * metrics['ua']:.1f} "
        f"(paper, BERT-large, official test: 53.0 weighted F1)"
    )
    print(f"meld_dev_weighted_f1: {metrics['weighted_f1']:.4f}")


if __name__ == "__main__":
    main()
