"""Change streams for WatchJob / WatchBatch: Redis pub/sub wake-ups plus a slow poll."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

import redis

from labsight.v1 import gateway_pb2 as pb
from services.gateway.jobs import JobRecord, JobStore

State = TypeVar("State")

POLL_INTERVAL_S = 1.0
"""Re-read the state at least this often, in case a pub/sub message was missed."""


def watch_state(
    client: redis.Redis,
    channel: str,
    fetch: Callable[[], State],
    is_finished: Callable[[State], bool],
    is_active: Callable[[], bool],
    fingerprint: Callable[[State], object] = repr,
) -> Iterator[State]:
    """Yield ``fetch()`` now and after every change announced on ``channel`` until finished.

    Subscribes before the first read, so no change between read and
    subscription is lost. Stops when the state is finished or the caller left.
    """
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(channel)
    try:
        state = fetch()
        yield state
        last = fingerprint(state)
        while not is_finished(state) and is_active():
            if pubsub.get_message(timeout=POLL_INTERVAL_S) is not None:
                while pubsub.get_message(timeout=0.0) is not None:
                    pass
            state = fetch()
            current = fingerprint(state)
            if current != last:
                last = current
                yield state
    finally:
        pubsub.close()


def watch_job(
    store: JobStore, job_id: str, is_active: Callable[[], bool]
) -> Iterator[JobRecord]:
    """Every state of a job from now until it ends."""
    return watch_state(
        store.client,
        store.keys.job_events(job_id),
        lambda: store.load(job_id),
        lambda job: job.is_terminal,
        is_active,
        lambda job: tuple(sorted(job.to_hash().items())),
    )


def watch_batch(
    client: redis.Redis,
    channel: str,
    fetch: Callable[[], pb.Batch],
    is_active: Callable[[], bool],
) -> Iterator[pb.Batch]:
    """Every state of a batch's counts from now until all its jobs ended."""
    return watch_state(
        client, channel, fetch, lambda batch: batch.finished, is_active,
        lambda batch: batch.SerializeToString(deterministic=True),
    )
