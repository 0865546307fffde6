"""numba compiles LabSight's kernels for whole AVX-512 registers where the CPU has them, and
leaves a user's own numba target alone."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from numba.core.codegen import get_host_cpu_features

from labsight.numba_target import full_width_features

CODEGEN_FEATURES = (
    "import services.features.fractal\n"
    "from numba.core.registry import cpu_target\n"
    "print(cpu_target.target_context.codegen().magic_tuple()[2])\n"
)
"""Prints the LLVM features numba's code generator uses once the features modules are imported."""


def _codegen_features(**environment: str) -> str:
    env = {key: value for key, value in os.environ.items()
           if key not in ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES")}
    done = subprocess.run([sys.executable, "-c", CODEGEN_FEATURES], env={**env, **environment},
                          capture_output=True, text=True, check=True, timeout=120)
    return done.stdout.strip()


def test_the_256_bit_preference_is_turned_off_only_with_avx512() -> None:
    assert full_width_features("+avx2,+avx512f,+avx512bw") == "+avx2,+avx512f,+avx512bw,-prefer-256-bit"
    assert full_width_features("+avx512f,+prefer-256-bit,+fma") == "+avx512f,+fma,-prefer-256-bit"
    assert full_width_features("+avx2,-avx512f,+fma") is None
    assert full_width_features("") is None


def test_the_features_service_kernels_compile_for_the_host_at_full_width() -> None:
    host = get_host_cpu_features()
    features = _codegen_features()
    if "+avx512f" in host.split(","):
        assert features == full_width_features(host)
    else:
        assert features == host


@pytest.mark.parametrize("setting", ["NUMBA_CPU_FEATURES", "NUMBA_CPU_NAME"])
def test_a_users_numba_target_stands(setting: str) -> None:
    value = "+sse2,+avx2" if setting == "NUMBA_CPU_FEATURES" else "haswell"
    features = _codegen_features(**{setting: value})
    assert "prefer-256-bit" not in features
    if setting == "NUMBA_CPU_FEATURES":
        assert features == value
