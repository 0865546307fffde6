"""The gateway's grpc.health.v1 status follows its Redis: NOT_SERVING while Redis is gone
(the GatewayService, its readiness; the overall status, its liveness, stays SERVING)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from labsight.catalog import GATEWAY
from labsight.config import Settings
from labsight.redis_server import free_port, start_redis, stop_redis
from labsight.runtime.server import RunningServer
from services.gateway.servicer import register as register_gateway

Serve = Callable[..., RunningServer]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _status(stub: health_pb2_grpc.HealthStub, service: str) -> int:
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def _wait_for_status(
    stub: health_pb2_grpc.HealthStub, wanted: int, timeout_s: float
) -> float:
    """Seconds until the GatewayService's health is ``wanted`` (the overall one never moves)."""
    started = time.monotonic()
    while _status(stub, GATEWAY.grpc_services[0]) != wanted:
        assert _status(stub, "") == SERVING
        assert time.monotonic() - started < timeout_s, f"health never became {wanted}"
        time.sleep(0.1)
    return time.monotonic() - started


def test_gateway_health_follows_redis(serve: Serve, settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    process, url = start_redis(tmp_path / "redis", port=port)
    try:
        settings.redis_url = url
        gateway = serve(register_gateway, GATEWAY.grpc_services, settings)
        with grpc.insecure_channel(gateway.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            assert _status(health, GATEWAY.grpc_services[0]) == SERVING

            process.kill()  # as a crash would: no shutdown, no AOF flush beyond everysec
            process.wait()
            down_s = _wait_for_status(health, NOT_SERVING, 30)

            process, url = start_redis(tmp_path / "redis", port=port)
            up_s = _wait_for_status(health, SERVING, 30)
        print(f"NOT_SERVING {down_s:.1f} s after the kill, SERVING {up_s:.1f} s after the restart")
    finally:
        stop_redis(process, url)
