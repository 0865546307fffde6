"""IdleTrimmer: the heap is trimmed once the server has been idle for a moment after work, never
while a call is in flight, and not again until another call has ended."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

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


def _switches(thread: threading.Thread) -> int:
    status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
    return sum(int(line.split()[1]) for line in status.splitlines() if "ctxt_switches" in line)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux's /proc")
def test_calls_do_not_wake_the_trimming_thread() -> None:
    """Under steady load the last call in flight ends once per call; waking the trimming
    thread each time cost a service two thread switches per call. With 30 s to wait, the
    thread looks at the counts every 7.5 s at most, so it sleeps through the calls however
    slowly they run."""
    before = {id(t) for t in threading.enumerate()}
    trimmer = IdleTrimmer(30.0, trim=lambda: None)
    thread = next(t for t in threading.enumerate() if id(t) not in before and t.name == "idle-heap-trim")
    time.sleep(0.1)  # asleep until a trim could be due
    start = _switches(thread)
    for _ in range(500):
        trimmer.call_started()
        trimmer.call_ended()
        time.sleep(0.0005)  # the GIL let go between calls, as a server's threads do
    woken = _switches(thread) - start  # every call ended with none left in flight
    assert woken < 50, f"the trimming thread switched {woken} times for 500 calls"
