"""Dynamic batching: concurrent requests are gathered, run as one batch and answered separately.

Like Triton's dynamic batcher, a batch is closed when it holds ``max_batch_size``
items (or a ``preferred_batch_size``) or when its oldest request has waited
``max_queue_delay_ms``, whichever comes first. A request may carry several items
(the leading axis of its array); a request larger than the room left in a batch is
split across batches and answered once all its parts ran. With ``even_shares``,
fewer queued items than the idle instances' batches hold are shared evenly among
those instances (a request of 40 items on two idle instances runs as 20 + 20, not
32 + 8), so no instance idles while another runs the rest.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import Counter, Histogram

from labsight.errors import Unavailable

BATCH_SIZE = Histogram(
    "labsight_batch_size",
    "Items in each batch a dynamic batcher executed",
    ["batcher"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
QUEUE_SECONDS = Histogram(
    "labsight_batch_queue_seconds",
    "Time from a request's arrival to the start of the batch that ran its first item",
    ["batcher"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1, 5),
)
BATCH_SECONDS = Histogram(
    "labsight_batch_run_seconds",
    "Time to run one batch",
    ["batcher"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
BATCH_FAILURES = Counter(
    "labsight_batch_failures_total", "Batches whose run raised an exception", ["batcher"]
)

BatchFunction = Callable[[np.ndarray], np.ndarray]
"""Runs a batch: (n, ...) in, (n, ...) out, row i of the output belonging to row i of the input."""


@dataclass
class _Request:
    """One submitted array, the rows of it already taken, and the outputs of its parts."""

    items: np.ndarray
    arrived: float
    future: Future[np.ndarray] = field(default_factory=Future)
    taken: int = 0
    parts: dict[int, np.ndarray] = field(default_factory=dict)
    done_rows: int = 0

    @property
    def remaining(self) -> int:
        return len(self.items) - self.taken


@dataclass(frozen=True)
class BatchStats:
    """Counts of what a batcher executed since it started."""

    batches: int
    items: int

    @property
    def mean_batch_size(self) -> float:
        """Mean number of items per executed batch (0 before the first batch)."""
        return self.items / self.batches if self.batches else 0.0


class DynamicBatcher:
    """Gathers concurrent requests into batches for one model and runs them.

    Parameters
    ----------
    run_batch : callable or sequence of callables
        Runs an (n, ...) array and returns an array with n rows. Several
        callables are instances of the model (like Triton's instance groups):
        each runs on its own thread, taking the next batch when it is free.
    max_batch_size : int
        Most items run together.
    max_queue_delay_ms : float
        Longest a request waits for others to join its batch; 0 runs whatever
        is queued at once.
    name : str
        Label of this batcher's Prometheus metrics.
    even_shares : bool
        Whether idle instances share a queue shorter than their batches evenly, for
        instances to which a batch's size is worth nothing beyond a few items (ONNX Runtime
        on the CPU, which runs batches in slices of a few rows anyway); otherwise an
        instance takes as full a batch as it can (a GPU or a remote server batching
        requests itself).
    preferred_batch_size : int, optional
        Queued items at which a free instance starts at once instead of waiting out
        ``max_queue_delay_ms`` for a full batch, like Triton's preferred batch sizes: for
        an engine that runs a batch in slices of this many rows, a larger batch buys
        nothing, so waiting for one only idles the instance, and ``even_shares`` gives no
        instance fewer (default ``max_batch_size``).

    Examples
    --------
    >>> batcher = DynamicBatcher(lambda x: x * 2, max_batch_size=8, max_queue_delay_ms=1)
    >>> batcher.run(np.ones((3, 2))).tolist()
    [[2.0, 2.0], [2.0, 2.0], [2.0, 2.0]]
    >>> batcher.close()
    """

    def __init__(
        self,
        run_batch: BatchFunction | Sequence[BatchFunction],
        max_batch_size: int = 32,
        max_queue_delay_ms: float = 5.0,
        name: str = "default",
        even_shares: bool = False,
        preferred_batch_size: int | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if preferred_batch_size is not None and preferred_batch_size < 1:
            raise ValueError(f"preferred_batch_size must be >= 1, got {preferred_batch_size}")
        if max_queue_delay_ms < 0:
            raise ValueError(f"max_queue_delay_ms must be >= 0, got {max_queue_delay_ms}")
        self.instances = [run_batch] if callable(run_batch) else list(run_batch)
        if not self.instances:
            raise ValueError("run_batch: give at least one batch function")
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_ms / 1000.0
        self.name = name
        self.even_shares = even_shares
        self.preferred_batch_size = preferred_batch_size
        self.ready_items = min(max_batch_size, preferred_batch_size or max_batch_size)
        self._queue: deque[_Request] = deque()
        self._condition = threading.Condition()
        self._idle = 0  # instances waiting in _next_batch
        self._closed = False
        self._batches = 0
        self._items = 0
        self._threads = [
            threading.Thread(
                target=self._loop, args=(instance,), name=f"batcher-{name}-{index}", daemon=True
            )
            for index, instance in enumerate(self.instances)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, items: np.ndarray) -> Future[np.ndarray]:
        """Queue ``items`` (rows along axis 0); the future resolves to their output rows."""
        request = _Request(np.asarray(items), time.perf_counter())
        if request.items.ndim == 0 or len(request.items) == 0:
            raise ValueError(f"items must have at least one row, got shape {request.items.shape}")
        with self._condition:
            if self._closed:
                raise Unavailable(f"batcher {self.name!r} is closed")
            self._queue.append(request)
            self._condition.notify()
        return request.future

    def run(self, items: np.ndarray, timeout_s: float | None = None) -> np.ndarray:
        """Submit ``items`` and wait for their output rows."""
        return self.submit(items).result(timeout_s)

    def stats(self) -> BatchStats:
        """How many batches and items this batcher has executed."""
        with self._condition:
            return BatchStats(self._batches, self._items)

    def close(self, drop_metrics: bool = False) -> None:
        """Stop taking requests, finish the queued ones, and stop the threads.

        ``drop_metrics`` also removes this batcher's series from /metrics, for
        batchers made and closed on demand (one per served layer), whose names
        would otherwise pile up there.
        """
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        for thread in self._threads:
            thread.join()
        if drop_metrics:
            for metric in (BATCH_SIZE, QUEUE_SECONDS, BATCH_SECONDS, BATCH_FAILURES):
                metric.remove(self.name)

    def _loop(self, run_batch: BatchFunction) -> None:
        while True:
            parts = self._next_batch()
            if parts is None:
                return
            self._execute(run_batch, parts)

    def _next_batch(self) -> list[tuple[_Request, int, int]] | None:
        """Wait for ``ready_items`` queued items or the oldest request's deadline; None once
        closed and drained.

        With several instances, another one may take the queued requests while this
        one waits for their deadline; it then goes back to waiting for new ones.
        """
        with self._condition:
            self._idle += 1
            try:
                while True:
                    while not self._queue:
                        if self._closed:
                            return None
                        self._condition.wait()
                    while self._queue and not self._closed:
                        if self._queued_items() >= self.ready_items:
                            break
                        left = self._queue[0].arrived + self.max_queue_delay_s - time.perf_counter()
                        if left <= 0:
                            break
                        self._condition.wait(left)
                    if not self._queue:
                        continue
                    parts = self._take(self._share())
                    if self._queue:
                        self._condition.notify()  # a free instance can start on what is left
                    return parts
            finally:
                self._idle -= 1

    def _share(self) -> int:
        """Items the calling idle instance takes: a full batch, or with ``even_shares`` its even
        share of what is queued among the idle instances (the caller counted), no less than
        the preferred batch size."""
        if not self.even_shares:
            return self.max_batch_size
        even = -(-self._queued_items() // self._idle)
        return min(self.max_batch_size, max(even, self.preferred_batch_size or 1))

    def _queued_items(self) -> int:
        return sum(request.remaining for request in self._queue)

    def _take(self, room: int) -> list[tuple[_Request, int, int]]:
        """Pop up to ``room`` rows off the queue as (request, start, stop) parts."""
        parts: list[tuple[_Request, int, int]] = []
        while self._queue and room > 0:
            request = self._queue[0]
            count = min(room, request.remaining)
            parts.append((request, request.taken, request.taken + count))
            request.taken += count
            room -= count
            if request.remaining == 0:
                self._queue.popleft()
        return parts

    def _execute(self, run_batch: BatchFunction, parts: list[tuple[_Request, int, int]]) -> None:
        started = time.perf_counter()
        for request, start, _ in parts:
            if start == 0:
                QUEUE_SECONDS.labels(self.name).observe(started - request.arrived)
        batch = (
            parts[0][0].items[parts[0][1] : parts[0][2]]
            if len(parts) == 1
            else np.concatenate([request.items[start:stop] for request, start, stop in parts])
        )
        try:
            outputs = run_batch(batch)
            if len(outputs) != len(batch):
                raise RuntimeError(
                    f"batch function returned {len(outputs)} rows for {len(batch)} inputs"
                )
        except Exception as error:  # noqa: BLE001 - the error belongs to every request in the batch
            BATCH_FAILURES.labels(self.name).inc()
            for request, _, _ in parts:
                if not request.future.done():
                    request.future.set_exception(error)
            return
        finally:
            BATCH_SECONDS.labels(self.name).observe(time.perf_counter() - started)
        BATCH_SIZE.labels(self.name).observe(len(batch))
        finished: list[_Request] = []
        with self._condition:  # parts of one request may finish on several instances at once
            self._batches += 1
            self._items += len(batch)
            offset = 0
            for request, start, stop in parts:
                request.parts[start] = outputs[offset : offset + stop - start]
                offset += stop - start
                request.done_rows += stop - start
                if request.done_rows == len(request.items) and not request.future.done():
                    finished.append(request)
        for request in finished:
            ordered = [request.parts[key] for key in sorted(request.parts)]
            request.future.set_result(ordered[0] if len(ordered) == 1 else np.concatenate(ordered))
