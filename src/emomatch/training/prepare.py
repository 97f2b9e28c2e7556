"""Everything the trainer reads before the first step: never the test split."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from emomatch.config import ExperimentConfig
from emomatch.data import (
    EvalBatches,
    FeatureBatches,
    Split,
    TrainBatches,
    check_compatible,
    check_finite,
    check_shapes,
    fit_stats,
    select_split,
)
from emomatch.data.splits import subsample_pool, training_and_rest
from emomatch.errors import DataError
from emomatch.files import lock_holder
from emomatch.store import FeatureStore

log = logging.getLogger(__name__)


#: fewer optimizer steps an epoch than this draws a warning: a split that fits in one batch
#: trains one step an epoch, and every model of an experiment may come out alike
FEW_STEPS = 5


@dataclass
class TrainingData:
    classes: list[str]
    shapes: dict[str, tuple[int, ...]]
    train: Split
    validation: Split
    unlabeled: Split | None
    stats: dict[str, tuple[np.ndarray, np.ndarray]]

    def class_weights(self) -> list[float]:
        counts = np.bincount(self.train.labels(), minlength=len(self.classes)).astype(float)
        return (counts.sum() / (len(counts) * np.maximum(counts, 1))).tolist()

    def loaders(self, cfg: ExperimentConfig) -> tuple[DataLoader, DataLoader]:
        mods = cfg.data.modalities
        use_unlabeled = self.unlabeled is not None
        batch = labeled_batch_size(
            len(self.train), cfg.train.batch_size, cfg.train.min_steps_per_epoch
        )
        sampler = TrainBatches(
            len(self.train),
            batch,
            len(self.unlabeled) if self.unlabeled is not None else 0,
            cfg.train.unlabeled_batch_size if use_unlabeled else 0,
            seed=cfg.seed,
        )
        steps = len(sampler)
        if steps < FEW_STEPS:
            log.warning(
                "the training split gives %d optimizer step(s) an epoch (%d utterances, batch "
                "%d): too few to learn much; set train.min_steps_per_epoch: %d (smaller "
                "batches) or a smaller train.batch_size",
                steps,
                len(self.train),
                batch,
                FEW_STEPS,
            )
        workers = cfg.train.num_workers
        # Each loader gets a generator of its own: creating an iterator draws a base seed from
        # the loader's generator, or from the global one when it has none, and the global one
        # drives dropout. A resumed run creates its first iterator at another moment than an
        # uninterrupted run, so a global draw there shifted every later dropout mask.
        train = DataLoader(
            FeatureBatches(self.train, mods, self.unlabeled),
            sampler=sampler,
            batch_size=None,
            num_workers=workers,
            persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(cfg.seed),
        )
        val = DataLoader(
            FeatureBatches(self.validation, mods),
            sampler=EvalBatches(len(self.validation), shard=True),
            batch_size=None,
            num_workers=workers,
            persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(cfg.seed),
        )
        return train, val


def labeled_batch_size(n: int, batch_size: int, min_steps: int) -> int:
    """``batch_size``, made smaller where the split would otherwise give fewer than
    ``min_steps`` optimizer steps per epoch (a 300-utterance corpus at 128 gets 3)."""
    if min_steps <= 0:
        return batch_size
    return max(2, min(batch_size, -(-n // min_steps)))


def _refuse_store_being_written(path: Path) -> None:
    """A store another process is writing (``emomatch extract`` still running) holds only the
    parts finished so far: a run trained on it would score a partial test split."""
    holder = lock_holder(path)
    if holder is not None and holder != os.getpid():
        raise DataError(
            f"store {path} is being written now by another emomatch process (pid {holder}, "
            "e.g. `emomatch extract`); wait for it to finish, then train"
        )


def supervised_without_pool(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg``, or where it asks for the unlabelled pool of a store that has none (labelled data
    only, no ``data.unlabeled_store``) a copy with ``loss.unlabeled: false``: the run trains
    fully supervised and says so in one line, and its saved config says so too."""
    d = cfg.data
    # a pool from elsewhere: another store, or the training split's unlabelled rows
    if not cfg.loss.unlabeled or d.unlabeled_store is not None or d.unlabeled_pool != "split":
        return cfg
    store = FeatureStore(d.store)
    if d.split_field not in store.fields or len(store.select(d.split_field, d.unlabeled_split)):
        return cfg
    log.warning(
        "%s has no utterance with %s == %r (no unlabelled pool): training fully supervised "
        "(loss.unlabeled: false)",
        store.path,
        d.split_field,
        d.unlabeled_split,
    )
    supervised = cfg.model_copy(deep=True)
    supervised.loss.unlabeled = False
    return supervised


def prepare_training_data(cfg: ExperimentConfig) -> TrainingData:
    """Open the store(s), check shapes, splits, labels and values, fit z-normalization on the
    training split. Reads train, validation and unlabeled rows only."""
    d = cfg.data
    mods = d.modalities
    for path in (d.store, d.unlabeled_store):
        if path is not None:
            _refuse_store_being_written(Path(path))
    store = FeatureStore(d.store)
    shapes = check_shapes(store, mods, d.expect_shapes)
    train, rest = training_and_rest(store, d)
    validation = select_split(store, d.split_field, d.validation_split, mods, True, d.missing)
    unlabeled = None
    if cfg.loss.unlabeled and d.unlabeled_pool == "train_rest":
        if rest is None:
            log.info("data.unlabeled_pool=train_rest: every training utterance is labelled")
        else:
            unlabeled = subsample_pool(
                rest, d.unlabeled_fraction, d.unlabeled_count, d.subsample_seed
            )
    elif cfg.loss.unlabeled:
        pool = store
        if d.unlabeled_store is not None:
            pool = FeatureStore(d.unlabeled_store)
            check_compatible(store, pool, mods)
        # A separate pool (e.g. AMI windows) has no folds of its own: its rows carry only `split`.
        field = d.split_field if pool is store or d.split_field in pool.fields else "split"
        unlabeled = select_split(pool, field, d.unlabeled_split, mods, False, d.missing)
        unlabeled = subsample_pool(
            unlabeled, d.unlabeled_fraction, d.unlabeled_count, d.subsample_seed
        )
    pooled = [unlabeled] if unlabeled is not None and d.normalize_on == "labeled_and_pool" else []
    stats = fit_stats(train, mods, *pooled)
    check_finite(validation, mods)
    if unlabeled is not None:
        check_finite(unlabeled, mods)
    # The test split is scored only after training, but a NaN in it must not surface after
    # hours of work: its features (never its labels) are checked for finiteness now.
    test = select_split(store, d.split_field, d.test_split, mods, False, d.missing)
    check_finite(test, mods)
    log.info(
        "train %d, validation %d, unlabeled %d utterances (%s)",
        len(train),
        len(validation),
        len(unlabeled) if unlabeled is not None else 0,
        "+".join(mods),
    )
    return TrainingData(
        classes=store.classes,
        shapes=shapes,
        train=train,
        validation=validation,
        unlabeled=unlabeled,
        stats=stats,
    )
