"""IdleTrimmer: the heap is trimmed once the server has been idle for a moment after work, never
while a call is in flight, and not again until another call has ended."""

from __future__ import annotations

import threading
import time

from labsight.runtime.idle_trim import IdleTrimmer

IDLE_S = 0.2


def _trimmer() -> tuple[IdleTrimmer, threading.Semaphore]:
    trims = threading.Semaphore(0)
    return IdleTrimmer(IDLE_S, trim=trims.release), trims


def test_the_start_is_trimmed_once_then_nothing_without_calls() -> None:
    _, trims = _trimmer()
    assert trims.acquire(timeout=30)  # models loaded and kernels compiled before serving
    assert not trims.acquire(timeout=10 * IDLE_S)


def test_a_call_in_flight_holds_the_trim_back_until_it_ends() -> None:
    trimmer, trims = _trimmer()
    assert trims.acquire(timeout=30)
    trimmer.call_started()
    trimmer.call_started()
    trimmer.call_ended()
    assert not trims.acquire(timeout=10 * IDLE_S)  # one call still runs
    ended = time.monotonic()
    trimmer.call_ended()
    assert trims.acquire(timeout=30)
    assert time.monotonic() - ended >= IDLE_S
    assert not trims.acquire(timeout=10 * IDLE_S)  # once per quiet spell


def test_calls_in_quick_succession_give_one_trim_after_the_last() -> None:
    trimmer, trims = _trimmer()
    assert trims.acquire(timeout=30)
    for _ in range(5):
        trimmer.call_started()
        trimmer.call_ended()
    assert trims.acquire(timeout=30)
    assert not trims.acquire(timeout=10 * IDLE_S)
