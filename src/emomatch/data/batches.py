"""Batch streams over feature stores (rows fetched by positional reads, a batch at a time).

The training stream is a pure function of (seed, epoch, step): the labeled rows are reshuffled
each epoch, and the unlabeled rows form an endless stream of reshuffled cycles that runs on its
own, independent of the labeled epoch length. A resumed run therefore sees exactly the batches
an uninterrupted run would, and several processes (DDP) each take their own steps.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from emomatch.data.splits import Split

Key = tuple[np.ndarray, np.ndarray | None]


def _dist_rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _permutation(n: int, *seed: int) -> np.ndarray:
    return np.random.default_rng(list(seed)).permutation(n)


def labeled_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Positions 0..n-1 reshuffled for the epoch, cut into batches; a last batch of one item
    joins the previous one (matching needs at least two items)."""
    perm = _permutation(n, seed, 1, epoch)
    batches = [perm[i : i + batch_size] for i in range(0, n, batch_size)]
    if len(batches) > 1 and len(batches[-1]) < 2:
        # Pop first: in `batches[-2] = f(batches.pop())` the target index is taken after the
        # pop, which overwrote the wrong batch (an item lost, another seen twice).
        tail = batches.pop()
        batches[-1] = np.concatenate([batches[-1], tail])
    return batches


def unlabeled_batch(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Batch ``step`` of an endless stream of reshuffled passes over n items."""
    start = step * batch_size
    out: list[int] = []
    while len(out) < batch_size:
        cycle, offset = divmod(start, n)
        take = min(batch_size - len(out), n - offset)
        out.extend(_permutation(n, seed, 2, cycle)[offset : offset + take].tolist())
        start += take
    return np.asarray(out)


class TrainBatches(Sampler[Key]):
    """Yields (labeled positions, unlabeled positions or None) for each step of an epoch."""

    def __init__(
        self,
        n_labeled: int,
        batch_size: int,
        n_unlabeled: int = 0,
        unlabeled_batch_size: int = 0,
        seed: int = 0,
    ) -> None:
        self.n_labeled, self.batch_size = n_labeled, batch_size
        self.n_unlabeled, self.unlabeled_batch_size = n_unlabeled, unlabeled_batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _steps(self) -> int:
        return len(labeled_batches(self.n_labeled, self.batch_size, self.seed, 0))

    def __len__(self) -> int:
        _, world = _dist_rank_world()
        return self._steps() // world if world > 1 else self._steps()

    def __iter__(self) -> Iterator[Key]:
        rank, world = _dist_rank_world()
        batches = labeled_batches(self.n_labeled, self.batch_size, self.seed, self.epoch)
        steps = len(batches)
        usable = steps - steps % world if world > 1 else steps
        for i in range(rank, usable, world):
            unl = None
            if self.n_unlabeled:
                step = self.epoch * steps + i
                unl = unlabeled_batch(self.n_unlabeled, self.unlabeled_batch_size, self.seed, step)
            yield batches[i], unl


class EvalBatches(Sampler[Key]):
    """Consecutive positions, in order, for validation/test/prediction.

    ``shard``: under DDP each process takes its own contiguous share of the positions (sizes
    differ by at most one), so validation runs once over the split, not once per process; the
    trainer gathers the predictions before scoring them. Off by default: evaluation after a
    distributed run must still see every position in the process that scores them.
    """

    def __init__(self, n: int, batch_size: int = 256, shard: bool = False) -> None:
        self.n, self.batch_size, self.shard = n, batch_size, shard

    def _range(self) -> tuple[int, int]:
        if not self.shard:
            return 0, self.n
        rank, world = _dist_rank_world()
        return self.n * rank // world, self.n * (rank + 1) // world

    def __len__(self) -> int:
        lo, hi = self._range()
        return -(-(hi - lo) // self.batch_size)

    def __iter__(self) -> Iterator[Key]:
        lo, hi = self._range()
        for i in range(lo, hi, self.batch_size):
            yield np.arange(i, min(i + self.batch_size, hi)), None


def _part(split: Split, positions: np.ndarray, modalities: Sequence[str], labels: bool):
    rows = split.rows[positions]
    part: dict[str, Any] = {
        "inputs": {
            m: (
                torch.from_numpy(split.store.fetch(m, rows)),
                torch.from_numpy(split.store.lengths(m, rows)),
            )
            for m in modalities
        },
        "positions": torch.from_numpy(np.asarray(positions, dtype=np.int64)),
    }
    if labels:
        part["labels"] = torch.from_numpy(split.store.labels(rows))
    return part


class FeatureBatches(Dataset[dict[str, Any]]):
    """Turns a sampler key into tensors: one fancy-indexed read per modality and batch."""

    def __init__(
        self,
        labeled: Split,
        modalities: Sequence[str],
        unlabeled: Split | None = None,
        with_labels: bool = True,
    ) -> None:
        self.labeled, self.unlabeled = labeled, unlabeled
        self.modalities = list(modalities)
        self.with_labels = with_labels

    def __len__(self) -> int:
        return len(self.labeled)

    def __getitem__(self, key: Key) -> dict[str, Any]:  # type: ignore[override]
        lab, unl = key
        batch = {"labeled": _part(self.labeled, lab, self.modalities, self.with_labels)}
        if unl is not None and self.unlabeled is not None:
            batch["unlabeled"] = _part(self.unlabeled, unl, self.modalities, labels=False)
        return batch


def to_inputs(part: dict[str, Any]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {m: (x, n) for m, (x, n) in part["inputs"].items()}
