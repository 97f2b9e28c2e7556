"""Process-level settings that make training fast and keep its memory bounded."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

log = logging.getLogger(__name__)

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
#: glibc's ceiling for the mmap threshold on 64-bit systems
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024


def keep_freed_memory() -> bool:
    """Let glibc keep freed memory for reuse instead of handing it back to the kernel.

    A training step allocates and frees activations of tens of MB; by default glibc serves each
    from a fresh mmap and unmaps it on free, so every step page-faults its whole working set
    again. Measured on the paper-size step on CPU: 0.42 -> 0.67 of dense-matmul throughput
    (bench/train_step.py). Returns whether the setting took effect (glibc only)."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        ok = libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX) == 1
        ok &= libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
        # Grow the heap in large steps: fewer brk calls and page-fault storms.
        ok &= libc.mallopt(_M_TOP_PAD, 256 * 1024 * 1024) == 1
    except (OSError, AttributeError):
        return False
    if not ok:
        log.debug("mallopt refused the settings; memory is returned to the kernel as usual")
    return bool(ok)


class StreamingCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, writing the file as it serialises.

    Lightning's own serialises the whole checkpoint into an in-memory buffer first and then
    writes the buffer, for atomicity; at the paper's dims that buffer is the weights and Adam's
    two moments (575 MB) held beside them at every epoch's end. The checkpoints of a run are
    written to a temporary file and renamed (``emomatch.training.persist.save_atomically``),
    which is atomic already, so the buffer buys nothing here.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        torch.save(checkpoint, path)

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        # Lightning's own load (of ``--resume``'s last.ckpt) would unpickle with
        # weights_only=False when not told otherwise: every read goes through the safe one.
        from emomatch.safeload import read_checkpoint

        return read_checkpoint(path, map_location=map_location or "cpu")


def matmul_flops_per_s(n: int, reps: int, device: str = "cpu", bf16: bool = False) -> float:
    """Dense n x n matmul throughput (FLOP/s) on ``device``: the yardstick the benchmarks divide
    their achieved FLOP/s by, measured in the same process because these machines are shared."""
    dtype = torch.bfloat16 if bf16 else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    torch.mm(a, b)
    sync()
    t0 = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    sync()
    return 2 * n**3 * reps / (time.perf_counter() - t0)
