"""A seeded fuzzer of every LabSight RPC against real processes (tests/reliability/test_fuzz.py
runs a few hundred calls, bench/fuzz.py ten thousand or more)."""

from .runner import FuzzConfig, Report, run_fuzz

__all__ = ["FuzzConfig", "Report", "run_fuzz"]
