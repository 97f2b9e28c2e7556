"""Training-step benchmark: the A+V+L model at the paper's dims, batch 128 labeled + 128 unlabeled,
fp32 on CPU, against the same machine's dense matmul throughput measured in the same process.

    .venv/bin/python bench/train_step.py [--steps 20] [--threads N]

The step's FLOPs are counted with torch.utils.flop_counter.FlopCounterMode (forward, backward and
the matching terms); achieved FLOP/s = counted FLOPs / median step time. The ratio to a plain
matmul's FLOP/s says how much of the machine the step uses; machines here are shared and noisy, so
both are measured in one run, interleaved, and the medians are compared. Last line:
``train_step_vs_matmul: <ratio>``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from emomatch.config import LossConfig, ModelConfig
from emomatch.model import EmotionModel
from emomatch.model.losses import objective, stream_terms
from emomatch.runtime import keep_freed_memory
from emomatch.synthetic.features import PAPER_SHAPES

CLASSES = 4


def random_batch(
    batch: int, gen: torch.Generator, labeled: bool
) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], torch.Tensor | None]:
    inputs = {}
    for m, shape in PAPER_SHAPES.items():
        x = torch.randn(batch, *shape, generator=gen)
        if len(shape) == 1:
            lengths = torch.ones(batch, dtype=torch.long)
        else:
            # Real sequences are padded: valid lengths spread over 1..max_len.
            lengths = torch.randint(1, shape[0] + 1, (batch,), generator=gen)
        inputs[m] = (x, lengths)
    labels = torch.randint(0, CLASSES, (batch,), generator=gen) if labeled else None
    return inputs, labels


def make_step(batch: int, seed: int = 0):  # type: ignore[no-untyped-def]
    torch.manual_seed(seed)
    model = EmotionModel(dict(PAPER_SHAPES), CLASSES, ModelConfig())
    loss_cfg = LossConfig()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    lab_in, labels = random_batch(batch, gen, labeled=True)
    unl_in, _ = random_batch(batch, gen, labeled=False)
    shuffles = torch.Generator().manual_seed(seed + 1)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        lab = stream_terms(model, lab_in, loss_cfg, labels=labels, generator=shuffles)
        unl = stream_terms(model, unl_in, loss_cfg, generator=shuffles)
        total, _ = objective(lab, unl, loss_cfg)
        total.backward()
        optimizer.step()
        return float(total.detach())

    model.train()
    return model, step


def matmul_flops_per_s(n: int, reps: int) -> float:
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    torch.mm(a, b)
    t0 = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128, help="labeled (and unlabeled) batch")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--matmul-n", type=int, default=1024)
    parser.add_argument("--keep-memory", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    # What `emomatch train` does too; --no-keep-memory shows the glibc default.
    kept = keep_freed_memory() if args.keep_memory else False

    model, step = make_step(args.batch)
    params = sum(p.numel() for p in model.parameters())
    step()  # warm-up: allocator, Adam state
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    flops = counter.get_total_flops()

    step_times, matmul_rates = [], []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        step_times.append(time.perf_counter() - t0)
        matmul_rates.append(matmul_flops_per_s(args.matmul_n, reps=3))
    step_s = statistics.median(step_times)
    step_rate = flops / step_s
    matmul_rate = statistics.median(matmul_rates)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32 CPU")
    print(f"freed memory kept by the allocator (keep_freed_memory): {kept}")
    print(f"model A+V+L at paper dims {dict(PAPER_SHAPES)}: {params / 1e6:.2f} M parameters")
    print(f"batch {args.batch} labeled + {args.batch} unlabeled, {args.steps} timed steps")
    print(f"FLOPs per training step (FlopCounterMode): {flops / 1e9:.2f} GFLOP")
    print(f"median step time: {step_s * 1e3:.1f} ms ({1 / step_s:.2f} steps/s)")
    print(f"training step: {step_rate / 1e9:.1f} GFLOP/s")
    print(f"dense matmul {args.matmul_n}x{args.matmul_n}: {matmul_rate / 1e9:.1f} GFLOP/s")
    print(f"train_step_vs_matmul: {step_rate / matmul_rate:.3f}")


if __name__ == "__main__":
    main()
