"""A raw gRPC bytes sink for benchmarks: ``python -m bench.bytes_sink`` serves on $LABSIGHT_PORT.

Generic unary handlers with no (de)serializers, so no protobuf touches the
payload: ``/bench.BytesSink/Put`` takes bytes and answers two bytes,
``/bench.BytesSink/Echo`` answers the bytes it got, ``/bench.BytesSink/Sized``
answers as many bytes as the call's ``answer-bytes`` metadata says (an answer of
another size than the request, as a service's). The server has the
message limits and thread pool a LabSight service has (``Settings``) and
serves ``grpc.health.v1`` so ``bench/service_process.py`` can wait for it.
"""

from __future__ import annotations

from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2_grpc

from labsight.config import Settings
from labsight.runtime.server import stop_on_signals

PUT = "/bench.BytesSink/Put"
ECHO = "/bench.BytesSink/Echo"
SIZED = "/bench.BytesSink/Sized"
ANSWER_BYTES = "answer-bytes"
"""Metadata key of a Sized call: how many bytes to answer."""


def _put(request: bytes, context: grpc.ServicerContext) -> bytes:
    return b"ok"


def _echo(request: bytes, context: grpc.ServicerContext) -> bytes:
    return request


def _sized(request: bytes, context: grpc.ServicerContext) -> bytes:
    wanted = dict(context.invocation_metadata()).get(ANSWER_BYTES, "0")
    return bytes(int(wanted))


def main() -> None:
    """Serve the sink until SIGTERM/SIGINT."""
    stop = stop_on_signals()
    settings = Settings.from_env()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.max_workers),
        options=settings.server_options(),
    )
    handlers = {
        "Put": grpc.unary_unary_rpc_method_handler(_put),
        "Echo": grpc.unary_unary_rpc_method_handler(_echo),
        "Sized": grpc.unary_unary_rpc_method_handler(_sized),
    }
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("bench.BytesSink", handlers)])
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    server.add_insecure_port(f"{settings.host}:{settings.port}")
    server.start()
    stop.wait()
    server.stop(1).wait()


if __name__ == "__main__":
    main()
