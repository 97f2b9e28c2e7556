"""Two DDP processes (CPU, gloo, launched by torchrun) train the model a single process trains.

With per-process batches of half the size, the two processes' batches of a step are together
the single process's batch (TrainBatches gives rank r every world-th batch of the shuffled
epoch, and every world-th window of the unlabelled stream), and DDP averages their gradients.
The test's loss is a mean over items (acoustic only: reconstruction is a per-row mean, no
pairs to match) and dropout is off, so the mean of the two halves' gradients is the whole
batch's gradient up to float rounding: parameters after 2 epochs agree to 1e-5.
The two-process run is stopped after epoch 1 and resumed, which checks resumption too, and
its validation metrics (each process scores its share, the predictions are gathered) must
equal the single process's. Measured: largest parameter difference 6e-8 (float rounding).
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from emomatch.config import config_from_dict
from emomatch.synthetic.features import SMALL_SHAPES, SyntheticCorpus, write_synthetic_store
from emomatch.training import fit

EMOMATCH = Path(sys.executable).with_name("emomatch")


def _config(store: Path, batch: int, devices: int) -> dict:
    return {
        "seed": 3,
        "data": {"store": str(store), "modalities": ["acoustic"]},
        "model": {"latent_dim": 8, "acoustic_hidden": [16], "classifier_hidden": [8]},
        "loss": {"matching": False},
        "train": {
            "batch_size": batch,
            "unlabeled_batch_size": batch,
            "lr": 0.01,
            "max_epochs": 2,
            "accelerator": "cpu",
            "devices": devices,
            "progress_bar": False,
        },
    }


def _validation_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "logs" / "metrics.csv") as fh:
        return [r for r in csv.DictReader(fh) if r.get("val/ua")]


def _torchrun(tmp_path: Path, config: Path, run: Path, *extra: str) -> None:
    assert EMOMATCH.is_file(), f"{EMOMATCH}: the emomatch script is not installed beside python"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(EMOMATCH),
        "train",
        str(config),
        "--out",
        str(run),
        *extra,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without distributed")
def test_two_processes_equal_one_with_the_same_effective_batch(tmp_path: Path) -> None:
    store = tmp_path / "store"
    corpus = SyntheticCorpus(
        n_train=64, n_validation=21, n_test=10, n_unlabeled=96, shapes=dict(SMALL_SHAPES)
    )
    write_synthetic_store(corpus, store)

    single = tmp_path / "single"
    fit(config_from_dict(_config(store, batch=16, devices=1)), single)

    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump(_config(store, batch=8, devices=2)))
    ddp = tmp_path / "ddp"
    _torchrun(tmp_path, config, ddp, "--set", "train.max_epochs=1")
    assert sorted(p.name for p in (ddp / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    halfway = torch.load(ddp / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    _torchrun(tmp_path, config, ddp, "--resume")

    one = torch.load(single / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    two = torch.load(ddp / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert one["epoch"] == two["epoch"] == 1 and one["global_step"] == two["global_step"] == 8
    assert one["state_dict"].keys() == two["state_dict"].keys()
    apart = {k: float((v - two["state_dict"][k]).abs().max()) for k, v in one["state_dict"].items()}
    print("largest parameter difference, 2 processes vs 1:", max(apart.values()))
    assert max(apart.values()) < 1e-5, apart
    # ...while the resumed epoch alone moved them far more than that
    moved = max(
        float((v - halfway["state_dict"][k]).abs().max()) for k, v in two["state_dict"].items()
    )
    assert moved > 1e-3
    # Checkpoints written once: no second process's leftovers beside rank 0's files.
    assert sorted(p.name for p in (ddp / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]

    keys = ("val/ua", "val/wa", "val/weighted_f1", "val/macro_f1")
    got = [float(r[k]) for r in _validation_rows(ddp) for k in keys]
    expected = [float(r[k]) for r in _validation_rows(single) for k in keys]
    assert len(got) == len(expected) == 2 * len(keys)
    assert got == expected
    # The test split was scored once, by rank 0, after training.
    assert (ddp / "metrics.json").is_file()
    shutil.rmtree(store)
