"""Paper-scale memory benchmark: a store at the paper's dims and counts, trained through the real
trainer (`emomatch.training.fit`: the store reader, the batch streams, Lightning, checkpoints).

    .venv/bin/python bench/paper_scale.py [--steps 6] [--work /tmp/emomatch_paper_scale]

The store holds 5,531 labelled utterances (train 4,425 / validation 553 / test 553, as an 80/10/10
cut of IEMOCAP's count) and 20,000 unlabelled ones, acoustic 1582, visual 18 x 342, lexical
22 x 1024, stored as float16 (``--dtype``): 1.5 GB on disk, 3.1 GB in float32. It is built once
in ``--work`` (by a child process, so the build's own memory is not counted) and reused. Then one
semi-supervised epoch runs (``--steps N``: the first N steps, then validation and the
checkpoints as at an epoch's end) and the script reports peak resident memory (this process's
high-water mark, plus the largest DataLoader worker's with ``--workers``), samples per second
and the time per epoch (extrapolated from the timed steps with ``--steps``). Last line
``peak_rss_gb: <x>`` (target under 3).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch

from emomatch.config import DataConfig, ExperimentConfig, TrainConfig
from emomatch.store import FeatureStore, ModalitySpec, StoreWriter
from emomatch.store.writer import new_store_folder
from emomatch.synthetic.features import PAPER_SHAPES
from emomatch.training import fit, prepare_training_data

CLASSES = ["angry", "happy", "neutral", "sad"]
#: IEMOCAP's 5,531 utterances of the four classes, cut 80/10/10; the paper's AMI pool size
SPLITS = {"train": 4425, "validation": 553, "test": 553, "unlabeled": 20000}
PART_ROWS = 1024


def peak_rss_gb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 2**20  # Linux reports KiB


def build_store(path: Path, dtype: str, seed: int = 0) -> None:
    """Random features with real padding (valid lengths spread over half to all positions) and
    balanced labels: what the store reader and the model cost does not depend on the values."""
    rng = np.random.default_rng(seed)
    specs = {
        m: ModalitySpec(
            kind="vector" if len(shape) == 1 else "sequence",
            dim=shape[-1],
            max_len=1 if len(shape) == 1 else shape[0],
            extractor={"name": "bench.paper_scale", "seed": seed},
            dtype=dtype,
        )
        for m, shape in PAPER_SHAPES.items()
    }
    with (
        new_store_folder(path) as tmp,
        StoreWriter(tmp, CLASSES, specs, info={"generator": "bench/paper_scale.py"}) as writer,
    ):
        counter = 0
        for split, n in SPLITS.items():
            labels = rng.permutation(np.arange(n) % len(CLASSES))
            for start in range(0, n, PART_ROWS):
                size = min(PART_ROWS, n - start)
                index = pd.DataFrame(
                    {
                        "id": [f"{split}_{counter + i:06d}" for i in range(size)],
                        "speaker": [f"spk{i % 10:02d}" for i in range(size)],
                        "label": [
                            None if split == "unlabeled" else CLASSES[c]
                            for c in labels[start : start + size]
                        ],
                        "split": split,
                    }
                )
                counter += size
                arrays = {}
                for m, shape in PAPER_SHAPES.items():
                    x = rng.standard_normal((size, *shape), dtype=np.float32)
                    if len(shape) == 1:
                        lengths = np.ones(size, dtype=np.int32)
                    else:
                        t = shape[0]
                        lengths = rng.integers(t // 2, t + 1, size=size).astype(np.int32)
                        x[np.arange(t)[None, :] >= lengths[:, None]] = 0.0
                    arrays[m] = x
                    index[f"{m}_length"] = lengths
                writer.write_part(index, arrays)


class StepClock(pl.Callback):
    """Times each training step (data fetch included) and stops the epoch after ``steps``."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.times: list[float] = []
        self.rss_steps: list[float] = []
        self.rss_validated = 0.0
        self.rss_at_start = 0.0
        self.steps_per_epoch = 0
        self._t = 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.rss_at_start = peak_rss_gb()
        self.steps_per_epoch = int(trainer.num_training_batches)
        self._t = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any
    ) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()  # the step's kernels, not only their launch
        now = time.perf_counter()
        self.times.append(now - self._t)
        self.rss_steps.append(peak_rss_gb())
        self._t = now
        if self.steps and len(self.times) >= self.steps:
            trainer.should_stop = True

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.rss_validated = peak_rss_gb()


def data_epoch(cfg: ExperimentConfig) -> None:
    """What the trainer reads for one epoch, without the model: the store's memory cost alone."""
    t0 = time.perf_counter()
    data = prepare_training_data(cfg)
    prepared = time.perf_counter() - t0
    rss_prepared = peak_rss_gb()
    train, val = data.loaders(cfg)
    t0 = time.perf_counter()
    samples = 0
    for batch in train:
        samples += sum(len(batch[s]["positions"]) for s in ("labeled", "unlabeled") if s in batch)
    for batch in val:
        samples += len(batch["labeled"]["positions"])
    read = time.perf_counter() - t0
    print(
        f"checks and statistics (prepare_training_data): {prepared:.1f} s, "
        f"peak RSS {rss_prepared:.2f} GB"
    )
    print(
        f"one epoch of batches: {samples} utterances in {read:.1f} s "
        f"({samples / read:.0f} utterances/s)"
    )
    print(f"peak_rss_gb: {peak_rss_gb():.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/emomatch_paper_scale"))
    parser.add_argument("--steps", type=int, default=0, help="0: the whole epoch")
    parser.add_argument("--batch", type=int, default=128, help="labelled (and unlabelled) batch")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--recompute",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="train.recompute (activation checkpointing); --no-recompute stores activations",
    )
    parser.add_argument(
        "--precision", choices=["32-true", "bf16-mixed"], default="32-true", help="train.precision"
    )
    parser.add_argument(
        "--accelerator",
        choices=["cpu", "gpu"],
        default="cpu",
        help="train.accelerator (gpu: one CUDA GPU; peak RSS is then the host's)",
    )
    parser.add_argument(
        "--data-only",
        action="store_true",
        help="only the data path: checks, statistics and one epoch of batches, no model",
    )
    parser.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    store_path = args.work / f"store-{args.dtype}"
    if args.build_only:
        build_store(store_path, args.dtype)
        return
    if not (store_path / "store.json").is_file():
        t0 = time.perf_counter()
        cmd = [sys.executable, __file__, "--build-only", "--work", str(args.work)]
        subprocess.run([*cmd, "--dtype", args.dtype], check=True)
        print(f"built {store_path} in {time.perf_counter() - t0:.0f} s")
    if args.threads:
        torch.set_num_threads(args.threads)
    store = FeatureStore(store_path)
    disk = sum(f.stat().st_size for f in store_path.rglob("*.npy"))
    print(f"store {store_path}: {len(store)} utterances, {disk / 1e9:.2f} GB of {args.dtype}")
    del store

    cfg = ExperimentConfig(
        data=DataConfig(store=store_path),
        train=TrainConfig(
            batch_size=args.batch,
            unlabeled_batch_size=args.batch,
            max_epochs=1,
            num_workers=args.workers,
            progress_bar=False,
            accelerator=args.accelerator,
            devices=1,
            recompute=args.recompute,
            precision=args.precision,
        ),
    )
    if args.data_only:
        data_epoch(cfg)
        return
    run_dir = args.work / f"run-{os.getpid()}"
    clock = StepClock(args.steps)
    t0 = time.perf_counter()
    try:
        fit(cfg, run_dir, callbacks=[clock])
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    wall = time.perf_counter() - t0
    peak = peak_rss_gb() + peak_rss_gb(resource.RUSAGE_CHILDREN) * (args.workers > 0)

    # The first step pays for the allocator's growth and Adam's state: timed apart.
    timed = clock.times[1:] or clock.times
    step_s = statistics.mean(timed)
    per_step = 2 * args.batch
    epoch_s = step_s * clock.steps_per_epoch
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.precision} "
        f"{device_name(args.accelerator)}, train.recompute={args.recompute}"
    )
    print(f"splits {SPLITS}, batch {args.batch} labelled + {args.batch} unlabelled")
    print(
        f"peak RSS before the first step (data checked, statistics fitted): "
        f"{clock.rss_at_start:.2f} GB"
    )
    steps_rss = ", ".join(f"{x:.2f}" for x in clock.rss_steps)
    print(f"peak RSS after each step: {steps_rss} GB; after validation {clock.rss_validated:.2f}")
    print(
        f"steps run {len(clock.times)} of {clock.steps_per_epoch} per epoch; "
        f"first {clock.times[0]:.1f} s, then mean {step_s:.2f} s "
        f"(median {statistics.median(timed):.2f} s)"
    )
    print(f"samples/s: {per_step / step_s:.1f} (labelled + unlabelled)")
    kind = "extrapolated" if args.steps else "measured"
    print(f"time per epoch ({kind}, train loop): {epoch_s / 60:.1f} min; fit() wall {wall:.0f} s")
    if args.accelerator == "gpu":
        print(f"peak GPU memory allocated: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    print(f"peak_rss_gb: {peak:.2f}")


def device_name(accelerator: str) -> str:
    if accelerator == "gpu" and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return accelerator.upper()


if __name__ == "__main__":
    main()
