"""The vector width numba compiles for: whole AVX-512 registers where the CPU has them.

LLVM tunes several Intel cores with AVX-512 (Ice Lake, Rocket Lake, Sapphire Rapids...) to
prefer 256-bit vectors (``prefer-256-bit``), against the frequency drop 512-bit instructions
cost on older Xeons. LabSight's gliding-box kernels work on bytes and 16-bit counts, where twice
the lanes count for more than that: on a Sapphire Rapids VM reported as Rocket Lake, a 128² RGB
gliding box took 2.35 ms on one thread with the preference off against 3.24 with it, and a
stack of 64 tiles 37 ms against 50 (percolation and the segmentation's flow following did not
move). AMD's Zen 4 and Zen 5 are tuned for 512 bits already, and CPUs without AVX-512 have no
wider vectors: there nothing changes.
"""

from __future__ import annotations

import os

from numba.core import config
from numba.core.codegen import get_host_cpu_features

PREFER_256_BIT = "prefer-256-bit"
"""LLVM's tuning feature that caps vectorised loops at 256 bits on CPUs with AVX-512."""

USER_SETTINGS = ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES")
"""numba's own variables: where the user sets either, their choice stands."""


def full_width_features(host_features: str) -> str | None:
    """``host_features`` (LLVM's comma-separated ``+name``/``-name`` list) with the 256-bit
    preference turned off, or None where the CPU has no AVX-512F (nothing to widen).

    Examples
    --------
    >>> full_width_features("+avx2,+avx512f,+avx512bw")
    '+avx2,+avx512f,+avx512bw,-prefer-256-bit'
    >>> full_width_features("+avx2,-avx512f") is None
    True
    """
    features = [name for name in host_features.split(",") if name]
    if "+avx512f" not in features:
        return None
    kept = [name for name in features if name.lstrip("+-") != PREFER_256_BIT]
    return ",".join([*kept, f"-{PREFER_256_BIT}"])


def use_full_vector_width() -> bool:
    """Let numba's LLVM vectorise with whole AVX-512 registers; True if this changed its target.

    Call before the process's first numba compilation (or cache load): numba reads the feature
    string once, when it builds its code generator, and keys its cache by it, so kernels cached
    for the other width compile again once. Does nothing where the CPU has no AVX-512F, where
    the user set ``NUMBA_CPU_NAME`` or ``NUMBA_CPU_FEATURES``, or where it already ran.
    """
    if any(os.environ.get(name) for name in USER_SETTINGS) or config.CPU_FEATURES is not None:
        return False
    features = full_width_features(get_host_cpu_features())
    if features is None:
        return False
    config.CPU_FEATURES = features
    return True
