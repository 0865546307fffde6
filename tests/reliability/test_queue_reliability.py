"""Nothing accepted is lost or finished twice: crashed workers, Redis restarts, services down."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
import redis

from labsight.catalog import FEATURES, GATEWAY
from labsight.client import LabSightClient, build_request
from labsight.config import Settings
from labsight.redis_server import free_port, start_redis, stop_redis
from labsight.runtime.server import RunningServer
from labsight.v1 import gateway_pb2 as pb
from services.features.servicer import register as register_features
from services.gateway.keys import RedisKeys
from services.gateway.queue import build_queue
from services.gateway.servicer import register as register_gateway
from tests.conftest import RunningWorker

from .conftest import WorkerFactory

Serve = Callable[..., RunningServer]
StartWorker = Callable[..., RunningWorker]
TINY = np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)


def _wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _counts(client: LabSightClient, batch_id: str) -> dict[str, int]:
    """The batch's counts; empty while the gateway cannot reach Redis (UNAVAILABLE)."""
    try:
        return dict(client.batch(batch_id).counts)
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.UNAVAILABLE:
            raise
        return {}


def _finished(client: LabSightClient, batch_id: str) -> bool:
    counts = _counts(client, batch_id)
    return bool(counts) and not counts.get("queued") and not counts.get("running")


def _services(serve: Serve, settings: Settings) -> tuple[RunningServer, LabSightClient]:
    features = serve(register_features, FEATURES.grpc_services, settings)
    settings.service_addresses = {
        "features": features.address, "segmentation": "127.0.0.1:1", "classifier": "127.0.0.1:1",
    }
    gateway = serve(register_gateway, GATEWAY.grpc_services, settings)
    return features, LabSightClient(gateway.address, token="")


def test_killed_worker_jobs_are_reclaimed(
    serve: Serve, settings: Settings, worker_process: WorkerFactory, redis_client: redis.Redis
) -> None:
    settings.claim_idle_ms = 2000
    _, client = _services(serve, settings)
    requests = [build_request("fractal", TINY, {"box_sizes": "3"}) for _ in range(1000)]
    batch = client.submit_batch(requests, batch_id="kill-9")
    assert len(batch.job_ids) == 1000

    doomed = worker_process()
    _wait_for(lambda: _counts(client, "kill-9").get("done", 0) >= 100, 120, "first results")
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    worker_process()
    _wait_for(lambda: _finished(client, "kill-9"), 300, "the batch to finish")

    counts = _counts(client, "kill-9")
    assert counts == {"done": 1000}, counts  # one done transition per job, nothing else
    keys = RedisKeys(settings.key_prefix)
    with redis_client.pipeline() as pipe:
        for job_id in batch.job_ids:
            pipe.exists(keys.job_result(job_id))
        assert sum(pipe.execute()) == 1000
    assert redis_client.xlen(keys.dead_letters()) == 0
    assert int(redis_client.get(keys.depth())) == 0


def test_redis_restart_mid_batch_loses_no_accepted_job(
    serve: Serve, settings: Settings, worker_process: WorkerFactory, tmp_path: Path
) -> None:
    port = free_port()
    process, url = start_redis(tmp_path / "redis", port=port)
    try:
        settings.redis_url = url
        settings.claim_idle_ms = 2000
        _, client = _services(serve, settings)
        batch = client.submit_batch(
            [build_request("fractal", TINY, {"box_sizes": "3"}) for _ in range(300)],
            batch_id="restart",
        )
        worker_process()
        _wait_for(lambda: _counts(client, "restart").get("done", 0) >= 30, 120, "first results")
        stop_redis(process, url)
        process, url = start_redis(tmp_path / "redis", port=port)
        _wait_for(lambda: _finished(client, "restart"), 300, "the batch after the restart")
        assert _counts(client, "restart") == {"done": 300}
        assert len(batch.job_ids) == 300
    finally:
        stop_redis(process, url)


def test_model_service_down_retries_then_succeeds_when_it_returns(
    serve: Serve, settings: Settings, worker_thread: StartWorker
) -> None:
    settings.retry_base_s = 0.2
    settings.max_attempts = 20
    settings.service_wait_s = 0.2  # each attempt waits this long for the service, then counts
    features_port = free_port()
    settings.service_addresses = {
        "features": f"127.0.0.1:{features_port}",
        "segmentation": "127.0.0.1:1",
        "classifier": "127.0.0.1:1",
    }
    gateway = serve(register_gateway, GATEWAY.grpc_services, settings)
    client = LabSightClient(gateway.address, token="")
    running = worker_thread("retrying")
    job = client.submit("fractal", TINY, {"box_sizes": "3"})
    _wait_for(lambda: client.get(job.job_id).attempts >= 2, 30, "failed attempts")
    failing = client.get(job.job_id)
    assert failing.status in (pb.JOB_STATUS_QUEUED, pb.JOB_STATUS_RUNNING)
    assert "UNAVAILABLE" in failing.error
    serve(register_features, FEATURES.grpc_services,
          Settings(**{**vars(settings), "port": features_port}))
    final = client.wait(job.job_id, 60)
    assert final.status == pb.JOB_STATUS_DONE and final.error == ""
    assert running.thread.is_alive()


def test_model_service_that_never_returns_makes_the_job_dead(
    serve: Serve, settings: Settings, redis_client: redis.Redis, worker_thread: StartWorker
) -> None:
    settings.retry_base_s = 0.05
    settings.max_attempts = 3
    settings.service_wait_s = 0.1  # each attempt waits this long for the service, then counts
    settings.service_addresses = {
        "features": f"127.0.0.1:{free_port()}", "segmentation": "127.0.0.1:1",
        "classifier": "127.0.0.1:1",
    }
    gateway = serve(register_gateway, GATEWAY.grpc_services, settings)
    client = LabSightClient(gateway.address, token="")
    running = worker_thread("doomed")
    job = client.submit("fractal", TINY, {"box_sizes": "3"})
    final = client.wait(job.job_id, 60)
    assert final.status == pb.JOB_STATUS_DEAD
    assert final.attempts == 3 and "UNAVAILABLE" in final.error
    dead = redis_client.xrange(RedisKeys(settings.key_prefix).dead_letters())
    assert [fields[b"job_id"].decode() for _, fields in dead] == [job.job_id]
    assert b"UNAVAILABLE" in dead[0][1][b"error"]
    assert running.thread.is_alive()
    later = client.submit("fractal", TINY, {"box_sizes": "3"})
    _wait_for(lambda: client.get(later.job_id).attempts >= 1, 10, "the next job's attempt")


def _resident_bytes() -> int:
    """Resident memory of this process (which hosts the gateway under test)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_full_queue_keeps_redis_and_gateway_memory_bounded(
    serve: Serve, settings: Settings, private_redis: tuple[str, redis.Redis]
) -> None:
    settings.redis_url, redis_client = private_redis  # its memory is this test's alone
    settings.max_queue_depth = 200
    _, client = _services(serve, settings)
    client.submit_batch([build_request("fractal", TINY, {"box_sizes": "3"}) for _ in range(200)])
    used_at_limit = redis_client.info("memory")["used_memory"]
    resident_at_limit = _resident_bytes()
    rejected = 0
    for _ in range(200):
        try:
            client.submit("fractal", np.zeros((256, 256, 3), np.uint8), {"box_sizes": "3"})
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "queue is full: 200 jobs" in error.details()
            rejected += 1
    assert rejected == 200
    grown = redis_client.info("memory")["used_memory"] - used_at_limit
    assert grown < 256 * 1024, f"Redis grew by {grown} bytes while refusing jobs"
    # 200 refused 196 kB images (39 MB): the gateway keeps none of them
    gateway_grown = _resident_bytes() - resident_at_limit
    assert gateway_grown < 8 * 1024 * 1024, f"gateway grew by {gateway_grown} bytes"


@pytest.mark.parametrize("burst", [4])
def test_high_priority_first_but_normal_never_starved(
    serve: Serve, settings: Settings, worker_thread: StartWorker, burst: int
) -> None:
    _, client = _services(serve, settings)
    normal = [client.submit("fractal", TINY, {"box_sizes": "3"}).job_id for _ in range(3)]
    high = [
        client.submit("fractal", TINY, {"box_sizes": "3"}, priority="high").job_id
        for _ in range(20)
    ]
    worker_thread("fair", high_burst=burst)
    for job_id in normal + high:
        assert client.wait(job_id, 60).status == pb.JOB_STATUS_DONE
    order = sorted(normal + high, key=lambda job_id: client.get(job_id).started_at.ToNanoseconds())
    assert order[:burst] == high[:burst]  # high first ...
    first_normal = order.index(normal[0])
    assert first_normal <= burst  # ... but a normal job runs after at most `burst` high ones
    assert order.index(normal[-1]) < order.index(high[-1])


def test_stale_jobs_are_taken_over_only_into_free_slots(
    serve: Serve, settings: Settings, worker_thread: StartWorker
) -> None:
    """A worker takes over no more stale jobs than it has free slots: one taken and left
    waiting would go stale again, untouched, and a second worker would run it too."""
    settings.claim_idle_ms = 600
    # Nothing listens there: each started job waits in its slot for the service, holding it.
    settings.service_addresses = {
        "features": "127.0.0.1:1", "segmentation": "127.0.0.1:1", "classifier": "127.0.0.1:1",
    }
    gateway = serve(register_gateway, GATEWAY.grpc_services, settings)
    client = LabSightClient(gateway.address, token="")
    batch = client.submit_batch(
        [build_request("fractal", TINY, {"box_sizes": "3"}) for _ in range(6)], batch_id="stale"
    )
    ghost = build_queue(settings)
    ghost.ensure_groups()
    assert len(ghost.claim("a-worker-that-died", "normal", 6)) == 6  # claimed, never started
    time.sleep(settings.claim_idle_ms / 1000)

    worker_thread(concurrency=2)

    def started() -> list[int]:
        return [client.get(job_id).attempts for job_id in batch.job_ids]

    _wait_for(lambda: sum(started()) >= 2, 60, "two jobs taken over")
    time.sleep(3 * settings.claim_idle_ms / 1000)  # the rest are stale again by now, if held
    assert sorted(started()) == [0, 0, 0, 0, 1, 1]
    assert _counts(client, "stale") == {"queued": 4, "running": 2}
    client.close()
