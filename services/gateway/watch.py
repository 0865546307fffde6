"""Change streams for WatchJob / WatchBatch: shared Redis pub/sub wake-ups plus a slow poll."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator
from typing import Protocol, TypeVar

import redis

from labsight.v1 import gateway_pb2 as pb
from services.gateway.jobs import JobRecord, JobStore

log = logging.getLogger(__name__)

State = TypeVar("State")

POLL_INTERVAL_S = 1.0
"""Re-read the state at least this often, in case a pub/sub message was missed."""
READ_TIMEOUT_S = 1.0
"""How long the fan-out reader waits for a message before it looks at its subscribers again."""
RECONNECT_PAUSE_S = 1.0
"""Pause of the fan-out reader after Redis failed, before it reads (and reconnects) again."""


class EventFanout:
    """One Redis pub/sub connection shared by every watch stream of a process.

    A stream subscribes to its channel here instead of opening a connection of
    its own, so the number of open streams costs no Redis connections. A reader
    thread (running while any stream is open) receives every message and wakes
    the streams of its channel; redis-py subscribes the connection again after
    a reconnect.
    """

    def __init__(self, client: redis.Redis) -> None:
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        self._lock = threading.Lock()
        self._listeners: dict[str, dict[threading.Event, frozenset[bytes] | None]] = {}
        """Per channel, each stream's wake-up and the messages that set it (None: every one)."""
        self._unsubscribe_later: set[str] = set()
        self._reader: threading.Thread | None = None

    @contextlib.contextmanager
    def subscribe(self, channel: str, wakes_on: Collection[str] | None = None
                  ) -> Iterator[threading.Event]:
        """An event that is set on every message on ``channel`` while the context is open, or
        only on those whose data is one of ``wakes_on``."""
        woken = threading.Event()
        wanted = None if wakes_on is None else frozenset(data.encode() for data in wakes_on)
        with self._lock:
            if channel not in self._listeners:
                self._pubsub.subscribe(channel)
                self._listeners[channel] = {}
            self._listeners[channel][woken] = wanted
            if self._reader is None:
                self._reader = threading.Thread(target=self._read, name="watch-fanout", daemon=True)
                self._reader.start()
        try:
            yield woken
        finally:
            with self._lock:
                listeners = self._listeners[channel]
                listeners.pop(woken, None)
                if not listeners:
                    del self._listeners[channel]
                    self._unsubscribe_later.add(channel)
                    self._unsubscribe_idle()

    def _unsubscribe_idle(self) -> None:
        """Unsubscribe channels nobody watches any more (under the lock); those Redis
        could not be told about (it was down) are tried again by the reader."""
        idle = self._unsubscribe_later - set(self._listeners)
        self._unsubscribe_later.clear()
        if idle:
            try:
                self._pubsub.unsubscribe(*idle)
            except redis.RedisError:
                self._unsubscribe_later.update(idle)

    def _read(self) -> None:
        while True:
            with self._lock:
                self._unsubscribe_idle()
                if not self._listeners:
                    self._reader = None  # the next subscription starts a new reader
                    return
            try:
                message = self._pubsub.get_message(timeout=READ_TIMEOUT_S)
            except redis.RedisError as error:
                # The streams keep polling meanwhile; their fetches report Redis as down.
                log.warning("watch fan-out lost Redis; reconnecting", extra={"error": str(error)})
                time.sleep(RECONNECT_PAUSE_S)
                continue
            if message is None or message["type"] != "message":
                continue
            channel, data = message["channel"].decode(), message["data"]
            with self._lock:
                for woken, wanted in self._listeners.get(channel, {}).items():
                    if wanted is None or data in wanted:
                        woken.set()


class Caller(Protocol):
    """The call a stream answers (a ``grpc.ServicerContext``): whether its caller is still
    there, and a callback for when the call ends."""

    def is_active(self) -> bool:
        """False once the caller left or the call ended."""

    def add_callback(self, callback: Callable[[], None]) -> bool:
        """Run ``callback`` when the call ends."""


def watch_state(
    events: EventFanout,
    channel: str,
    fetch: Callable[[], State],
    is_finished: Callable[[State], bool],
    caller: Caller,
    fingerprint: Callable[[State], object] = repr,
) -> Iterator[State]:
    """Yield ``fetch()`` now and after every change announced on ``channel`` until finished.

    Subscribes before the first read, so no change between read and
    subscription is lost. Stops when the state is finished or the caller left (the
    call's end wakes the wait, so the stream's slot is free at once).
    """
    with events.subscribe(channel) as changed:
        caller.add_callback(changed.set)
        state = fetch()
        yield state
        last = fingerprint(state)
        while not is_finished(state) and caller.is_active():
            changed.wait(POLL_INTERVAL_S)
            changed.clear()  # before the read, so a change during the read wakes us again
            state = fetch()
            current = fingerprint(state)
            if current != last:
                last = current
                yield state


def watch_job(
    events: EventFanout, store: JobStore, job_id: str, caller: Caller
) -> Iterator[JobRecord]:
    """Every state of a job from now until it ends."""
    return watch_state(
        events,
        store.keys.job_events(job_id),
        lambda: store.load(job_id),
        lambda job: job.is_terminal,
        caller,
        lambda job: tuple(sorted(job.to_hash().items())),
    )


def watch_batch(
    events: EventFanout,
    channel: str,
    fetch: Callable[[], pb.Batch],
    caller: Caller,
) -> Iterator[pb.Batch]:
    """Every state of a batch's counts from now until all its jobs ended."""
    return watch_state(
        events, channel, fetch, lambda batch: batch.finished, caller,
        lambda batch: batch.SerializeToString(deterministic=True),
    )
