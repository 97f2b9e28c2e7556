"""Exact resume: an interrupted run, resumed, repeats the uninterrupted one bit for bit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from pytorch_lightning.callbacks import Callback

from emomatch.errors import EmomatchError
from emomatch.runs import train_and_report
from emomatch.training.persist import checkpoint_epoch
from tests.support.builders import make_config
from tests.support.runs import (
    FINAL_KEYS,
    CrashMidEpoch,
    assert_same_run,
    config,
    history,
    losses,
)


@pytest.fixture(scope="module")
def straight(tiny_store, tmp_path_factory) -> dict[bool, tuple[dict, Path]]:
    out = {}
    for norm_first in (False, True):
        run = tmp_path_factory.mktemp("straight") / f"norm_first_{norm_first}"
        out[norm_first] = (train_and_report(config(tiny_store, norm_first), run), run)
    return out


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-norm", "pre-norm"])
def test_resume_after_a_crash_mid_epoch_repeats_the_run(
    tiny_store, tmp_path, straight, norm_first
) -> None:
    expected, _ = straight[norm_first]
    # The test is only worth something if selection did not stop at the first epoch.
    assert expected["best_epoch"] > 0
    cfg = config(tiny_store, norm_first)
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_and_report(cfg, run, callbacks=[CrashMidEpoch(epoch=2, batch=3)])
    assert not (run / "metrics.json").exists()
    resumed = train_and_report(cfg, run, resume=True)
    assert_same_run(resumed, run, straight[norm_first])


class StopAfterEpoch(Callback):
    """Ends training cleanly at an epoch boundary, as Lightning does on a first Ctrl-C."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            trainer.should_stop = True


def test_resume_after_a_clean_stop_at_an_epoch_boundary(tiny_store, tmp_path, straight) -> None:
    run = tmp_path / "run"
    cfg = config(tiny_store, True)
    train_and_report(cfg, run, callbacks=[StopAfterEpoch(1)])
    assert len(losses(run)) == 2
    resumed = train_and_report(cfg, run, resume=True)
    assert_same_run(resumed, run, straight[True])


def test_resume_with_a_larger_epoch_budget_continues_the_run(tiny_store, tmp_path, straight):
    run = tmp_path / "run"
    train_and_report(config(tiny_store, True, epochs=2), run)
    resumed = train_and_report(config(tiny_store, True), run, resume=True)
    assert_same_run(resumed, run, straight[True])


KILL_SCRIPT = """
import os, signal, sys
from pytorch_lightning.callbacks import Callback
from emomatch.config import load_config
from emomatch.errors import EmomatchError
from emomatch.runs import train_and_report
from emomatch.training.persist import checkpoint_epoch

class Kill(Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == 3 and batch_idx == 2:
            os.kill(os.getpid(), signal.SIGKILL)

train_and_report(load_config(sys.argv[1]), sys.argv[2], callbacks=[Kill()])
"""


def test_resume_after_sigkill_mid_epoch_repeats_the_run(tiny_store, tmp_path, straight) -> None:
    cfg = config(tiny_store, True)
    path = tmp_path / "config.yaml"
    path.write_text(cfg.to_yaml())
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, str(path), str(run)], env=env, capture_output=True
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    # Killed inside epoch 3: epochs 0-2 are finished and checkpointed, nothing was finalized.
    assert checkpoint_epoch(run / "checkpoints" / "last.ckpt") == 2
    resumed = train_and_report(cfg, run, resume=True)
    assert_same_run(resumed, run, straight[True])


def test_last_checkpoint_is_written_every_epoch(tiny_store, tmp_path) -> None:
    """Even when validation does not improve: a crash never redoes finished epochs."""
    cfg = make_config(tiny_store, train={"max_epochs": 3, "lr": 1e-9})
    run = tmp_path / "run"
    train_and_report(cfg, run)
    assert checkpoint_epoch(run / "checkpoints" / "last.ckpt") == 2


def test_resume_with_warm_up_cosine_decay_and_early_stopping(tiny_store, tmp_path) -> None:
    extra = {"warmup_epochs": 1.5, "schedule": "cosine", "patience": 3, "weight_decay": 0.05}
    cfg = config(tiny_store, True, epochs=6, **extra)
    straight = train_and_report(cfg, tmp_path / "straight")
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_and_report(cfg, run, callbacks=[CrashMidEpoch(epoch=3, batch=1)])
    resumed = train_and_report(cfg, run, resume=True)
    assert losses(run) == losses(tmp_path / "straight")
    assert history(run) == history(tmp_path / "straight")
    for key in FINAL_KEYS:
        assert resumed[key] == straight[key], key
    # the decay is laid out over max_epochs, so the budget can no longer change on resume
    with pytest.raises(EmomatchError, match=r"train\.max_epochs"):
        train_and_report(config(tiny_store, True, epochs=9, **extra), run, resume=True)


class CrashInFold(Callback):
    def __init__(self, field: str) -> None:
        self.field = field

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if pl_module.cfg.data.split_field == self.field and trainer.current_epoch == 1:
            raise RuntimeError("simulated crash")


def test_resume_of_folds_keeps_finished_folds_and_every_log_row(tmp_path) -> None:
    from emomatch.runs import train_folds
    from emomatch.synthetic import write_synthetic_store
    from tests.support.builders import tiny_corpus

    store = tmp_path / "store"
    write_synthetic_store(tiny_corpus(speakers=6, folds=3), store)
    cfg = config(store, True, epochs=3)
    straight = train_folds(cfg, tmp_path / "straight", folds=[1, 2])
    out = tmp_path / "cv"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_folds(cfg, out, folds=[1, 2], callbacks=[CrashInFold("fold_2")])
    finished = (out / "fold_1" / "metrics.json").stat().st_mtime_ns
    resumed = train_folds(cfg, out, folds=[1, 2], resume=True)
    assert (out / "fold_1" / "metrics.json").stat().st_mtime_ns == finished  # not redone
    for k in ("fold_1", "fold_2"):
        assert history(out / k) == history(tmp_path / "straight" / k)
    for key in ("ua", "ua_std", "confusion"):
        assert resumed[key] == straight[key]
