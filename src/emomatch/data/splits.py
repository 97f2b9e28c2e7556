"""Choosing a split's utterances and checking them before any training step runs."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from emomatch.config import DataConfig
from emomatch.errors import DataError
from emomatch.store import FeatureStore

log = logging.getLogger(__name__)


@dataclass
class Split:
    """Rows of one split of a store that have every modality in use."""

    store: FeatureStore
    name: str
    rows: np.ndarray
    dropped: int = 0

    def __len__(self) -> int:
        return len(self.rows)

    def labels(self) -> np.ndarray:
        return self.store.labels(self.rows)


def check_shapes(
    store: FeatureStore, modalities: Sequence[str], expect: Mapping[str, Sequence[int]]
) -> dict[str, tuple[int, ...]]:
    """Shapes of the modalities in use; errors name the modality and both shapes."""
    shapes = {}
    for m in modalities:
        if m not in store.modalities:
            have = ", ".join(store.modalities)
            raise DataError(f"store {store.path} has no {m} features (it has: {have})")
        shapes[m] = store.modalities[m].shape
        if m in expect and tuple(expect[m]) != shapes[m]:
            raise DataError(
                f"store {store.path}: {m} features have shape {list(shapes[m])}, "
                f"but the config expects {list(expect[m])} (data.expect_shapes.{m})"
            )
    return shapes


def check_compatible(a: FeatureStore, b: FeatureStore, modalities: Sequence[str]) -> None:
    """Two stores in one run must hold the same features (shape and extractor settings); the
    error names the first setting that differs."""
    from emomatch.store.provenance import check_provenance, store_provenance

    check_provenance(
        store_provenance(a, modalities),
        store_provenance(b, modalities),
        found_name=f"{b.path}",
        expected_name=f"{a.path} has",
        advice="one run needs features of the same extractor settings",
        lead="the two stores hold features made differently",
    )
    # An unlabeled pool extracted on its own has no classes; one that has them must agree.
    if b.classes and a.classes != b.classes:
        raise DataError(f"classes differ between {a.path} and {b.path}")


def select_split(
    store: FeatureStore,
    field: str,
    value: str | Sequence[str],
    modalities: Sequence[str],
    labeled: bool,
    missing: str = "drop",
) -> Split:
    """Rows where ``field == value`` (or any of several values, e.g. train and validation
    pooled) that have all ``modalities`` (``missing="mask"``: at least one of them); labeled
    splits must be fully labeled."""
    values = [value] if isinstance(value, str) else list(value)
    rows = np.unique(np.concatenate([store.select(field, v) for v in values]))
    value = value if isinstance(value, str) else "+".join(values)
    if len(rows) == 0:
        raise DataError(f"store {store.path} has no utterance with {field} == {value!r}")
    present = np.stack([store.present(m, rows) for m in modalities])
    keep = present.any(0) if missing == "mask" else present.all(0)
    if missing == "mask" and not present[:, keep].all():
        log.info(
            "%s split %r: %d utterances miss a modality in use and are kept with it masked",
            store.path,
            value,
            int((~present[:, keep].all(0)).sum()),
        )
    dropped = int((~keep).sum())
    if dropped:
        log.warning(
            "%s split %r: %d of %d utterances miss a modality in use and are left out",
            store.path,
            value,
            dropped,
            len(rows),
        )
    rows = rows[keep]
    if len(rows) == 0:
        raise DataError(
            f"store {store.path}: every utterance of split {value!r} misses one of "
            f"{', '.join(modalities)}"
        )
    split = Split(store=store, name=value, rows=rows, dropped=dropped)
    if labeled:
        labels = split.labels()
        if (labels < 0).any():
            bad = store.ids(rows[labels < 0][:3])
            raise DataError(
                f"store {store.path}: split {value!r} should be labeled but utterance(s) "
                f"{', '.join(bad)} have no label among {store.classes}"
            )
    return split


def require_all_classes(split: Split) -> None:
    """A training split missing a class cannot learn it: refuse before training starts."""
    present = set(np.unique(split.labels()).tolist())
    absent = [c for i, c in enumerate(split.store.classes) if i not in present]
    if absent:
        raise DataError(
            f"store {split.store.path}: training split {split.name!r} has no utterance of "
            f"class(es) {', '.join(absent)}; every class needs labeled examples"
        )


def check_finite(split: Split, modalities: Sequence[str]) -> None:
    """NaN or infinite features are an error that names the utterance and modality."""
    for m in modalities:
        for rows, x in split.store.iter_chunks(m, split.rows):
            bad = ~np.isfinite(x.reshape(len(rows), -1)).all(axis=1)
            if bad.any():
                ids = split.store.ids(rows[bad][:3])
                raise DataError(
                    f"store {split.store.path}: {m} features of utterance(s) {', '.join(ids)} "
                    f"(split {split.name!r}) contain NaN or infinite values"
                )


def fit_stats(
    split: Split, modalities: Sequence[str], *more: Split
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-dimension mean and std over valid positions of the split, and of ``more`` splits
    pooled with it (float64 accumulation).

    Also checks finiteness on the way, since it reads every value anyway.
    """
    stats = {}
    for m in modalities:
        spec = split.store.modalities[m]
        total = np.zeros(spec.dim)
        total_sq = np.zeros(spec.dim)
        count = 0
        chunks = (
            (part, rows, x)
            for part in (split, *more)
            for rows, x in part.store.iter_chunks(m, part.rows)
        )
        for part, rows, x in chunks:
            if not np.isfinite(x).all():
                check_finite(Split(part.store, part.name, rows), [m])
            lengths = part.store.lengths(m, rows)
            if x.ndim == 3:
                valid = np.arange(x.shape[1])[None, :] < lengths[:, None]
                x = x[valid]
            else:
                # Masked (absent) vectors are zeros that would bias the statistics.
                x = x[lengths > 0]
            x64 = x.astype(np.float64)
            total += x64.sum(0)
            total_sq += (x64**2).sum(0)
            count += x64.shape[0]
        mean = total / max(count, 1)
        var = np.maximum(total_sq / max(count, 1) - mean**2, 0.0)
        std = np.sqrt(var)
        # A constant dimension carries nothing; dividing by ~0 would blow it up.
        std[std < 1e-6] = 1.0
        stats[m] = (mean.astype(np.float32), std.astype(np.float32))
    return stats


def subsample_labeled(split: Split, fraction: float, seed: int) -> Split:
    """The first ``ceil(fraction * n_c)`` utterances of each class ``c`` in a fixed shuffle
    (``seed``): class-stratified, at least one per class present, and nested (a smaller
    fraction's utterances are part of a larger one's), so a curve over fractions only adds
    labels. ``fraction == 1`` is the split itself."""
    if fraction >= 1.0:
        return split
    labels = split.labels()
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels):
        members = split.rows[labels == c]
        keep.append(rng.permutation(members)[: max(1, int(np.ceil(fraction * len(members))))])
    rows = np.sort(np.concatenate(keep))
    log.info(
        "%s split %r: %d of %d labelled utterances kept (data.train_fraction=%g)",
        split.store.path,
        split.name,
        len(rows),
        len(split),
        fraction,
    )
    return Split(split.store, split.name, rows, split.dropped)


def subsample_pool(split: Split, fraction: float, count: int | None, seed: int) -> Split:
    """``count`` utterances of the pool, or ``ceil(fraction * n)``, drawn uniformly without
    replacement in a fixed shuffle (``seed``), nested like :func:`subsample_labeled`. The pool
    has no labels to stratify on: its class mix is the pool's own."""
    n = len(split)
    if count is not None and count > n:
        raise DataError(
            f"store {split.store.path}: data.unlabeled_count={count} but the unlabelled pool "
            f"{split.name!r} holds {n} usable utterances"
        )
    keep = count if count is not None else max(1, int(np.ceil(fraction * n)))
    if keep >= n:
        return split
    order = np.random.default_rng(seed).permutation(n)
    rows = np.sort(split.rows[order[:keep]])
    log.info("%s pool %r: %d of %d utterances kept", split.store.path, split.name, keep, n)
    return Split(split.store, split.name, rows, split.dropped)


def training_split(store: FeatureStore, data: DataConfig, field: str | None = None) -> Split:
    """The labelled training split a run (or a baseline) learns from: selected, subsampled
    (``data.train_fraction``) and checked to hold every class; ``field`` defaults to
    ``data.split_field``."""
    return training_and_rest(store, data, field)[0]


def training_and_rest(
    store: FeatureStore, data: DataConfig, field: str | None = None
) -> tuple[Split, Split | None]:
    """The labelled training split (as :func:`training_split`) and the training utterances
    ``data.train_fraction`` left out of it (None when it kept them all): the unlabelled pool
    of ``data.unlabeled_pool: train_rest``."""
    whole = select_split(
        store, field or data.split_field, data.train_split, data.modalities, True, data.missing
    )
    split = subsample_labeled(whole, data.train_fraction, data.subsample_seed)
    require_all_classes(split)
    left = np.setdiff1d(whole.rows, split.rows)
    rest = Split(store, f"{whole.name} (labels hidden)", left) if len(left) else None
    return split, rest
