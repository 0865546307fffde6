"""Faults of a real `labsight up`: its children killed with SIGKILL under a batch, stop and
start at once, `up` itself killed; every process is real and every port is free-picked."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from labsight.catalog import SERVERS
from labsight.client import LabSightClient, build_request
from labsight.images import encode_png
from labsight.redis_server import port_is_free
from labsight.up_lock import RecordedProcess, recorded_processes
from labsight.v1 import gateway_pb2 as pb
from tests.up_support import UpProcess, free_base_port, start_up, stop_up, up_environment

BATCH_JOBS = 300
RECOVERY_TIMEOUT_S = 180
VICTIMS = ["worker-1", "features", "segmentation", "classifier", "gateway", "redis"]
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class Stack:
    """The `up` under test; tests that restart it replace ``up``."""

    def __init__(self, home: Path, base_port: int, env: dict[str, str], output: Path) -> None:
        self.home, self.base_port, self.env, self.output = home, base_port, env, output
        self.up = start_up(home, base_port, env, output)

    def restart(self) -> None:
        """Start a new `up` on the same home and ports."""
        self.up = start_up(self.home, self.base_port, self.env, self.output)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One `up` for the module; a killed worker's job is taken over after 3 s, not 30 s."""
    home = tmp_path_factory.mktemp("labsight-home")
    output = tmp_path_factory.mktemp("up-output") / "up.out"
    running = Stack(home, free_base_port(),
                    up_environment(home, LABSIGHT_CLAIM_IDLE_MS="3000"), output)
    yield running
    stop_up(running.up.process)
    for process in recorded_processes(home).values():  # whatever a failed test left behind
        if process.alive():
            os.kill(process.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Small RGB PNGs: each fractal job (box sides 3-5) is cheap."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(10)
    paths = []
    for index in range(BATCH_JOBS):
        path = folder / f"tile-{index:03d}.png"
        path.write_bytes(encode_png(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)))
        paths.append(path)
    return paths


def _retrying(up: UpProcess, call: str, *args: object) -> object:
    """``LabSightClient.<call>(*args)``, retried on a fresh channel while the gateway or its
    Redis restarts."""
    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    while True:
        with LabSightClient(up.endpoints.gateway, token=up.endpoints.token, timeout_s=10) as client:
            try:
                return getattr(client, call)(*args)
            except grpc.RpcError as error:
                if error.code() not in RETRYABLE or time.monotonic() > deadline:  # type: ignore[attr-defined]
                    raise
        time.sleep(0.5)


def _up_metrics(up: UpProcess) -> str:
    return urllib.request.urlopen(up.endpoints.metrics["up"], timeout=5).read().decode()


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def _wait_until_every_child_is_up(up: UpProcess) -> None:
    """`up` says all is well, and every server answers SERVING to a client of its own."""
    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    while _metric(_up_metrics(up), "labsight_up_healthy") != 1.0:
        assert time.monotonic() < deadline, f"not healthy again:\n{up.output_text()}"
        time.sleep(0.2)
    for name, address in {"gateway": up.endpoints.gateway, **up.endpoints.services}.items():
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=SERVERS[name].grpc_services[0]),
                timeout=30, wait_for_ready=True,
            )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, name


def _gone(process: RecordedProcess, timeout_s: float = 60) -> bool:
    deadline = time.monotonic() + timeout_s
    while process.alive():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.mark.timeout(600)
@pytest.mark.parametrize("victim", VICTIMS)
def test_a_child_killed_under_a_batch_is_restarted_and_every_job_is_done(
    stack: Stack, images: list[Path], victim: str
) -> None:
    up = stack.up
    batch_id = f"faults-{victim}"
    requests = [build_request("fractal", path, {"box_sizes": "3-5"}) for path in images]
    _retrying(up, "submit_batch", requests, batch_id)
    while sum(_retrying(up, "batch", batch_id).counts.values()) < BATCH_JOBS:
        time.sleep(0.05)  # every job accepted
    victim_process = recorded_processes(up.home)[victim]
    while (batch := _retrying(up, "batch", batch_id)).counts.get("done", 0) < 1:
        time.sleep(0.02)
    assert not batch.finished, "the batch ended before the kill"
    os.kill(victim_process.pid, signal.SIGKILL)

    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    while not (batch := _retrying(up, "batch", batch_id)).finished:
        assert time.monotonic() < deadline, f"batch stuck at {dict(batch.counts)}"
        time.sleep(0.5)
    assert dict(batch.counts) == {"done": BATCH_JOBS}

    assert up.process.poll() is None, up.output_text()
    # A service of two processes (the classifier without a GPU) finishes the batch on the other
    # one, maybe before `up` restarted the victim: wait for the new process first.
    while recorded_processes(up.home).get(victim, victim_process) == victim_process:
        assert time.monotonic() < deadline, f"{victim} not restarted:\n{up.output_text()}"
        time.sleep(0.2)
    _wait_until_every_child_is_up(up)
    metrics = _up_metrics(up)
    assert _metric(metrics, f'labsight_up_child_restarts_total{{child="{victim}"}}') >= 1
    assert f"{victim} was killed by SIGKILL; restart" in up.output_text()
    jobs = _retrying(up, "batch_jobs", batch_id)
    assert len(jobs) == BATCH_JOBS
    assert {job.status for job in jobs} == {pb.JOB_STATUS_DONE}


def test_up_does_not_claim_all_is_well_while_redis_does_not_answer(stack: Stack) -> None:
    """A frozen redis-server still runs, so only a probe notices it: `up` must say so."""
    up = stack.up
    redis_process = recorded_processes(up.home)["redis"]
    os.kill(redis_process.pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + RECOVERY_TIMEOUT_S
        while _metric(metrics := _up_metrics(up), "labsight_up_healthy") != 0.0:
            assert time.monotonic() < deadline, "up still says all is well"
            time.sleep(0.2)
        assert _metric(metrics, 'labsight_up_child_up{child="redis"}') == 0.0
    finally:
        os.kill(redis_process.pid, signal.SIGCONT)
    assert "redis is down (no answer to PING" in up.output_text()
    _wait_until_every_child_is_up(up)
    assert recorded_processes(up.home)["redis"] == redis_process  # the same, thawed, not restarted
    assert "redis is up again" in up.output_text()


def test_a_port_whose_server_just_stopped_is_free_but_a_listening_one_is_not() -> None:
    """Like the servers (SO_REUSEADDR), the port check ignores TIME_WAIT connections."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    connection, _ = server.accept()
    assert not port_is_free(port)
    connection.close()  # the server side closes first: its end waits in TIME_WAIT
    server.close()
    assert port_is_free(port)
    client.close()


def test_stop_then_immediate_start_serves_on_the_same_ports(stack: Stack) -> None:
    """Connections of the stopped servers linger in TIME_WAIT; the new `up` is not refused."""
    up = stack.up
    with LabSightClient(up.endpoints.gateway, token=up.endpoints.token) as client:
        client.pipelines()  # an open connection for the gateway to close when it stops
        assert stop_up(up.process) == 0
    started = time.monotonic()
    stack.restart()
    seconds = time.monotonic() - started
    print(f"stop + start: serving again {seconds:.1f} s after the stop")
    assert stack.up.endpoints.gateway == up.endpoints.gateway
    assert [job.name for job in _retrying(stack.up, "pipelines")]


def test_up_killed_by_sigkill_leaves_no_process_and_the_next_up_starts(stack: Stack) -> None:
    """The next `up` starts at once, while the children of the killed one may still be
    stopping: it stops what is left (never two redis-servers on one AOF directory)."""
    up = stack.up
    children = recorded_processes(up.home)
    assert {"redis", *SERVERS, "worker-1"} <= set(children)
    up.process.kill()
    up.process.wait()
    stack.restart()
    left = [name for name, process in children.items() if not _gone(process)]
    assert left == [], f"{left} outlived `up`"
    assert stack.up.endpoints.gateway == up.endpoints.gateway
    _wait_until_every_child_is_up(stack.up)


def test_a_second_up_on_a_live_home_is_refused_naming_its_pid(stack: Stack) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "labsight.cli", "up", "--base-port", str(free_base_port())],
        env=stack.env, capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 1
    assert f"another `labsight up` (pid {stack.up.process.pid})" in run.stderr
    assert stack.up.process.poll() is None
