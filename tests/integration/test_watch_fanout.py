"""Watch streams share one Redis pub/sub connection, the SDK's wait() survives a broken one, and
a watch or following stream ends as soon as its caller leaves (its slot comes back at once)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import redis

from labsight.catalog import GATEWAY
from labsight.client import LabSightClient
from labsight.config import Settings
from labsight.redis_server import free_port, start_redis, stop_redis
from labsight.runtime.server import RunningServer
from labsight.v1 import gateway_pb2 as pb
from labsight.v1 import gateway_pb2_grpc as pb_grpc
from services.gateway import watch
from services.gateway.batch_results import followed_result_messages
from services.gateway.jobs import JobStore
from services.gateway.keys import RedisKeys
from services.gateway.servicer import register as register_gateway

Serve = Callable[..., RunningServer]
TINY = np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)
STREAMS = 150
THREADS = 200
"""Handler threads of the gateway: its watch cap (175) lets all STREAMS in."""


def _wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _subscriber_connections(client: redis.Redis) -> list[int]:
    """Channel counts of the connections subscribed to pub/sub channels."""
    return [int(entry["sub"]) for entry in client.client_list() if int(entry["sub"])]


def test_many_watch_streams_share_one_redis_connection(
    serve: Serve, settings: Settings, private_redis: tuple[str, redis.Redis]
) -> None:
    settings.redis_url, observer = private_redis
    settings.max_workers = THREADS
    gateway = serve(register_gateway, GATEWAY.grpc_services, settings)
    client = LabSightClient(gateway.address, token="")
    job_ids = [client.submit("fractal", TINY, {"box_sizes": "3"}).job_id for _ in range(STREAMS)]

    seen: dict[str, list[int]] = {job_id: [] for job_id in job_ids}
    failures: list[grpc.RpcError] = []

    def watch(job_id: str) -> None:
        try:
            for event in client.stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=120):
                seen[job_id].append(event.job.status)
        except grpc.RpcError as error:
            failures.append(error)

    watchers = [threading.Thread(target=watch, args=(job_id,)) for job_id in job_ids]
    for thread in watchers:
        thread.start()
    _wait_for(lambda: all(seen.values()) or bool(failures), 60, "every stream's first event")
    assert not failures, failures[0]

    # Every stream is open: one connection carries all their channels, and the
    # gateway's connections stay within its pool (one per handler thread, and a few).
    assert _subscriber_connections(observer) == [STREAMS]
    connections = len(observer.client_list())
    print(f"{STREAMS} open watch streams: {connections} Redis connections in all, 1 subscribed")
    assert connections <= THREADS + 16

    # Ordinary calls still get through while the streams are open.
    for _ in range(20):
        job = client.submit("fractal", TINY, {"box_sizes": "3"})
        assert client.get(job.job_id).status == pb.JOB_STATUS_QUEUED

    for job_id in job_ids:
        client.cancel(job_id)
    for thread in watchers:
        thread.join(timeout=60)
    assert not failures, failures[0]
    assert all(states[0] == pb.JOB_STATUS_QUEUED for states in seen.values())
    assert all(states[-1] == pb.JOB_STATUS_CANCELLED for states in seen.values())
    _wait_for(lambda: not _subscriber_connections(observer), 30, "the channels to be released")
    client.close()


def test_wait_polls_when_the_watch_stream_breaks(
    serve: Serve, settings: Settings, redis_client: redis.Redis
) -> None:
    settings.port = free_port()
    first = serve(register_gateway, GATEWAY.grpc_services, settings)
    client = LabSightClient(first.address, token="")
    job = client.submit("fractal", TINY, {"box_sizes": "3"})
    outcome: list[pb.Job | BaseException] = []

    def wait() -> None:
        try:
            outcome.append(client.wait(job.job_id, timeout_s=120))
        except BaseException as error:  # noqa: BLE001 - the test reports it
            outcome.append(error)

    waiter = threading.Thread(target=wait)
    waiter.start()
    channel = RedisKeys(settings.key_prefix).job_events(job.job_id)
    _wait_for(lambda: redis_client.pubsub_numsub(channel)[0][1] == 1, 30, "the watch stream")

    first.stop(0)  # the stream breaks mid-way; the gateway is gone for a while
    _wait_for(lambda: redis_client.pubsub_numsub(channel)[0][1] == 0, 30, "the stream to end")
    second = serve(register_gateway, GATEWAY.grpc_services, settings)
    with grpc.insecure_channel(second.address) as channel_to_second:
        pb_grpc.GatewayServiceStub(channel_to_second).CancelJob(
            pb.CancelJobRequest(job_id=job.job_id), timeout=10
        )
    waiter.join(timeout=60)
    assert outcome and isinstance(outcome[0], pb.Job), outcome
    assert outcome[0].status == pb.JOB_STATUS_CANCELLED
    client.close()


def test_watch_streams_subscribe_again_after_redis_restarts(
    serve: Serve, settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    process, url = start_redis(tmp_path / "redis", port=port)
    try:
        settings.redis_url = url
        gateway = serve(register_gateway, GATEWAY.grpc_services, settings)
        client = LabSightClient(gateway.address, token="")
        keys = RedisKeys(settings.key_prefix)
        before = client.submit("fractal", TINY, {"box_sizes": "3"})
        assert [job.status for job in _watch_until_cancelled(client, before.job_id, url, keys)] \
            == [pb.JOB_STATUS_QUEUED, pb.JOB_STATUS_CANCELLED]

        # A stream open while Redis goes away ends; its channel must not stay subscribed.
        during = client.submit("fractal", TINY, {"box_sizes": "3"})
        broken: list[grpc.RpcError] = []
        watcher = threading.Thread(target=_watch_expecting_error, args=(client, during, broken))
        watcher.start()
        observer = redis.Redis.from_url(url)
        channel = keys.job_events(during.job_id)
        _wait_for(lambda: observer.pubsub_numsub(channel)[0][1] == 1, 30, "the stream")
        observer.close()
        stop_redis(process, url)
        watcher.join(timeout=120)
        assert broken and broken[0].code() == grpc.StatusCode.UNAVAILABLE
        process, url = start_redis(tmp_path / "redis", port=port)
        _wait_for(lambda: _answers(client), 60, "the gateway to reach Redis again")

        after = client.submit("fractal", TINY, {"box_sizes": "3"})
        assert [job.status for job in _watch_until_cancelled(client, after.job_id, url, keys)] \
            == [pb.JOB_STATUS_QUEUED, pb.JOB_STATUS_CANCELLED]
        observer = redis.Redis.from_url(url)
        assert observer.pubsub_numsub(channel)[0][1] == 0
        observer.close()
        client.close()
    finally:
        stop_redis(process, url)


def _watch_expecting_error(
    client: LabSightClient, job: pb.Job, errors: list[grpc.RpcError]
) -> None:
    try:
        for _ in client.watch(job.job_id, 120):
            pass
    except grpc.RpcError as error:
        errors.append(error)


def _answers(client: LabSightClient) -> bool:
    try:
        client.pipelines()
        client.list_jobs(page_size=1)
    except grpc.RpcError:
        return False
    return True


def _watch_until_cancelled(
    client: LabSightClient, job_id: str, url: str, keys: RedisKeys
) -> list[pb.Job]:
    """The job's states while it is watched: once the stream has sent the first state
    (its channel is subscribed by then), the job is cancelled."""
    states: list[pb.Job] = []

    def watch() -> None:
        for job in client.watch(job_id, 60):
            states.append(job)

    watcher = threading.Thread(target=watch)
    watcher.start()
    _wait_for(lambda: bool(states), 30, "the stream's first state")
    observer = redis.Redis.from_url(url)
    assert observer.pubsub_numsub(keys.job_events(job_id))[0][1] == 1
    observer.close()
    client.cancel(job_id)
    watcher.join(timeout=60)
    return states


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


def test_a_stream_subscribed_to_some_messages_wakes_on_those_only(
    fanout: watch.EventFanout, redis_url: str, key_prefix: str
) -> None:
    """A following results stream wakes when a job ends, not when one starts or is queued
    again; another stream on the same channel still wakes on every message."""
    client = redis.Redis.from_url(redis_url)
    channel = f"{key_prefix}:events:batch:plate"
    with fanout.subscribe(channel, ("done", "failed")) as ended, fanout.subscribe(channel) as every:
        client.publish(channel, "running")
        assert every.wait(10)  # the reader handled the message, for both streams at once
        assert not ended.is_set()
        every.clear()
        client.publish(channel, "failed")
        assert ended.wait(10) and every.wait(10)
    client.close()
