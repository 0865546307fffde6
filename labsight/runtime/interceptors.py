"""Server interceptor: maps exceptions to gRPC status codes, refuses undecodable requests
as INVALID_ARGUMENT, and records RPC metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterator
from typing import Any

import grpc
from prometheus_client import Counter, Histogram

from labsight.errors import InvalidArgument, status_code_for
from labsight.runtime.idle_trim import IdleTrimmer
from labsight.tensor_wire import DetachedMessage, DetachingParser, passing_encoded

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

MAX_STATUS_MESSAGE_CHARS = 1000
"""Longest status message a call answers with. The message travels in a response header
and clients refuse headers over 16 KiB (as RESOURCE_EXHAUSTED): 1000 characters stay
below that even when every one is percent-encoded non-ASCII."""


class UndecodableRequest:
    """Stands in for a request message that did not parse, so the handler can refuse it.

    grpc answers a deserializer's exception with INTERNAL ("Exception
    deserializing request!"); a request the client sent is the client's
    fault, so the deserializer returns this instead and the interceptor
    turns it into INVALID_ARGUMENT.
    """

    def __init__(self, message: str) -> None:
        self.message = message


def _tolerant(
    deserializer: Callable[[bytes], Any] | None, detach_tensors: bool = False
) -> Callable[[bytes], Any] | None:
    """``deserializer``, returning an UndecodableRequest instead of raising; with
    ``detach_tensors``, big tensor data and image files' bytes stay on the wire
    (labsight.tensor_wire)."""
    if deserializer is None:
        return None
    message_type = getattr(deserializer, "__self__", None)
    descriptor = getattr(message_type, "DESCRIPTOR", None)
    type_name = getattr(descriptor, "full_name", "the request message")
    if detach_tensors and descriptor is not None:
        parser = DetachingParser(message_type, encoded_images=True)  # type: ignore[arg-type]
        if parser.holds_tensors:
            deserializer = parser.parse

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as error:  # noqa: BLE001 - any parse failure is the client's
            return UndecodableRequest(
                f"request: cannot parse {type_name} from {len(data)} bytes ({error})"
            )

    return deserialize


def _decoded(request: Any, keep: list[DetachedMessage]) -> Any:
    """The message of ``request``; InvalidArgument if it did not parse. A request with
    detached tensor data is appended to ``keep``, which the caller holds for the call:
    the data's tokens resolve while it does."""
    if isinstance(request, UndecodableRequest):
        raise InvalidArgument(request.message)
    if isinstance(request, DetachedMessage):
        keep.append(request)
        return request.message
    return request


def _decoded_stream(requests: Iterator[Any], keep: list[DetachedMessage]) -> Iterator[Any]:
    """The messages of a request stream; InvalidArgument at the first that did not parse."""
    for request in requests:
        yield _decoded(request, keep)


def _cut(message: str) -> str:
    """``message`` cut to MAX_STATUS_MESSAGE_CHARS, saying how long it was."""
    if len(message) <= MAX_STATUS_MESSAGE_CHARS:
        return message
    return f"{message[:MAX_STATUS_MESSAGE_CHARS]}… ({len(message)} characters)"


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
    context.abort(code, _cut(message))


def _wrap_unary(
    behavior: Callable[..., Any], method: str, request_stream: bool, trimmer: IdleTrimmer | None
) -> Callable[..., Any]:
    def handle(request: Any, context: grpc.ServicerContext) -> Any:
        if trimmer is not None:
            trimmer.call_started()
        start = time.perf_counter()
        keep: list[DetachedMessage] = []  # detached tensor data resolves until the call ends
        try:
            checked = _decoded_stream(request, keep) if request_stream else _decoded(request, keep)
            response = behavior(checked, context)
        except Exception as error:  # noqa: BLE001 - every error gets a status
            _abort_for(error, context, method)
            raise
        finally:
            RPC_SECONDS.labels(method).observe(time.perf_counter() - start)
            if trimmer is not None:
                trimmer.call_ended()
        RPC_TOTAL.labels(method, "OK").inc()
        return response

    return handle


def _wrap_streaming(
    behavior: Callable[..., Iterator[Any]], method: str, request_stream: bool,
    trimmer: IdleTrimmer | None,
) -> Callable[..., Any]:
    def handle(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        if trimmer is not None:
            trimmer.call_started()
        start = time.perf_counter()
        keep: list[DetachedMessage] = []  # detached tensor data resolves until the call ends
        try:
            checked = _decoded_stream(request, keep) if request_stream else _decoded(request, keep)
            yield from behavior(checked, context)
        except Exception as error:  # noqa: BLE001 - every error gets a status
            _abort_for(error, context, method)
            raise
        finally:
            RPC_SECONDS.labels(method).observe(time.perf_counter() - start)
            if trimmer is not None:
                trimmer.call_ended()
        RPC_TOTAL.labels(method, "OK").inc()

    return handle


class StatusInterceptor(grpc.ServerInterceptor):
    """Wraps every handler so no exception escapes as UNKNOWN, a request that does not
    parse is INVALID_ARGUMENT, and every call is counted.

    With a ``trimmer``, every call is counted in flight while it runs, so an idle server
    gives its freed heap back (:mod:`labsight.runtime.idle_trim`).

    Requests to the services named in ``detaching_services`` are parsed with their big
    tensor data and image files' bytes left on the wire (:mod:`labsight.tensor_wire`): only
    services that decode their tensors with :func:`labsight.tensors.from_tensor`, read their
    images with :mod:`labsight.images` and never re-serialize a request (the model services)
    may be named.
    """

    def __init__(
        self, detaching_services: Collection[str] = (), trimmer: IdleTrimmer | None = None
    ) -> None:
        self.detaching_services = frozenset(detaching_services)
        self.trimmer = trimmer

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        detach = method.split("/")[1] in self.detaching_services if "/" in method else False
        # health checks and reflection come every second or so: they are no work to trim after
        trimmer = None if method.startswith("/grpc.") else self.trimmer
        kwargs = {
            "request_deserializer": _tolerant(handler.request_deserializer, detach),
            "response_serializer": passing_encoded(handler.response_serializer),
        }
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary, method, request_stream=False, trimmer=trimmer), **kwargs
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _wrap_unary(handler.stream_unary, method, request_stream=True, trimmer=trimmer), **kwargs
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_streaming(handler.unary_stream, method, request_stream=False, trimmer=trimmer),
                **kwargs,
            )
        return grpc.stream_stream_rpc_method_handler(
            _wrap_streaming(handler.stream_stream, method, request_stream=True, trimmer=trimmer),
            **kwargs,
        )
