"""Watch and following streams end as soon as their caller leaves, not at their next poll:
the gateway's watch slots come back at once (real Redis pub/sub fan-out)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
import redis

from labsight.v1 import gateway_pb2 as pb
from services.gateway import watch
from services.gateway.batch_results import followed_result_messages
from services.gateway.jobs import JobStore
from services.gateway.keys import RedisKeys


class LeavingCaller:
    """A call whose caller leaves when told: ``is_active`` turns false and the call's end
    callbacks run, as gRPC runs them."""

    def __init__(self) -> None:
        self.active = True
        self.callbacks: list[Callable[[], None]] = []

    def is_active(self) -> bool:
        return self.active

    def add_callback(self, callback: Callable[[], None]) -> bool:
        self.callbacks.append(callback)
        return True

    def leave(self) -> None:
        self.active = False
        for callback in self.callbacks:
            callback()


def _ends_when_the_caller_leaves(stream: Iterator[object], caller: LeavingCaller) -> bool:
    """Whether ``stream``, waiting for a change, ends once ``caller`` leaves (the poll is an
    hour away, so only the call's end can wake it within the minute given)."""
    ended = threading.Event()

    def drain() -> None:
        for _ in stream:
            pass
        ended.set()

    threading.Thread(target=drain, daemon=True).start()
    for _ in range(6000):  # until the stream subscribed and registered its wake-up
        if caller.callbacks:
            break
        threading.Event().wait(0.01)
    caller.leave()
    return ended.wait(60)


@pytest.fixture
def fanout(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[watch.EventFanout]:
    monkeypatch.setattr(watch, "POLL_INTERVAL_S", 3600.0)
    client = redis.Redis.from_url(redis_url)
    yield watch.EventFanout(client)
    client.close()


def test_a_watch_ends_as_soon_as_its_caller_leaves(
    fanout: watch.EventFanout, key_prefix: str
) -> None:
    caller = LeavingCaller()
    stream = watch.watch_batch(fanout, f"{key_prefix}:events:batch", lambda: pb.Batch(total=1),
                               caller)
    assert _ends_when_the_caller_leaves(stream, caller)


def test_a_following_results_stream_ends_as_soon_as_its_caller_leaves(
    fanout: watch.EventFanout, redis_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("services.gateway.batch_results.POLL_INTERVAL_S", 3600.0)
    client = redis.Redis.from_url(redis_url)
    keys = RedisKeys(key_prefix)
    client.rpush(keys.batch_jobs("default", "plate"), "job-1")
    client.hset(keys.job("job-1"), mapping={"job_id": "job-1", "tenant": "default",
                                            "pipeline": "fractal", "status": "running"})
    caller = LeavingCaller()
    with fanout.subscribe(keys.batch_events("default", "plate")) as changed:
        stream = followed_result_messages(client, JobStore(client, keys), keys, "default", "plate",
                                          1 << 20, changed, lambda: False, caller)
        assert _ends_when_the_caller_leaves(stream, caller)
    client.close()
