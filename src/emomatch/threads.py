"""How many CPU threads a job may use, and OpenMP settings that let jobs share a machine.

Light on purpose (no torch import): the command line sets OpenMP's environment here before
torch loads its OpenMP runtime, which reads it only once, at load.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

#: cgroup v2's CPU limit of this process ("QUOTA PERIOD" or "max PERIOD")
CGROUP_V2_MAX = Path("/sys/fs/cgroup/cpu.max")
#: cgroup v1's limit, in two files
CGROUP_V1_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
CGROUP_V1_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")

#: Idle OpenMP threads sleep instead of spinning: a spinning pool burns the cores another job
#: needs (GNU OpenMP spins ~300k iterations by default, Intel's for 200 ms).
PASSIVE_OPENMP = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}


def cgroup_cpu_limit(
    v2: Path = CGROUP_V2_MAX, v1_quota: Path = CGROUP_V1_QUOTA, v1_period: Path = CGROUP_V1_PERIOD
) -> float | None:
    """The CPUs a container's quota grants (``1.5`` for 150 ms per 100 ms), None when unlimited
    or unknown."""
    try:
        quota, _, period = v2.read_text().strip().partition(" ")
        if quota == "max":
            return None
        return int(quota) / int(period or 100000)
    except (OSError, ValueError, ZeroDivisionError):
        pass
    try:
        q, p = int(v1_quota.read_text()), int(v1_period.read_text())
    except (OSError, ValueError):
        return None
    return q / p if q > 0 and p > 0 else None


def available_cpus() -> int:
    """The CPUs this process may run on: its affinity mask, capped by a cgroup quota (a
    container given 2 CPUs of a 64-core host gets 2, where ``os.cpu_count()`` says 64)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        cpus = min(cpus, max(1, math.ceil(limit)))
    return max(1, cpus)


def default_threads() -> int:
    """``OMP_NUM_THREADS`` where the user set it, else :func:`available_cpus`."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else available_cpus()


def share_machine(threads: int | None = None) -> int:
    """Set up a job that shares the machine: OpenMP's idle threads sleep (effective when torch
    is not imported yet) and torch computes with ``threads`` threads (default:
    :func:`default_threads`). Returns the count."""
    n = threads if threads is not None else default_threads()
    for var, value in PASSIVE_OPENMP.items():
        os.environ.setdefault(var, value)
    # read by OpenMP when torch loads it (and by the worker processes a job starts)
    os.environ["OMP_NUM_THREADS"] = str(n)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
    return n
