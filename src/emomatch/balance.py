"""Pseudo-label balancing of an unlabeled pool (the paper's AMI filtering step).

A fully supervised model labels every unlabeled window; each pseudo-class is then brought to N
windows: big classes are sub-sampled, small ones over-sampled (all of their windows, plus
repeats drawn at random). The pseudo-labels are kept as a field for inspection only: the pool
stays unlabeled for training.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emomatch.data import select_split
from emomatch.errors import DataError
from emomatch.evaluation import load_checkpoint, predict_split
from emomatch.store import FeatureStore, StoreWriter
from emomatch.store.writer import new_store_folder


def balanced_rows(pseudo: np.ndarray, per_class: int, num_classes: int, seed: int) -> np.ndarray:
    """Positions into ``pseudo`` giving exactly ``per_class`` per class present."""
    rng = np.random.default_rng(seed)
    chosen = []
    for c in range(num_classes):
        members = np.flatnonzero(pseudo == c)
        if len(members) == 0:
            continue
        if len(members) >= per_class:
            chosen.append(rng.choice(members, per_class, replace=False))
        else:
            extra = rng.choice(members, per_class - len(members), replace=True)
            chosen.append(np.concatenate([members, extra]))
    return np.sort(np.concatenate(chosen)) if chosen else np.array([], dtype=np.int64)


def balance_unlabeled(
    store_path: str | Path,
    checkpoints: str | Path | Sequence[str | Path],
    out: str | Path,
    per_class: int,
    split_field: str = "split",
    unlabeled_split: str = "unlabeled",
    seed: int = 0,
    part_size: int = 4096,
) -> dict[str, Any]:
    """Write a new store holding the balanced pool; returns counts before and after.

    ``checkpoints`` is the model that pseudo-labels the pool: one checkpoint, or several (the
    seeds of an ensemble, :meth:`RunFolder.scoring_checkpoints`) whose probabilities are
    averaged as ``emomatch evaluate`` averages them."""
    if per_class < 1:
        raise DataError(f"--per-class must be at least 1, got {per_class}")
    out = Path(out)
    if (out / "store.json").exists():
        raise DataError(f"{out} already holds a store; choose another --out")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out} already exists and is not an empty folder; choose another --out")
    paths = [Path(checkpoints)] if isinstance(checkpoints, (str, Path)) else list(checkpoints)
    if not paths:
        raise DataError("balancing needs a model: no checkpoint given")
    modules = [load_checkpoint(p) for p in paths]
    module = modules[0]
    for other, path in zip(modules[1:], paths[1:], strict=True):
        if other.classes != module.classes or other.shapes != module.shapes:
            raise DataError(f"{path}: its classes or input shapes differ from {paths[0]}")
    store = FeatureStore(store_path)
    mods = list(module.shapes)
    for m in mods:
        if m not in store.modalities or tuple(store.modalities[m].shape) != module.shapes[m]:
            raise DataError(
                f"store {store.path}: {m} features do not match the model "
                f"({store.modalities.get(m)} vs shape {list(module.shapes[m])})"
            )
    pool = select_split(store, split_field, unlabeled_split, mods, labeled=False)
    pseudo = np.mean([predict_split(m, pool) for m in modules], axis=0).argmax(1)
    k = len(module.classes)
    keep = balanced_rows(pseudo, per_class, k, seed)
    rows = pool.rows[keep]
    # Written into a temporary folder renamed into place at the end: an interrupted run leaves
    # no half-balanced store at --out.
    with (
        new_store_folder(out) as tmp,
        StoreWriter(
            tmp,
            classes=store.classes,
            modalities={m: store.modalities[m] for m in mods},
            fields=[*store.fields, "pseudo_label"],
            info={
                "balanced_from": str(store.path),
                "model": [str(p) for p in paths] if len(paths) > 1 else str(paths[0]),
                "per_class": per_class,
            },
        ) as writer,
    ):
        repeats: dict[str, int] = {}
        for start in range(0, len(rows), part_size):
            sel = rows[start : start + part_size]
            index = store.index.iloc[sel][["id", "speaker", *store.fields]].reset_index(drop=True)
            ids = []
            for uid in index["id"]:
                repeats[uid] = repeats.get(uid, 0) + 1
                # Over-sampled windows repeat; ids must stay unique in a store.
                ids.append(uid if repeats[uid] == 1 else f"{uid}#{repeats[uid]}")
            index["id"] = ids
            index["label"] = None
            index["pseudo_label"] = [
                module.classes[c] for c in pseudo[keep[start : start + part_size]]
            ]
            for m in mods:
                index[f"{m}_length"] = store.lengths(m, sel)
            writer.write_part(index, {m: store.fetch(m, sel) for m in mods})
    before = np.bincount(pseudo, minlength=k)
    after = np.bincount(pseudo[keep], minlength=k)
    return {
        "store": str(out),
        "before": dict(zip(module.classes, before.tolist(), strict=True)),
        "after": dict(zip(module.classes, after.tolist(), strict=True)),
        "windows": int(len(rows)),
    }
