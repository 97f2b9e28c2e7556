"""Training-step benchmark: the A+V+L model at the paper's dims, batch 128 labeled + 128 unlabeled,
fp32 on CPU, against the same machine's dense matmul throughput measured in the same process.

    .venv/bin/python bench/train_step.py [--steps 20] [--threads N] [--precision bf16-mixed]
                                         [--compile] [--device cuda]
    .venv/bin/python bench/train_step.py --sweep batch|length|unlabeled   # scaling figures

The step's FLOPs are counted with torch.utils.flop_counter.FlopCounterMode (forward, backward and
the matching terms); achieved FLOP/s = counted FLOPs / median step time. The ratio to a plain
matmul's FLOP/s says how much of the machine the step uses; machines here are shared and noisy, so
both are measured in one run, interleaved, and the medians are compared. Last line:
``train_step_vs_matmul: <ratio>``.

``--precision bf16-mixed`` runs the step under bfloat16 autocast (as ``train.precision:
bf16-mixed`` does) and compares with a bfloat16 matmul. ``--device cuda`` runs the step on the
GPU, bf16-mixed by default, against a bf16 matmul on the same GPU (timed with synchronisation);
it refuses to run where CUDA is missing. ``--sweep`` prints the median step time against the
batch size (the matching kernels are quadratic in it), the sequence lengths (attention is
quadratic in them), or the unlabelled batch (what the unlabelled pool costs per step).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from emomatch.config import LossConfig, ModelConfig
from emomatch.model import EmotionModel
from emomatch.model.losses import objective, stream_terms
from emomatch.runtime import keep_freed_memory, matmul_flops_per_s
from emomatch.synthetic.features import PAPER_SHAPES, random_inputs

CLASSES = 4


def random_batch(
    batch: int,
    gen: torch.Generator,
    labeled: bool,
    shapes: dict[str, tuple[int, ...]] | None = None,
    device: str = "cpu",
) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], torch.Tensor | None]:
    drawn = random_inputs(batch, shapes or PAPER_SHAPES, gen)
    inputs = {m: (x.to(device), n.to(device)) for m, (x, n) in drawn.items()}
    labels = torch.randint(0, CLASSES, (batch,), generator=gen) if labeled else None
    return inputs, None if labels is None else labels.to(device)


def make_step(  # type: ignore[no-untyped-def]
    batch: int,
    seed: int = 0,
    unlabeled_batch: int | None = None,
    shapes: dict[str, tuple[int, ...]] | None = None,
    device: str = "cpu",
    bf16: bool = False,
    compile_model: bool = False,
):
    """The model, its optimizer and one training step on fixed random batches
    (``unlabeled_batch`` 0: the fully supervised step, no unlabelled stream)."""
    torch.manual_seed(seed)
    shapes = shapes or dict(PAPER_SHAPES)
    model = EmotionModel(shapes, CLASSES, ModelConfig()).to(device)
    loss_cfg = LossConfig()
    # fused: one kernel for all parameters, as the trainer's optimizer (training/module.py)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    gen = torch.Generator().manual_seed(seed)
    lab_in, labels = random_batch(batch, gen, True, shapes, device)
    n_unl = batch if unlabeled_batch is None else unlabeled_batch
    unl_in = random_batch(n_unl, gen, False, shapes, device)[0] if n_unl else None
    shuffles = torch.Generator().manual_seed(seed + 1)
    # dynamic=True fails inside inductor on the packed-token count (torch 2.13): static shapes
    forward = torch.compile(model) if compile_model else model

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        autocast = (
            torch.autocast(device, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        )
        with autocast:
            lab = stream_terms(forward, lab_in, loss_cfg, labels=labels, generator=shuffles)
            unl = None
            if unl_in is not None:
                unl = stream_terms(forward, unl_in, loss_cfg, generator=shuffles)
            total, _ = objective(lab, unl, loss_cfg)
        total.backward()
        optimizer.step()
        return float(total.detach())  # waits for the device

    model.train()
    return model, step


def median_step(step: Callable[[], float], steps: int) -> float:
    step()  # warm-up: allocator, optimizer state
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def sweep(kind: str, steps: int) -> None:
    """Median step time against one size, the others at the paper's values."""
    print(f"sweep {kind}: median of {steps} steps, fp32 CPU, {torch.get_num_threads()} threads")
    base = dict(PAPER_SHAPES)
    if kind == "batch":
        for b in (16, 32, 64, 128, 256):
            _, step = make_step(b)
            t = median_step(step, steps)
            print(f"batch {b} + {b}: {t:.2f} s, {t / (2 * b) * 1e3:.1f} ms per utterance")
    elif kind == "length":
        for scale in (0.5, 1.0, 2.0, 4.0):
            shapes = {
                m: s if len(s) == 1 else (max(8, round(s[0] * scale)), s[1])
                for m, s in base.items()
            }
            _, step = make_step(64, shapes=shapes)
            t = median_step(step, steps)
            lengths = f"visual {shapes['visual'][0]}, lexical {shapes['lexical'][0]}"
            print(f"lengths x{scale} ({lengths}), batch 64 + 64: {t:.2f} s")
    elif kind == "unlabeled":
        for u in (0, 64, 128, 256):
            _, step = make_step(128, unlabeled_batch=u)
            t = median_step(step, steps)
            print(f"batch 128 labelled + {u} unlabelled: {t:.2f} s")
    else:
        raise SystemExit(f"unknown sweep {kind!r}: batch, length or unlabeled")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128, help="labeled (and unlabeled) batch")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--matmul-n", type=int, default=1024)
    parser.add_argument("--keep-memory", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--precision",
        choices=["32-true", "bf16-mixed"],
        default=None,
        help="default: 32-true on CPU, bf16-mixed on CUDA",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the model (fails in inductor with torch 2.13: docs/benchmarks.md)",
    )
    parser.add_argument("--sweep", choices=["batch", "length", "unlabeled"], default=None)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit(
            "bench/train_step.py --device cuda: this machine has no usable CUDA GPU "
            f"(torch {torch.__version__}, torch.cuda.is_available() is False)"
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    # What `emomatch train` does too; --no-keep-memory shows the glibc default.
    kept = keep_freed_memory() if args.keep_memory else False
    if args.sweep:
        sweep(args.sweep, args.steps)
        return
    precision = args.precision or ("bf16-mixed" if args.device == "cuda" else "32-true")
    bf16 = precision == "bf16-mixed"
    if args.device == "cuda":
        # what Lightning's bf16-mixed leaves to cuDNN/cuBLAS: fused attention comes from
        # scaled_dot_product_attention itself
        torch.backends.cudnn.benchmark = True

    model, step = make_step(args.batch, device=args.device, bf16=bf16, compile_model=args.compile)
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
        matmul_rates.append(matmul_flops_per_s(args.matmul_n, 3, args.device, bf16))
    step_s = statistics.median(step_times)
    step_rate = flops / step_s
    matmul_rate = statistics.median(matmul_rates)

    where = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    compiled = ", torch.compile" if args.compile else ""
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, {precision} {where}{compiled}")
    print(f"freed memory kept by the allocator (keep_freed_memory): {kept}")
    print(f"model A+V+L at paper dims {dict(PAPER_SHAPES)}: {params / 1e6:.2f} M parameters")
    print(f"batch {args.batch} labeled + {args.batch} unlabeled, {args.steps} timed steps")
    print(f"FLOPs per training step (FlopCounterMode): {flops / 1e9:.2f} GFLOP")
    print(f"median step time: {step_s * 1e3:.1f} ms ({1 / step_s:.2f} steps/s)")
    print(f"training step: {step_rate / 1e9:.1f} GFLOP/s")
    kind = "bf16" if bf16 else "fp32"
    print(f"dense {kind} matmul {args.matmul_n}x{args.matmul_n}: {matmul_rate / 1e9:.1f} GFLOP/s")
    print(f"train_step_vs_matmul: {step_rate / matmul_rate:.3f}")


if __name__ == "__main__":
    main()
