"""Built-in baselines: a logistic regression and a linear SVM on utterance-level features.

They are what a user with a real corpus would try first, so ``emomatch baseline`` runs them on
the same store, modalities and splits as ``emomatch train`` and writes the same ``metrics.json``:
the paper's model is worth its cost only where it beats them.

Features: per utterance, the acoustic vector and each sequence modality's mean over its valid
positions (the store's lengths; padding never counts), concatenated in ``data.modalities`` order.
Each dimension is z-normalised with the mean and std of the training split's utterances that
have the modality. With ``data.missing: mask`` a missing modality is all zeros after
normalisation (the training mean), so it pulls the decision towards no class.

Selection: for each C of the grid one model is fitted on the training split only and scored on
the validation split with ``train.select_metric``; the best C (the smallest on a tie: the most
regularised) is kept as fitted, without a refit on train + validation. Only then is the test
split read, and it is scored once.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC
from threadpoolctl import threadpool_limits

from emomatch.config import ExperimentConfig
from emomatch.data import Split, check_finite, check_shapes, select_split
from emomatch.data.folds import choose_folds
from emomatch.data.splits import training_split
from emomatch.errors import ConfigError, DataError
from emomatch.evaluation import write_report
from emomatch.files import atomic_write_text, hold_lock
from emomatch.metrics import METRIC_KEYS, aggregate, classification_metrics
from emomatch.rundir import METRICS_FILE
from emomatch.store import FeatureStore

log = logging.getLogger(__name__)

#: name -> what it is; the name is also the sub-folder of the output
BASELINES: dict[str, str] = {
    "logreg": "logistic regression (multinomial, L2, lbfgs)",
    "linear_svm": "linear SVM (one-vs-rest, squared hinge, L2, liblinear)",
}
DEFAULT_C_GRID: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2)
CLASS_WEIGHTS = ("balanced", "none")
#: measured on EmoDB and MELD, see docs/method.md ("Baselines")
DEFAULT_CLASS_WEIGHT = "balanced"
# Rows pooled per read: a paper-scale lexical chunk (22 x 1024) stays around 20 MB.
CHUNK = 256


def utterance_features(split: Split, modalities: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """One row per utterance of the split: the modalities' utterance-level vectors concatenated
    (sequences mean-pooled over their valid positions), and an n x M mask of which modalities
    each utterance has. A missing modality's block is zero."""
    store = split.store
    n = len(split)
    blocks = []
    present = np.zeros((n, len(modalities)), dtype=bool)
    for j, m in enumerate(modalities):
        spec = store.modalities[m]
        block = np.zeros((n, spec.dim), dtype=np.float64)
        start = 0
        for rows, x in store.iter_chunks(m, split.rows, chunk=CHUNK):
            lengths = store.lengths(m, rows)
            if x.ndim == 3:
                valid = np.arange(x.shape[1])[None, :] < lengths[:, None]
                # where(), not a product: NaN * 0 in padding would still poison the sum.
                total = np.where(valid[..., None], x, 0.0).sum(1, dtype=np.float64)
                pooled = total / np.maximum(lengths, 1)[:, None]
            else:
                pooled = np.where((lengths > 0)[:, None], x, 0.0).astype(np.float64)
            if not np.isfinite(pooled).all():
                # Names the utterance and modality.
                check_finite(Split(store, split.name, rows), [m])
            block[start : start + len(rows)] = pooled
            present[start : start + len(rows), j] = lengths > 0
            start += len(rows)
        blocks.append(block)
    return np.concatenate(blocks, axis=1), present


@dataclass
class ZNorm:
    """Per-dimension z-normalisation fitted on the training split's utterances."""

    mean: np.ndarray
    std: np.ndarray
    #: which columns belong to each modality, in order
    blocks: list[slice] = field(default_factory=list)

    @classmethod
    def fit(cls, x: np.ndarray, present: np.ndarray, dims: Sequence[int]) -> ZNorm:
        bounds = np.cumsum([0, *dims])
        blocks = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        mean = np.zeros(x.shape[1])
        std = np.ones(x.shape[1])
        for j, cols in enumerate(blocks):
            # Absent utterances are zeros that would bias the statistics.
            rows = x[present[:, j], cols]
            if len(rows):
                mean[cols] = rows.mean(0)
                std[cols] = rows.std(0)
        # A constant dimension carries nothing; dividing by ~0 would blow it up.
        std[std < 1e-6] = 1.0
        return cls(mean=mean, std=std, blocks=blocks)

    def __call__(self, x: np.ndarray, present: np.ndarray) -> np.ndarray:
        z = (x - self.mean) / self.std
        for j, cols in enumerate(self.blocks):
            z[~present[:, j], cols] = 0.0
        return z


def make_classifier(name: str, c: float, class_weight: str, seed: int) -> Any:
    weight = "balanced" if class_weight == "balanced" else None
    if name == "logreg":
        return LogisticRegression(C=c, class_weight=weight, max_iter=2000, random_state=seed)
    if name == "linear_svm":
        return LinearSVC(C=c, class_weight=weight, dual="auto", max_iter=10000, random_state=seed)
    raise ConfigError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")


def fit_classifier(
    name: str, c: float, class_weight: str, seed: int, x: np.ndarray, y: np.ndarray
) -> tuple[Any, bool]:
    """A fitted classifier and whether its solver converged."""
    model = make_classifier(name, c, class_weight, seed)
    with warnings.catch_warnings(record=True) as caught, threadpool_limits(limits=1):
        warnings.simplefilter("always", ConvergenceWarning)
        # One BLAS thread: these problems are small, and on the shared 2-core machine
        # OpenBLAS's threads fought for the cores (a 301 x 1582 EmoDB fold: logistic
        # regression 43 s with 2 threads, 1.2 s with 1).
        model.fit(x, y)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return model, converged


@dataclass
class Selection:
    """The model kept for one baseline and how it was chosen."""

    name: str
    model: Any
    c: float
    validation: dict[str, Any]
    scores: dict[str, float]
    not_converged: list[float]


def select_c(
    name: str,
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray],
    num_classes: int,
    metric: str,
    c_grid: Sequence[float],
    class_weight: str,
    seed: int,
) -> Selection:
    """Fit one model per C on ``train``, keep the one with the best validation ``metric``
    (the smallest C on a tie)."""
    best: Selection | None = None
    scores: dict[str, float] = {}
    not_converged: list[float] = []
    for c in sorted(c_grid):
        model, converged = fit_classifier(name, c, class_weight, seed, *train)
        if not converged:
            not_converged.append(c)
        val = classification_metrics(validation[1], model.predict(validation[0]), num_classes)
        scores[repr(c)] = val[metric]
        log.info("%s C=%g: validation %s %.4f", name, c, metric, val[metric])
        if best is None or val[metric] > best.validation[metric]:
            best = Selection(name, model, c, val, scores, not_converged)
    assert best is not None
    if not_converged:
        log.warning("%s: the solver did not converge for C in %s", name, not_converged)
    return best


def _check_options(models: Sequence[str], c_grid: Sequence[float], class_weight: str) -> None:
    unknown = [m for m in models if m not in BASELINES]
    if unknown or not models:
        raise ConfigError(
            f"unknown baseline(s) {unknown or '(none given)'}; known: {', '.join(BASELINES)}"
        )
    if not c_grid or any(not np.isfinite(c) or c <= 0 for c in c_grid):
        raise ConfigError(f"every C must be a positive number, got {list(c_grid)}")
    if class_weight not in CLASS_WEIGHTS:
        raise ConfigError(
            f"class weight must be one of {', '.join(CLASS_WEIGHTS)}, got {class_weight!r}"
        )


def _fit_splits(
    store: FeatureStore, cfg: ExperimentConfig, split_field: str
) -> tuple[Split, Split]:
    """The training and validation splits, checked; the test split is only seen to exist."""
    d = cfg.data
    mods = list(d.modalities)
    # The index column alone says whether the test split exists: a typo fails now, not after
    # fitting, and neither the test labels nor the test features are read.
    test_values = [d.test_split] if isinstance(d.test_split, str) else d.test_split
    if not any(len(store.select(split_field, v)) for v in test_values):
        raise DataError(
            f"store {store.path} has no utterance with {split_field} == {d.test_split!r}"
        )
    train = training_split(store, d, split_field)
    validation = select_split(store, split_field, d.validation_split, mods, True, d.missing)
    return train, validation


def fit_baselines(
    cfg: ExperimentConfig,
    models: Sequence[str] = tuple(BASELINES),
    c_grid: Sequence[float] = DEFAULT_C_GRID,
    class_weight: str = DEFAULT_CLASS_WEIGHT,
) -> dict[str, dict[str, Any]]:
    """Select C on validation for each baseline, then score the test split once; returns
    ``{name: metrics}`` with the test metrics at the top level, like ``emomatch train``."""
    _check_options(models, c_grid, class_weight)
    d = cfg.data
    mods = list(d.modalities)
    store = FeatureStore(d.store)
    shapes = check_shapes(store, mods, d.expect_shapes)
    train, validation = _fit_splits(store, cfg, d.split_field)
    x, present = utterance_features(train, mods)
    norm = ZNorm.fit(x, present, [store.modalities[m].dim for m in mods])
    xy_train = (norm(x, present), train.labels())
    xy_val = (norm(*utterance_features(validation, mods)), validation.labels())
    k = len(store.classes)
    log.info(
        "baselines on %s: train %d, validation %d utterances, %d features (%s)",
        d.split_field,
        len(train),
        len(validation),
        xy_train[0].shape[1],
        "+".join(mods),
    )
    chosen = [
        select_c(name, xy_train, xy_val, k, cfg.train.select_metric, c_grid, class_weight, cfg.seed)
        for name in models
    ]
    # Every C is chosen: only now is the test split read.
    test = select_split(store, d.split_field, d.test_split, mods, True, d.missing)
    x_test = norm(*utterance_features(test, mods))
    y_test = test.labels()
    results = {}
    for sel in chosen:
        metrics = classification_metrics(y_test, sel.model.predict(x_test), k)
        validation_metrics = {
            **sel.validation,
            "split": validation.name,
            "classes": list(store.classes),
            "dropped_missing_modality": validation.dropped,
        }
        results[sel.name] = {
            **metrics,
            "split": test.name,
            "classes": list(store.classes),
            "dropped_missing_modality": test.dropped,
            "validation": validation_metrics,
            "selected_on": f"validation {cfg.train.select_metric}",
            "baseline": sel.name,
            "description": BASELINES[sel.name],
            "C": sel.c,
            "validation_by_C": sel.scores,
            "not_converged_C": sel.not_converged,
            "class_weight": class_weight,
            "split_field": d.split_field,
            "features": {m: int(shapes[m][-1]) for m in mods},
            "pooling": "sequences: mean over valid positions",
            "n_train": len(train),
            "seed": cfg.seed,
            "modalities": mods,
            "semi_supervised": False,
        }
    return results


def _compact(metrics: dict[str, Any]) -> dict[str, Any]:
    keys = [*METRIC_KEYS, *(f"{k}_std" for k in METRIC_KEYS), "C", "n"]
    return {k: metrics[k] for k in keys if k in metrics}


def run_baselines(
    cfg: ExperimentConfig,
    out: str | Path,
    folds: Sequence[int] | str | None = None,
    models: Sequence[str] = tuple(BASELINES),
    c_grid: Sequence[float] = DEFAULT_C_GRID,
    class_weight: str = DEFAULT_CLASS_WEIGHT,
) -> dict[str, dict[str, Any]]:
    """Fit the baselines and write ``out/<name>/metrics.json`` (+ ``confusion.png``) for each and
    ``out/summary.json``; returns ``{name: metrics}`` as written.

    ``folds=None``: the config's own split field. ``"all"`` or a list of fold numbers: one fit
    per fold (``data.split_field = fold_k``) in ``out/<name>/fold_k`` and the mean and std over
    the folds in ``out/<name>/metrics.json``, like ``emomatch train --folds all``."""
    _check_options(models, c_grid, class_weight)
    out = Path(out)
    store = FeatureStore(cfg.data.store)
    check_shapes(store, list(cfg.data.modalities), cfg.data.expect_shapes)
    chosen_folds: list[int] | None = None
    if folds is not None:
        if isinstance(folds, str) and folds != "all":
            raise ConfigError(f"folds takes 'all' or fold numbers, got {folds!r}")
        chosen_folds = choose_folds(store, None if isinstance(folds, str) else list(folds))
    # Every split is checked before the first fit (as `train --folds` does) and before the
    # output folder is made, so a bad config leaves nothing behind.
    fields = [cfg.data.split_field] if chosen_folds is None else [f"fold_{k}" for k in chosen_folds]
    for split_field in fields:
        _fit_splits(store, cfg, split_field)
    with hold_lock(out, "baseline folder"):
        results = _fit_and_write(cfg, out, chosen_folds, models, c_grid, class_weight)
        summary = {
            "split": "test",
            "selected_on": f"validation {cfg.train.select_metric}",
            "C_grid": sorted(c_grid),
            "class_weight": class_weight,
            "modalities": list(cfg.data.modalities),
            "folds": chosen_folds,
            "baselines": {
                name: {**_compact(m), "metrics": f"{name}/{METRICS_FILE}"}
                for name, m in results.items()
            },
        }
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    return results


def _fit_and_write(
    cfg: ExperimentConfig,
    out: Path,
    folds: list[int] | None,
    models: Sequence[str],
    c_grid: Sequence[float],
    class_weight: str,
) -> dict[str, dict[str, Any]]:
    if folds is None:
        results = fit_baselines(cfg, models, c_grid, class_weight)
        for name, metrics in results.items():
            write_report(out / name, metrics)
        return results
    per_fold: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in models}
    for k in folds:
        fold_cfg = cfg.model_copy(deep=True)
        fold_cfg.data.split_field = f"fold_{k}"
        for name, metrics in fit_baselines(fold_cfg, models, c_grid, class_weight).items():
            write_report(out / name / f"fold_{k}", metrics)
            per_fold[name][str(k)] = metrics
    results = {}
    for name, runs in per_fold.items():
        first = next(iter(runs.values()))
        results[name] = {
            **aggregate(list(runs.values())),
            "split": "test",
            "folds": runs,
            "classes": first["classes"],
            "selected_on": first["selected_on"],
            "baseline": name,
            "description": BASELINES[name],
            "C": {k: m["C"] for k, m in runs.items()},
            "class_weight": class_weight,
            "modalities": list(cfg.data.modalities),
            "semi_supervised": False,
        }
        write_report(out / name, results[name])
    return results
