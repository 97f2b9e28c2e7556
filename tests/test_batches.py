"""Makeup of the labelled and unlabelled batch streams (emomatch.data.batches)."""

import numpy as np
import pytest

from emomatch.data import EvalBatches, TrainBatches
from emomatch.data.batches import labeled_batches, unlabeled_batch


@pytest.mark.parametrize(
    ("n", "batch_size"), [(10, 4), (12, 4), (13, 4), (5, 8), (129, 128), (2, 2), (300, 7)]
)
def test_every_labeled_item_once_per_epoch(n: int, batch_size: int) -> None:
    for epoch in range(3):
        batches = labeled_batches(n, batch_size, seed=0, epoch=epoch)
        flat = np.concatenate(batches)
        assert sorted(flat.tolist()) == list(range(n)), epoch
        # Full batches first; only the last may differ (short, or one larger by the merge).
        assert all(len(b) == batch_size for b in batches[:-1])
        assert 2 <= len(batches[-1]) <= batch_size + 1 or n < 2


def test_last_batch_sizes_and_the_one_item_tail_merge() -> None:
    assert [len(b) for b in labeled_batches(10, 4, 0, 0)] == [4, 4, 2]
    assert [len(b) for b in labeled_batches(12, 4, 0, 0)] == [4, 4, 4]
    # 9 = 4 + 4 + 1: the lone item joins the batch before it (matching needs two items).
    assert [len(b) for b in labeled_batches(9, 4, 0, 0)] == [4, 5]
    assert [len(b) for b in labeled_batches(129, 128, 0, 0)] == [129]
    # A split of one item cannot be merged into anything: it stays a batch of one.
    assert [len(b) for b in labeled_batches(1, 4, 0, 0)] == [1]


def test_labeled_order_is_reshuffled_each_epoch_and_fixed_by_seed_and_epoch() -> None:
    a = np.concatenate(labeled_batches(50, 8, seed=3, epoch=0))
    again = np.concatenate(labeled_batches(50, 8, seed=3, epoch=0))
    next_epoch = np.concatenate(labeled_batches(50, 8, seed=3, epoch=1))
    other_seed = np.concatenate(labeled_batches(50, 8, seed=4, epoch=0))
    np.testing.assert_array_equal(a, again)
    assert not np.array_equal(a, next_epoch)
    assert not np.array_equal(a, other_seed)


@pytest.mark.parametrize(("n", "batch_size"), [(10, 4), (10, 10), (7, 3), (3, 8), (100, 16)])
def test_unlabeled_stream_visits_every_item_before_repeating(n: int, batch_size: int) -> None:
    steps = 4 * n // batch_size + 3
    stream = np.concatenate([unlabeled_batch(n, batch_size, 5, s) for s in range(steps)])
    assert all(len(unlabeled_batch(n, batch_size, 5, s)) == batch_size for s in range(steps))
    # Cut the stream at multiples of n: each full cycle is a permutation of all n items.
    cycles = len(stream) // n
    assert cycles >= 2
    for c in range(cycles):
        assert sorted(stream[c * n : (c + 1) * n].tolist()) == list(range(n)), c
    # Each cycle is reshuffled (for n large enough that two equal orders would be chance).
    if n >= 7:
        assert not np.array_equal(stream[:n], stream[n : 2 * n])


def test_unlabeled_batches_are_a_pure_function_of_seed_and_step() -> None:
    a = [unlabeled_batch(37, 8, seed=1, step=s) for s in (0, 5, 11)]
    b = [unlabeled_batch(37, 8, seed=1, step=s) for s in (11, 5, 0)][::-1]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(unlabeled_batch(37, 8, 1, 0), unlabeled_batch(37, 8, 2, 0))
    # The labeled and unlabeled streams draw from different sub-seeds: the same seed does not
    # give the same order to both.
    lab = np.concatenate(labeled_batches(37, 37, seed=1, epoch=0))
    assert not np.array_equal(lab, unlabeled_batch(37, 37, seed=1, step=0))


def test_train_batches_pair_each_labeled_batch_with_the_next_unlabeled_one() -> None:
    sampler = TrainBatches(10, 4, n_unlabeled=7, unlabeled_batch_size=3, seed=2)
    assert len(sampler) == 3
    seen_unlabeled: list[np.ndarray] = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        keys = list(sampler)
        assert len(keys) == 3
        labeled = [lab for lab, _ in keys]
        expected = labeled_batches(10, 4, 2, epoch)
        for got, want in zip(labeled, expected, strict=True):
            np.testing.assert_array_equal(got, want)
        for i, (_, unl) in enumerate(keys):
            assert unl is not None and len(unl) == 3
            # Step numbering runs on across epochs: the unlabeled stream never restarts.
            np.testing.assert_array_equal(unl, unlabeled_batch(7, 3, 2, epoch * 3 + i))
            seen_unlabeled.append(unl)
    stream = np.concatenate(seen_unlabeled)
    for c in range(len(stream) // 7):
        assert sorted(stream[c * 7 : (c + 1) * 7].tolist()) == list(range(7))
    # A second sampler with the same seed yields the same keys for any epoch.
    twin = TrainBatches(10, 4, n_unlabeled=7, unlabeled_batch_size=3, seed=2)
    twin.set_epoch(1)
    sampler.set_epoch(1)
    for (la, ua), (lb, ub) in zip(sampler, twin, strict=True):
        np.testing.assert_array_equal(la, lb)
        np.testing.assert_array_equal(ua, ub)


def test_train_batches_without_a_pool_have_no_unlabeled_part() -> None:
    sampler = TrainBatches(9, 4, seed=0)
    keys = list(sampler)
    assert [len(lab) for lab, _ in keys] == [4, 5]
    assert all(unl is None for _, unl in keys)


def test_eval_batches_are_consecutive_and_cover_the_split_once() -> None:
    keys = list(EvalBatches(10, batch_size=4))
    assert len(EvalBatches(10, batch_size=4)) == 3
    assert [k[0].tolist() for k in keys] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert all(k[1] is None for k in keys)
