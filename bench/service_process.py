"""LabSight processes started for a benchmark: a service returned once it serves, or a worker."""

from __future__ import annotations

import subprocess
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from labsight.redis_server import free_port


def start_process(
    module: str, env: dict[str, str], metrics_port: int | None = None
) -> subprocess.Popen[bytes]:
    """``python -m module`` with its metrics on ``metrics_port`` (default: a free loopback port);
    for workers, which serve no gRPC."""
    port = free_port() if metrics_port is None else metrics_port
    return subprocess.Popen([sys.executable, "-m", module], env={**env, "LABSIGHT_METRICS_PORT": str(port)})


def start_service(
    module: str, env: dict[str, str], timeout_s: float = 180.0, metrics_port: int | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """``python -m module`` on free loopback ports (metrics on ``metrics_port`` if given), once it
    reports SERVING; (process, address)."""
    port = free_port()
    process = start_process(module, {**env, "LABSIGHT_PORT": str(port)}, metrics_port)
    address = f"127.0.0.1:{port}"
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(address))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{module} exited with status {process.returncode} before serving")
        try:
            if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                return process, address
        except grpc.RpcError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"{module} did not start within {timeout_s:.0f} s")


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """Terminate a process started here and wait for it (killed if it outlasts ``timeout_s``)."""
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
