"""Semi-supervised learning on real two-modality data: RAVDESS face action units + MFCC contour.

    OMP_NUM_THREADS=1 .venv/bin/python bench/ravdess_semi.py [--data /work/shared/data/ravdess]
        [--work runs/bench_ravdess] [--shares 10,25,50,100] [--seeds 5] [--threads 1]
        [--methods fully,semi,logreg,linear_svm,self_training] [--set KEY=VALUE ...]
        [--semi-set KEY=VALUE ...] [--dev] [--diagnose]

Protocol (the data README's): actors 01-20 train, 21-24 test, actor-independent. At each
labelled share, ``share`` % of the training actors' clips are drawn per class
(``emomatch.data.splits.subsample_labeled``, seed = the run's seed) and the rest of them are the
unlabelled pool; every method sees the same draw. The store is written by ``emomatch import``'s
own code (``split`` test = actors 21-24). ``--dev`` tunes without the test actors: actors 01-16
train, 17-20 are scored, 21-24 are never read.

Methods: emomatch with ``configs/ravdess.yaml`` fully supervised (``loss.unlabeled=false``)
and semi-supervised (the recipe, with ``--semi-set`` overrides; ``--set`` goes to both), a
logistic regression and a linear SVM (C chosen by 3-fold cross-validation on the labelled
clips), and self-training (scikit-learn's SelfTrainingClassifier around that logistic
regression: its predictions of at least 0.75 on the pool become labels, repeatedly). The
baselines take the face units and the MFCC contour concatenated, z-normalised on the training
actors' clips.

Prints ``ravdess_semi_ua_<method>_<share>`` (test UA, mean over seeds, points) with its std,
``ravdess_semi_gain_<share>`` (semi minus fully) and ``ravdess_semi_vs_best_baseline_<share>``
(semi minus the best of logreg, linear_svm and self_training). Finished runs are kept in
``--work/results.json`` keyed by their settings, so a rerun with more seeds trains only the new
ones. ``--diagnose`` prints, for the first share and seed, each loss term's share of the
gradient on the encoders and the matching bandwidth against the latent scale.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.semi_supervised import SelfTrainingClassifier
from sklearn.svm import LinearSVC
from threadpoolctl import threadpool_limits

from emomatch.config import DataConfig, ExperimentConfig, LossConfig, load_config
from emomatch.data import select_split
from emomatch.data.splits import training_and_rest
from emomatch.importing import import_features, parse_split_rule
from emomatch.metrics import classification_metrics
from emomatch.store import FeatureStore

DATA = Path("/work/shared/data/ravdess")
METHODS = ("fully", "semi", "logreg", "linear_svm", "self_training")
BASELINES = ("logreg", "linear_svm", "self_training")
TEST_ACTORS = "21,22,23,24"
DEV_ACTORS = "17,18,19,20"
C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
SELF_TRAINING_THRESHOLD = 0.75

INERT_WHEN_FULLY = (
    "loss.pseudo_threshold",
    "loss.pseudo_weight",
    "loss.consistency_weight",
    "loss.view_noise",
    "loss.view_modality_dropout",
    "loss.ema_decay",
    "loss.consistency_on_labeled",
    "data.normalize_on",
)
DATA_DEFAULTS = DataConfig(store=Path(".")).model_dump(mode="json")
#: the emomatch recipe this benchmark trains (its store path is replaced by the bench's)
RECIPE = Path(__file__).resolve().parent.parent / "configs" / "ravdess.yaml"


def build_store(data: Path, work: Path, dev: bool) -> Path:
    store = work / ("store-dev" if dev else "store")
    if (store / "store.json").is_file():
        return store
    rules = [f"test=speaker:{DEV_ACTORS}", f"unused=speaker:{TEST_ACTORS}"] if dev else []
    rules = rules or [f"test=speaker:{TEST_ACTORS}"]
    import_features(
        data / "features.npz",
        data / "manifest.csv",
        store,
        {"visual": "visual_au", "acoustic": "acoustic_mfcc"},
        description="RAVDESS: OpenFace action units (35) and an MFCC contour (259) per clip",
        split_rules=[parse_split_rule(r) for r in rules],
    )
    return store


def make_config(
    store: Path, share: float, seed: int, semi: bool, common: list[str], semi_only: list[str]
) -> ExperimentConfig:
    """The recipe with the bench's overrides: ``--set`` for every emomatch method, then
    ``--semi-set`` for the semi-supervised one, then the run's store, share and seed."""
    fixed = [
        f"seed={seed}",
        f"data.store={store}",
        f"data.train_fraction={share}",
        f"data.subsample_seed={seed}",
        f"loss.unlabeled={str(semi).lower()}",
        "train.accelerator=cpu",
        "train.progress_bar=false",
    ]
    return load_config(RECIPE, [*common, *(semi_only if semi else []), *fixed])


def features(store: FeatureStore, rows: np.ndarray) -> np.ndarray:
    return np.concatenate([store.fetch(m, rows) for m in ("visual", "acoustic")], axis=1)


def run_baseline(method: str, cfg: ExperimentConfig, seed: int) -> float:
    store = FeatureStore(cfg.data.store)
    train, rest = training_and_rest(store, cfg.data)
    test = select_split(store, "split", "test", cfg.data.modalities, True)
    x_lab, y_lab = features(store, train.rows), train.labels()
    x_pool = features(store, rest.rows) if rest is not None else x_lab[:0]
    everything = np.concatenate([x_lab, x_pool])
    mean, std = everything.mean(0), everything.std(0) + 1e-6
    x_lab, x_pool = (x_lab - mean) / std, (x_pool - mean) / std
    x_test = (features(store, test.rows) - mean) / std
    folds = StratifiedKFold(min(3, int(np.bincount(y_lab).min())), shuffle=True, random_state=seed)
    linear = method == "linear_svm"
    model: Any = (
        LinearSVC(class_weight="balanced", max_iter=5000)
        if linear
        else LogisticRegression(class_weight="balanced", max_iter=2000)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search = GridSearchCV(model, {"C": list(C_GRID)}, cv=folds, scoring="balanced_accuracy")
        search.fit(x_lab, y_lab)
        best = search.best_estimator_
        if method == "self_training" and len(x_pool):
            st = SelfTrainingClassifier(best, threshold=SELF_TRAINING_THRESHOLD)
            st.fit(np.concatenate([x_lab, x_pool]), np.r_[y_lab, -np.ones(len(x_pool), int)])
            best = st
    pred = best.predict(x_test)
    return float(classification_metrics(test.labels(), pred, len(store.classes))["ua"])


def run_emomatch(cfg: ExperimentConfig) -> float:
    from emomatch.evaluation import evaluate_checkpoints
    from emomatch.training import fit

    with tempfile.TemporaryDirectory(prefix="ravdess-run-") as tmp:
        ckpt = fit(cfg, Path(tmp) / "run")
        (test,) = evaluate_checkpoints([ckpt], [cfg.data.test_split])
    return float(test["ua"])


def key_of(method: str, cfg: ExperimentConfig) -> str:
    settings = cfg.model_dump(mode="json")
    settings["data"].pop("store")
    if not cfg.loss.unlabeled:
        # inert without the unlabelled stream: a fully supervised run is the same run whatever
        # they hold, and keeps its cached score when only the semi-supervised recipe changes
        defaults = {"loss": LossConfig().model_dump(mode="json"), "data": DATA_DEFAULTS}
        for key in INERT_WHEN_FULLY:
            section, name = key.split(".")
            settings[section][name] = defaults[section][name]
    if method in BASELINES:
        settings = {"data": settings["data"], "seed": settings["seed"]}
    text = json.dumps([method, settings], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def diagnose(cfg: ExperimentConfig) -> None:
    """Each term's share of the encoders' gradient, and the latents' scale against the
    matching bandwidth, on a few training batches: of a fresh model and of the trained one."""
    from emomatch.evaluation import load_checkpoint
    from emomatch.model.losses import objective, prediction_terms, stream_terms
    from emomatch.model.matching import median_sigma
    from emomatch.training import fit
    from emomatch.training.module import EmoMatchModule
    from emomatch.training.prepare import prepare_training_data

    data = prepare_training_data(cfg)
    fresh = EmoMatchModule(
        cfg.model_dump(mode="json"), {m: list(s) for m, s in data.shapes.items()}, data.classes
    )
    fresh.normalizer.set_stats(data.stats)
    with tempfile.TemporaryDirectory(prefix="ravdess-diagnose-") as tmp:
        trained = load_checkpoint(fit(cfg, Path(tmp) / "run"))
    loader, _ = data.loaders(cfg)
    for when, module in (("start", fresh), ("end", trained)):
        module.train()
        model = module.model
        encoders = [p for m in model.modalities for p in model.dae(m).encoder.parameters()]
        norms: dict[str, list[float]] = {}
        scales: list[tuple[float, float, float]] = []
        for step, batch in enumerate(loader):
            if step == 8:
                break
            lab = module.normalized(batch["labeled"])
            gen = torch.Generator().manual_seed(step)
            labels = batch["labeled"]["labels"]
            labeled = stream_terms(model, lab, cfg.loss, labels=labels, generator=gen)
            pool = module.normalized(batch["unlabeled"]) if "unlabeled" in batch else None
            unl = stream_terms(model, pool, cfg.loss, generator=gen) if pool else None
            _, parts = objective(labeled, unl, cfg.loss)
            if pool is not None and cfg.loss.self_training:
                parts.update(prediction_terms(model, pool, cfg.loss, gen))
            for name, value in parts.items():
                if not value.requires_grad:
                    continue
                grads = torch.autograd.grad(value, encoders, retain_graph=True, allow_unused=True)
                total = sum(float(g.pow(2).sum()) for g in grads if g is not None) ** 0.5
                norms.setdefault(name, []).append(total)
            with torch.no_grad():
                z = model.encode(pool if pool is not None else lab)
                a, v = z["acoustic"], z["visual"]
                paired = float((a - v).pow(2).sum(1).sqrt().median())
                scales.append((float(median_sigma(a, v)), paired, float(a.std() + v.std()) / 2))
        total = sum(np.mean(v) for v in norms.values())
        for name, values in norms.items():
            print(f"diagnose_{when}_grad_share_{name}: {np.mean(values) / total:.3f}")
        sigma, paired, spread = np.mean(scales, axis=0)
        print(f"diagnose_{when}_bandwidth: {sigma:.3f}")
        print(f"diagnose_{when}_paired_distance: {paired:.3f}")
        print(f"diagnose_{when}_latent_std: {spread:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--work", type=Path, default=Path("runs/bench_ravdess"))
    ap.add_argument("--shares", default="10,25,50,100")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--set", dest="common", action="append", default=[])
    ap.add_argument("--semi-set", dest="semi_only", action="append", default=[])
    ap.add_argument("--dev", action="store_true")
    ap.add_argument("--diagnose", action="store_true")
    args = ap.parse_args()
    if not (args.data / "features.npz").is_file():
        raise SystemExit(f"error: {args.data}/features.npz is missing (the RAVDESS benchmark data)")
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    for noisy in ("pytorch_lightning", "lightning_fabric", "emomatch"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    args.work.mkdir(parents=True, exist_ok=True)
    store = build_store(args.data, args.work, args.dev)
    shares = [int(s) for s in args.shares.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    cache_file = args.work / ("results-dev.json" if args.dev else "results.json")
    cache = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
    if args.diagnose:
        diagnose(make_config(store, shares[0] / 100, 0, True, args.common, args.semi_only))
    started = time.perf_counter()
    ua: dict[tuple[str, int], list[float]] = {}
    with threadpool_limits(args.threads):
        for share in shares:
            for seed in range(args.seeds):
                for method in methods:
                    semi = method == "semi"
                    cfg = make_config(store, share / 100, seed, semi, args.common, args.semi_only)
                    key = key_of(method, cfg)
                    if key not in cache:
                        t0 = time.perf_counter()
                        if method in BASELINES:
                            cache[key] = run_baseline(method, cfg, seed)
                        else:
                            cache[key] = run_emomatch(cfg)
                        cache_file.write_text(json.dumps(cache, indent=1))
                        took = time.perf_counter() - t0
                        print(
                            f"# {method} share {share} seed {seed}: UA "
                            f"{100 * cache[key]:.1f} ({took:.1f} s)",
                            flush=True,
                        )
                    ua.setdefault((method, share), []).append(100 * cache[key])
    for (method, share), values in sorted(ua.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        print(f"ravdess_semi_ua_{method}_{share}: {np.mean(values):.2f}")
        print(f"ravdess_semi_ua_{method}_{share}_std: {np.std(values):.2f}")
    for share in shares:
        if ("semi", share) in ua and ("fully", share) in ua:
            gain = np.mean(ua["semi", share]) - np.mean(ua["fully", share])
            print(f"ravdess_semi_gain_{share}: {gain:.2f}")
        have = [np.mean(ua[b, share]) for b in BASELINES if (b, share) in ua]
        if ("semi", share) in ua and have:
            margin = np.mean(ua["semi", share]) - max(have)
            print(f"ravdess_semi_vs_best_baseline_{share}: {margin:.2f}")
    print(f"ravdess_semi_seconds: {time.perf_counter() - started:.1f}")
    if len(shares) > 1:
        plot_curve(ua, shares, args.work / "ravdess_curve.png")


def plot_curve(ua: dict[tuple[str, int], list[float]], shares: list[int], out: Path) -> None:
    """Test UA against the labelled share, one line per method (mean, std as a band)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method in METHODS:
        have = [s for s in shares if (method, s) in ua]
        if not have:
            continue
        mean = np.array([np.mean(ua[method, s]) for s in have])
        std = np.array([np.std(ua[method, s]) for s in have])
        ax.plot(have, mean, marker="o", label=method)
        ax.fill_between(have, mean - std, mean + std, alpha=0.15)
    ax.set_xlabel("labelled share of the training actors' clips (%)")
    ax.set_ylabel("test UA (%)")
    ax.set_title("RAVDESS, face units + MFCC, actors 21-24")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    print(f"ravdess_semi_plot: {out}")


if __name__ == "__main__":
    main()
