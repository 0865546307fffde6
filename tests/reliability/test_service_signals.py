"""A model service stops on SIGTERM even when the kernel hands the signal to another thread."""

from __future__ import annotations

import ctypes
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from labsight.redis_server import free_port

SYS_TGKILL = {"x86_64": 234, "aarch64": 131}
"""Linux's tgkill syscall number: a signal for one thread of another process."""


def _serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.skipif(platform.machine() not in SYS_TGKILL, reason="tgkill's number is known for "
                    "x86_64 and aarch64 Linux only")
def test_sigterm_on_a_thread_other_than_the_main_one_stops_the_service(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "LABSIGHT_PORT": str(port), "LABSIGHT_METRICS_PORT": "0",
           "LABSIGHT_LOG_LEVEL": "INFO"}
    log = tmp_path / "classifier.log"
    with log.open("wb") as output:
        process = subprocess.Popen([sys.executable, "-m", "services.classifier"], env=env,
                                   stdout=subprocess.DEVNULL, stderr=output)
    try:
        deadline = time.monotonic() + 120
        while not _serving(f"127.0.0.1:{port}"):
            assert process.poll() is None, log.read_text(errors="replace")[-2000:]
            assert time.monotonic() < deadline, "the classifier service never served"
            time.sleep(0.2)
        threads = [int(tid) for tid in os.listdir(f"/proc/{process.pid}/task") if int(tid) != process.pid]
        assert threads, "the service runs no thread besides its main one"
        libc = ctypes.CDLL(None, use_errno=True)
        for tid in threads:  # every one but the main thread: none of them can run the handler
            libc.syscall(SYS_TGKILL[platform.machine()], process.pid, tid, signal.SIGTERM)
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("still serving 30 s after SIGTERM; its log: "
                        + log.read_text(errors="replace")[-2000:])
        assert code == 0
        assert '"msg": "stopping"' in log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
