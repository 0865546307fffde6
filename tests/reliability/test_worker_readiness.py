"""Workers wait for a model service that restarts instead of burning the job's attempts,
carry on after their Redis restarted, and a hand-started one follows `up` to its new Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from labsight.catalog import FEATURES, GATEWAY
from labsight.client import LabSightClient, build_request
from labsight.config import Settings
from labsight.home import Endpoints, write_endpoints
from labsight.redis_server import free_port, start_redis, stop_redis
from labsight.runtime.server import RunningServer
from services.features.servicer import register as register_features
from services.gateway.servicer import register as register_gateway

from .conftest import WorkerFactory, worker_warnings

Serve = Callable[..., RunningServer]
TINY = np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)
JOBS = 80


def _wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=FEATURES.grpc_services[0]), timeout=1
            )
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.fixture
def features_process(tmp_path: Path) -> Iterator[Callable[[int], subprocess.Popen[bytes]]]:
    """Start real features services (``python -m services.features``) on given ports, each
    logging to ``tmp_path/features-<n>.log`` (start, serving, stopping); returns once each
    reports SERVING; all are stopped after the test."""
    started: list[subprocess.Popen[bytes]] = []

    def start(port: int) -> subprocess.Popen[bytes]:
        env = {**os.environ, "LABSIGHT_PORT": str(port), "LABSIGHT_METRICS_PORT": "0",
               "LABSIGHT_LOG_LEVEL": "INFO"}
        with (tmp_path / f"features-{len(started)}.log").open("wb") as log_file:
            process = subprocess.Popen([sys.executable, "-m", "services.features"], env=env,
                                       stdout=subprocess.DEVNULL, stderr=log_file)
        started.append(process)
        _wait_for(lambda: process.poll() is not None or _serving(f"127.0.0.1:{port}"), 120,
                  "the features service to serve")
        assert process.poll() is None, "the features service exited"
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def _counts(client: LabSightClient, batch_id: str) -> dict[str, int]:
    return dict(client.batch(batch_id).counts)


def _finished(client: LabSightClient, batch_id: str) -> bool:
    counts = _counts(client, batch_id)
    return not counts.get("queued") and not counts.get("running")


def test_restarted_model_service_costs_no_attempts(
    serve: Serve, settings: Settings, worker_process: WorkerFactory,
    features_process: Callable[[int], subprocess.Popen[bytes]], tmp_path: Path,
) -> None:
    # Few attempts in quick succession: without waiting for the service, a restart kills jobs.
    settings.max_attempts = 3
    settings.retry_base_s = 0.2
    # The wait must keep the claims alive well past this. Their heartbeat comes every third
    # of it, so only a heartbeat late by two thirds (2.7 s; with 2 s a loaded machine's 1.3 s
    # stall sufficed) lets the other worker take a job over.
    settings.claim_idle_ms = 4000
    port = free_port()
    settings.service_addresses = {
        "features": f"127.0.0.1:{port}", "segmentation": "127.0.0.1:1", "classifier": "127.0.0.1:1",
    }
    features = features_process(port)
    gateway = serve(register_gateway, GATEWAY.grpc_services, settings)
    client = LabSightClient(gateway.address, token="")
    batch = client.submit_batch(
        [build_request("fractal", TINY, {"box_sizes": "3"}) for _ in range(JOBS)], batch_id="svc"
    )
    worker_process()
    worker_process()
    _wait_for(lambda: _counts(client, "svc").get("done", 0) >= 10, 120, "first results")

    features.send_signal(signal.SIGTERM)  # a graceful stop, as `up` or Kubernetes would
    try:
        features.wait(timeout=60)
    except subprocess.TimeoutExpired:  # its grace is 10 s: say what it logged meanwhile
        pytest.fail("the features service was still running 60 s after SIGTERM; its log: "
                    + (tmp_path / "features-0.log").read_text(errors="replace")[-3000:])
    time.sleep(1.5 * settings.claim_idle_ms / 1000)  # down for longer than a claim lasts idle
    features_process(port)  # the same service comes back on the same port
    _wait_for(lambda: _finished(client, "svc"), 300, "the batch to finish")

    assert _counts(client, "svc") == {"done": JOBS}
    attempts = [client.get(job_id).attempts for job_id in batch.job_ids]
    # Waiting is not an attempt; the workers' warnings say where a second one came from.
    second_attempts = worker_warnings(tmp_path, "retrying") + worker_warnings(tmp_path, "took over")
    assert max(attempts) == 1, (sorted(attempts)[-5:], second_attempts)
    client.close()


def test_worker_carries_on_after_its_redis_restarts(
    serve: Serve, settings: Settings, worker_process: WorkerFactory,
    features_process: Callable[[int], subprocess.Popen[bytes]], tmp_path: Path,
) -> None:
    port = free_port()
    process, url = start_redis(tmp_path / "redis", port=port)
    try:
        settings.redis_url = url
        features_port = free_port()
        features_process(features_port)
        settings.service_addresses = {
            "features": f"127.0.0.1:{features_port}", "segmentation": "127.0.0.1:1",
            "classifier": "127.0.0.1:1",
        }
        gateway = serve(register_gateway, GATEWAY.grpc_services, settings)
        client = LabSightClient(gateway.address, token="")
        requests = [build_request("fractal", TINY, {"box_sizes": "3"}) for _ in range(JOBS)]
        client.submit_batch(requests, batch_id="before")
        worker = worker_process()
        _wait_for(lambda: _counts(client, "before").get("done", 0) >= 10, 120, "first results")

        stop_redis(process, url)
        process, url = start_redis(tmp_path / "redis", port=port)
        # Jobs accepted before and after the restart all end done, by the same worker.
        _wait_for(lambda: _answers(client, "before") and _finished(client, "before"), 300,
                  "the batch after the restart")
        client.submit_batch(requests[:10], batch_id="after")
        _wait_for(lambda: _finished(client, "after"), 120, "the batch submitted after the restart")
        assert _counts(client, "before") == {"done": JOBS}
        assert _counts(client, "after") == {"done": 10}
        assert worker.poll() is None
        client.close()
    finally:
        stop_redis(process, url)


def _answers(client: LabSightClient, batch_id: str) -> bool:
    """True once the gateway answers again (UNAVAILABLE while it cannot reach Redis)."""
    try:
        client.batch(batch_id)
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.UNAVAILABLE:
            raise
        return False
    except redis.RedisError:
        return False
    return True


def test_hand_started_worker_follows_up_to_its_new_redis(
    serve: Serve, settings: Settings, tmp_path: Path
) -> None:
    """`up` stopped and started again brings Redis back (same AOF) on another port;
    a `labsight worker` started by hand against the first one finishes the jobs."""
    home, data = tmp_path / "home", tmp_path / "home" / "redis"
    features = serve(register_features, FEATURES.grpc_services, settings)
    services = {"features": features.address, "segmentation": "127.0.0.1:1",
                "classifier": "127.0.0.1:1"}
    settings.service_addresses = services

    def record(url: str) -> None:
        write_endpoints(Endpoints(redis_url=url, key_prefix=settings.key_prefix,
                                  gateway="127.0.0.1:1", services=services, pid=os.getpid()), home)

    process, url = start_redis(data)
    record(url)
    settings.redis_url = url
    client = LabSightClient(serve(register_gateway, GATEWAY.grpc_services, settings).address,
                            token="")
    client.submit_batch([build_request("fractal", TINY, {"box_sizes": "3"}) for _ in range(JOBS)],
                        batch_id="moved")
    env = {**os.environ, "LABSIGHT_HOME": str(home), "LABSIGHT_METRICS_PORT": "0",
           "LABSIGHT_CLAIM_IDLE_MS": "2000", "LABSIGHT_LOG_LEVEL": "WARNING"}
    for name in ("REDIS_URL", "LABSIGHT_KEY_PREFIX", "LABSIGHT_FEATURES_ADDR"):
        env.pop(name, None)
    worker = subprocess.Popen([sys.executable, "-m", "labsight.cli", "worker"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: _counts(client, "moved").get("done", 0) >= 10, 120, "first results")
        stop_redis(process, url)
        process, url = start_redis(data)  # a free port: not the one the worker knows
        record(url)
        settings.redis_url = url
        client = LabSightClient(serve(register_gateway, GATEWAY.grpc_services, settings).address,
                                token="")
        _wait_for(lambda: _finished(client, "moved"), 300, "the batch on the new Redis")
        assert _counts(client, "moved") == {"done": JOBS}
        assert worker.poll() is None
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
        stop_redis(process, url)
