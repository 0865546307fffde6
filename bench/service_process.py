"""A LabSight service started as its own process for a benchmark, returned once it serves."""

from __future__ import annotations

import subprocess
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from labsight.redis_server import free_port


def start_service(
    module: str, env: dict[str, str], timeout_s: float = 180.0
) -> tuple[subprocess.Popen[bytes], str]:
    """``python -m module`` on free loopback ports, once it reports SERVING; (process, address)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", module],
        env={**env, "LABSIGHT_PORT": str(port), "LABSIGHT_METRICS_PORT": str(free_port())},
    )
    address = f"127.0.0.1:{port}"
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(address))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                return process, address
        except grpc.RpcError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"{module} did not start within {timeout_s:.0f} s")
