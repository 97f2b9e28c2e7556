"""Process-level settings that make CPU training fast."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

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
