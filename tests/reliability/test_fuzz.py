"""No request can hurt a service: a few hundred seeded fuzz calls on every RPC of real processes."""

from __future__ import annotations

from pathlib import Path

from tests.reliability.fuzzing import FuzzConfig, run_fuzz

SEED = 20261203
CALLS = 300


def test_fuzzed_calls_never_answer_internal_crash_or_grow_memory(
    redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    report = run_fuzz(FuzzConfig(seed=SEED, calls=CALLS), redis_url, key_prefix, tmp_path)
    print(report.render())
    assert report.calls == CALLS
    assert not report.findings, report.render()
