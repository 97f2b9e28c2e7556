"""What `train.modality_dropout` buys: test UA with one modality missing, trained with and without.

    OMP_NUM_THREADS=1 .venv/bin/python bench/modality_dropout.py [--p 0.3] [--seeds 5]
        [--epochs 25] [--out DIR]

A synthetic A+V+L feature store where every modality is noisy and sometimes uninformative, so
fusion matters (192 train, 96 validation, 400 test utterances, 4 classes). Per seed, one run
without and one with modality dropout (`emomatch train`, small dims, selected on validation
with every modality), each exported as a bundle and applied through the Predictor to the test
split: with every modality, then with each one left out (`predict_features` without it, the path
of a clip with no face or no speech: its latent zeroed). Last line:
``modality_dropout_gain: <UA points>``, the mean over seeds and left-out modalities of the
with-minus-without difference.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np

import emomatch
from emomatch import MODALITIES
from emomatch.config import config_from_dict
from emomatch.data import select_split
from emomatch.metrics import classification_metrics
from emomatch.runs import train_and_report
from emomatch.store import FeatureStore
from emomatch.synthetic import SyntheticCorpus, write_synthetic_store

CORPUS = SyntheticCorpus(
    n_train=192,
    n_validation=96,
    n_test=400,
    n_unlabeled=96,
    shapes={"acoustic": (24,), "visual": (6, 12), "lexical": (5, 16)},
    noise={"acoustic": 1.2, "visual": 1.5, "lexical": 1.2},
    uninformative={"acoustic": 0.2, "visual": 0.2, "lexical": 0.2},
    separation=1.0,
    seed=7,
)
MODEL = {
    "latent_dim": 16,
    "acoustic_hidden": [32],
    "visual_hidden": [],
    "lexical_hidden": [32],
    "feedforward_dim": 32,
    "classifier_hidden": [16],
}


def test_uas(bundle: Path, store: Path) -> dict[str, float]:
    """Test UA with every modality (``all``) and with each one left out."""
    predictor = emomatch.load(bundle)
    feats = FeatureStore(store)
    split = select_split(feats, "split", "test", list(MODALITIES), True, "drop")
    x = {m: feats.fetch(m, split.rows) for m in MODALITIES}
    n = {m: feats.lengths(m, split.rows) for m in MODALITIES}
    y = feats.labels(split.rows)
    out = {}
    for left_out in ("all", *MODALITIES):
        kept = [m for m in MODALITIES if m != left_out]
        probs = predictor.predict_features({m: x[m] for m in kept}, {m: n[m] for m in kept})
        out[left_out] = classification_metrics(y, probs.argmax(1), len(predictor.labels))["ua"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--p", type=float, default=0.3)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--out", type=Path, default=None, help="keep the store and runs here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        store = root / "store"
        if not store.exists():
            write_synthetic_store(CORPUS, store)
        rows: dict[float, list[dict[str, float]]] = {0.0: [], args.p: []}
        for seed in range(args.seeds):
            for p in rows:
                cfg = config_from_dict(
                    {
                        "seed": seed,
                        "data": {"store": str(store)},
                        "model": MODEL,
                        "train": {
                            "batch_size": 16,
                            "unlabeled_batch_size": 16,
                            "max_epochs": args.epochs,
                            "modality_dropout": p,
                            "progress_bar": False,
                            "accelerator": "cpu",
                            "devices": 1,
                        },
                    }
                )
                run = root / f"p{p:g}-seed{seed}"
                if not (run / "metrics.json").exists():
                    train_and_report(cfg, run, resume=run.exists())
                bundle = root / f"bundle-p{p:g}-seed{seed}"
                if not bundle.exists():
                    emomatch.export(run, bundle)
                rows[p].append(test_uas(bundle, store))
                shown = "  ".join(f"{k} {v:.3f}" for k, v in rows[p][-1].items())
                print(f"seed {seed} p {p:<4g} UA: {shown}", flush=True)
    print(f"\ntest UA, mean (sd) over {args.seeds} seeds; '-X' = modality X left out")
    print(f"{'p':<6}" + "".join(f"{k if k == 'all' else '-' + k:>16}" for k in rows[0.0][0]))
    for p, results in rows.items():
        cells = []
        for key in results[0]:
            values = [r[key] for r in results]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{np.mean(values):.3f} ({sd:.3f})")
        print(f"{p:<6g}" + "".join(f"{c:>16}" for c in cells))
    gains = [
        with_[m] - without[m]
        for with_, without in zip(rows[args.p], rows[0.0], strict=True)
        for m in MODALITIES
    ]
    full = [w["all"] - o["all"] for w, o in zip(rows[args.p], rows[0.0], strict=True)]
    print(f"with every modality, with minus without: {100 * np.mean(full):+.1f} UA points")
    print(f"modality_dropout_gain: {100 * np.mean(gains):+.1f}")


if __name__ == "__main__":
    main()
