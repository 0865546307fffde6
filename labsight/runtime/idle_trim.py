"""Give a server's freed heap back to the system once it has been idle for a moment.

glibc keeps memory that a burst of calls freed (request buffers, decoded images,
model activations) for reuse; a service whose bursts come minutes apart holds it
all the while. When no call has been in flight for :data:`IDLE_S`, the process
calls ``malloc_trim(0)``, which returns the free memory at the heap's top and
advises the kernel to drop the free pages inside it. Under steady load the
server is never idle, so nothing is trimmed and no page is faulted in twice.
Elsewhere than glibc (musl, macOS) there is nothing to call and nothing happens.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time
from collections.abc import Callable

from prometheus_client import Counter

from labsight.config import env_float

IDLE_S = 30.0
"""Seconds without a call in flight before the heap is trimmed, unless
LABSIGHT_IDLE_TRIM_S says otherwise (0: never). A trimmed process faults its working set
in again on the next burst (about 100-200 ms of CPU for a model service on a VM where a
page fault costs 2.3 us): bursts a few seconds apart, such as a benchmark's alternating
rounds, paid up to a quarter more CPU with 1 s."""

IDLE_TRIM_ENV = "LABSIGHT_IDLE_TRIM_S"

TRIMS = Counter("labsight_idle_heap_trims_total", "Times an idle server gave its freed heap back")


def _glibc_trim() -> Callable[[], object] | None:
    """``malloc_trim(0)`` of the C library when it is glibc, else None."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


class IdleTrimmer:
    """Counts calls in flight and trims the heap once none has been for ``idle_s``.

    Calls only count under a lock; the trimming thread looks at the counts on its own schedule
    (when a trim could next be due, else every ``idle_s`` / BUSY_LOOKS_PER_IDLE), so a call
    never wakes it: woken each time the last call in flight ended, it cost a model service
    about 2 thread switches per call under steady load.

    Parameters
    ----------
    idle_s : float
        Quiet time before a trim; the trim comes at most ``idle_s`` / BUSY_LOOKS_PER_IDLE
        later.
    trim : callable, optional
        What trims (default: glibc's ``malloc_trim(0)``; None where there is none).
    """

    BUSY_LOOKS_PER_IDLE = 4
    """Looks at the counts per ``idle_s`` while calls run or nothing has run since the last
    trim."""

    def __init__(self, idle_s: float = IDLE_S, trim: Callable[[], object] | None = None) -> None:
        self.idle_s = idle_s
        self._trim = trim if trim is not None else _glibc_trim()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._last_end = time.monotonic()
        self._ended_since_trim = True  # the start (models loaded, kernels compiled) freed a lot
        if self._trim is not None:
            threading.Thread(target=self._run, name="idle-heap-trim", daemon=True).start()

    def call_started(self) -> None:
        """A call began."""
        with self._lock:
            self._in_flight += 1

    def call_ended(self) -> None:
        """A call ended (answered, failed or cancelled)."""
        with self._lock:
            self._in_flight -= 1
            self._last_end = time.monotonic()
            self._ended_since_trim = True

    def _seconds_to_trim(self) -> float:
        """0 when a trim is due now (and taken as done), else how long to wait before looking
        again."""
        with self._lock:
            if not self._ended_since_trim or self._in_flight:
                return self.idle_s / self.BUSY_LOOKS_PER_IDLE
            wait = self._last_end + self.idle_s - time.monotonic()
            if wait > 0:
                return wait
            self._ended_since_trim = False
            return 0.0

    def _run(self) -> None:
        assert self._trim is not None
        while True:
            wait = self._seconds_to_trim()
            if wait > 0:
                time.sleep(wait)
                continue
            self._trim()
            TRIMS.inc()


_PROCESS_TRIMMER: IdleTrimmer | None = None
_PROCESS_TRIMMER_LOCK = threading.Lock()


def process_trimmer() -> IdleTrimmer | None:
    """The process's one trimmer, shared by its servers (started on first use); None when
    LABSIGHT_IDLE_TRIM_S is 0."""
    global _PROCESS_TRIMMER
    idle_s = env_float(IDLE_TRIM_ENV, IDLE_S)
    if idle_s <= 0:
        return None
    with _PROCESS_TRIMMER_LOCK:
        if _PROCESS_TRIMMER is None:
            _PROCESS_TRIMMER = IdleTrimmer(idle_s)
        return _PROCESS_TRIMMER
