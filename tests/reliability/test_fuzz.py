"""No request can hurt a service: a few hundred seeded fuzz calls on every RPC of real processes.

The cases and what counts as a failure are in tests/reliability/fuzzing/. A failure's
``#N`` replays alone with ``python bench/fuzz.py --seed 20261203 --only N``.
"""

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
    assert set(report.memory) == {"gateway", "features", "segmentation", "classifier", "worker"}
    assert not report.findings, report.render()
