"""Server interceptor: maps exceptions to gRPC status codes and records RPC metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from prometheus_client import Counter, Histogram

from labsight.errors import status_code_for

log = logging.getLogger(__name__)

RPC_TOTAL = Counter(
    "labsight_grpc_requests_total", "gRPC requests handled", ["method", "code"]
)
RPC_SECONDS = Histogram(
    "labsight_grpc_request_seconds",
    "Time to handle a gRPC request (streams: until the last message)",
    ["method"],
    buckets=(0.001, 0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)


def _abort_for(error: Exception, context: grpc.ServicerContext, method: str) -> None:
    """Answer the call with the status that ``error`` maps to (never UNKNOWN)."""
    set_code = context.code() if hasattr(context, "code") else None
    if set_code not in (None, grpc.StatusCode.OK):
        raise error  # the handler already chose a status with context.abort
    code = status_code_for(error)
    if code == grpc.StatusCode.INTERNAL:
        log.exception("unhandled error in %s", method)
        message = f"internal error in {method}: {type(error).__name__}: {error}"
    else:
        log.info("%s answered %s: %s", method, code.name, error)
        message = str(error) or code.name
    RPC_TOTAL.labels(method, code.name).inc()
    context.abort(code, message)


def _wrap_unary(behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
    def handle(request: Any, context: grpc.ServicerContext) -> Any:
        start = time.perf_counter()
        try:
            response = behavior(request, context)
        except Exception as error:  # noqa: BLE001 - every error gets a status
            _abort_for(error, context, method)
            raise
        finally:
            RPC_SECONDS.labels(method).observe(time.perf_counter() - start)
        RPC_TOTAL.labels(method, "OK").inc()
        return response

    return handle


def _wrap_streaming(behavior: Callable[..., Iterator[Any]], method: str) -> Callable[..., Any]:
    def handle(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        start = time.perf_counter()
        try:
            yield from behavior(request, context)
        except Exception as error:  # noqa: BLE001 - every error gets a status
            _abort_for(error, context, method)
            raise
        finally:
            RPC_SECONDS.labels(method).observe(time.perf_counter() - start)
        RPC_TOTAL.labels(method, "OK").inc()

    return handle


class StatusInterceptor(grpc.ServerInterceptor):
    """Wraps every handler so no exception escapes as UNKNOWN and every call is counted."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        kwargs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary, method), **kwargs
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _wrap_unary(handler.stream_unary, method), **kwargs
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_streaming(handler.unary_stream, method), **kwargs
            )
        return grpc.stream_stream_rpc_method_handler(
            _wrap_streaming(handler.stream_stream, method), **kwargs
        )
