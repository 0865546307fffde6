"""How many CPUs this process may use: its affinity mask, capped by a container's CPU limit."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def usable_cpus(cgroup_root: Path = CGROUP_ROOT) -> int:
    """CPUs to size thread pools by: the affinity mask, capped by the cgroup CPU quota if any.

    A Kubernetes CPU limit (or ``docker run --cpus``) sets a quota, not an
    affinity mask, so the mask alone would count every CPU of the node.
    """
    count = len(os.sched_getaffinity(0))
    quota = cgroup_cpu_quota(cgroup_root)
    return count if quota is None else max(1, min(count, math.ceil(quota)))


def cgroup_cpu_quota(cgroup_root: Path = CGROUP_ROOT) -> float | None:
    """The CPU quota in CPUs (cgroup v2 ``cpu.max`` or v1 CFS quota / period); None when unlimited."""
    v2 = cgroup_root / "cpu.max"
    if v2.is_file():
        quota, _, period = v2.read_text().strip().partition(" ")
        return None if quota == "max" else _ratio(quota, period or "100000")
    for folder in ("cpu", "cpu,cpuacct"):
        v1 = cgroup_root / folder
        if (v1 / "cpu.cfs_quota_us").is_file() and (v1 / "cpu.cfs_period_us").is_file():
            quota = (v1 / "cpu.cfs_quota_us").read_text().strip()
            period = (v1 / "cpu.cfs_period_us").read_text().strip()
            return None if quota.startswith("-") else _ratio(quota, period)
    return None


def _ratio(quota: str, period: str) -> float | None:
    """quota / period, or None when either is not a positive number."""
    try:
        value, length = int(quota), int(period)
    except ValueError:
        return None
    return value / length if value > 0 and length > 0 else None


THREAD_POOL_VARIABLES = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS")
"""Environment variables that size numba's and OpenMP's (torch's) thread pools when they load."""


def limit_thread_pools() -> None:
    """Default the thread-pool variables to ``usable_cpus()``; call before numba or torch load.

    Values already set are kept, so an operator can still choose.
    """
    count = str(usable_cpus())
    for name in THREAD_POOL_VARIABLES:
        os.environ.setdefault(name, count)
