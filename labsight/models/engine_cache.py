"""A least-recently-used cache of loaded engines, bounded by the memory they hold.

Requests lease an engine for as long as they use it. When the engines held
exceed the budget, the least recently used ones that no request holds are
taken out and closed; one still in use is closed once its last lease ends, so
eviction never breaks a running request. The most recently used engine and
pinned ones stay even over the budget (a budget smaller than one engine
still serves, one engine at a time).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from prometheus_client import Counter, Gauge

# Every cache of the process adds to these (a test process may hold several model servers).
CACHED_BYTES = Gauge(
    "labsight_engine_cache_bytes", "Estimated memory of the engines a model service holds loaded"
)
CACHED_ENGINES = Gauge(
    "labsight_engine_cache_engines", "Engines a model service holds loaded or is building"
)
EVICTIONS = Counter(
    "labsight_engine_cache_evictions_total", "Engines closed to keep the engine cache in its budget"
)


class Closable(Protocol):
    """What the cache holds: something that knows its memory and can release it."""

    @property
    def nbytes(self) -> int:
        """Estimated memory held."""
        ...

    def close(self) -> None:
        """Release everything held; called once, when no request uses it."""
        ...


V = TypeVar("V", bound=Closable)


@dataclass(eq=False)
class _Entry(Generic[V]):
    """A cached value (or the future of one being built) and the requests holding it."""

    value: Future[V] = field(default_factory=Future)
    leases: int = 0
    nbytes: int = 0
    pinned: bool = False


class EngineCache(Generic[V]):
    """Engines by key, built once on first use and closed least recently used first.

    Parameters
    ----------
    budget_bytes : int
        Most memory (by each value's ``nbytes``) the idle engines may hold together.
    """

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, _Entry[V]] = OrderedDict()
        self._nbytes = 0

    @contextmanager
    def lease(self, key: Hashable, build: Callable[[], V], pin: bool = False) -> Iterator[V]:
        """The value of ``key``, built by ``build()`` if absent, held until the block ends.

        Concurrent leases of an absent key wait for one build. A failed build is
        not cached: its error goes to every waiting lease and the next one
        builds again. ``pin`` keeps the value loaded for good.
        """
        with self._lock:
            entry = self._entries.get(key)
            builder = entry is None
            if entry is None:
                entry = self._entries[key] = _Entry()
                CACHED_ENGINES.inc()
            self._entries.move_to_end(key)
            entry.leases += 1
            entry.pinned = entry.pinned or pin
        try:
            if builder:
                self._build(key, entry, build)
            yield entry.value.result()
        finally:
            with self._lock:
                entry.leases -= 1
                victims = self._evict()
            self._close(victims)

    def __len__(self) -> int:
        """Number of engines loaded or being built."""
        with self._lock:
            return len(self._entries)

    @property
    def nbytes(self) -> int:
        """Estimated memory of the engines loaded."""
        with self._lock:
            return self._nbytes

    def items(self) -> list[tuple[Hashable, V]]:
        """The loaded engines by key, least recently used first."""
        with self._lock:
            return [
                (key, entry.value.result())
                for key, entry in self._entries.items()
                if entry.value.done() and entry.value.exception() is None
            ]

    def clear(self) -> None:
        """Take out and close every loaded engine that no request holds, pinned ones included."""
        released: list[V] = []
        with self._lock:
            for key, entry in list(self._entries.items()):
                if entry.leases or not entry.value.done():
                    continue
                del self._entries[key]
                self._nbytes -= entry.nbytes
                CACHED_BYTES.dec(entry.nbytes)
                CACHED_ENGINES.dec()
                released.append(entry.value.result())
        for value in released:
            value.close()

    def _build(self, key: Hashable, entry: _Entry[V], build: Callable[[], V]) -> None:
        try:
            value = build()
        except BaseException as error:
            with self._lock:
                if self._entries.get(key) is entry:
                    del self._entries[key]
                    CACHED_ENGINES.dec()
            entry.value.set_exception(error)
            return
        with self._lock:
            entry.nbytes = value.nbytes
            self._nbytes += entry.nbytes
            CACHED_BYTES.inc(entry.nbytes)
            entry.value.set_result(value)
            victims = self._evict()
        self._close(victims)

    def _evict(self) -> list[V]:
        """Take out idle engines, least recently used first, until the rest fit (lock held)."""
        victims: list[V] = []
        newest = next(reversed(self._entries), None)
        for key in list(self._entries):
            if self._nbytes <= self.budget_bytes:
                break
            entry = self._entries[key]
            if entry.leases or entry.pinned or key == newest or not entry.value.done():
                continue
            del self._entries[key]
            self._nbytes -= entry.nbytes
            CACHED_BYTES.dec(entry.nbytes)
            CACHED_ENGINES.dec()
            victims.append(entry.value.result())
        return victims

    @staticmethod
    def _close(victims: list[V]) -> None:
        """Close evicted engines outside the lock: closing waits for their threads."""
        for value in victims:
            EVICTIONS.inc()
            value.close()
