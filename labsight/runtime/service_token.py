"""A token shared by the workers and the model services (LABSIGHT_SERVICE_TOKEN).

With it set, a model service answers its LabSight RPCs only to callers that
send ``authorization: Bearer <token>``, and workers send it on every call;
health checks and reflection stay open for probes. The network policies of
the Kubernetes manifests admit only workers already; the token keeps anyone
else who reaches a model service (another pod, a compose neighbour) out.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable
from typing import Any

import grpc

from labsight.errors import Unauthenticated

METADATA_KEY = "authorization"


def _bearer(token: str) -> str:
    return f"Bearer {token}"


class ServiceTokenInterceptor(grpc.ServerInterceptor):
    """Refuses calls to ``services`` that lack the shared token, as UNAUTHENTICATED.

    Parameters
    ----------
    token : str
        The shared token (LABSIGHT_SERVICE_TOKEN).
    services : iterable of str
        Fully qualified gRPC services that require it (health and reflection
        are never among them, so probes keep working).
    """

    def __init__(self, token: str, services: Iterable[str]) -> None:
        if not token:
            raise ValueError("LABSIGHT_SERVICE_TOKEN: the shared token is empty")
        self._expected = _bearer(token).encode()
        self._prefixes = tuple(f"/{service}/" for service in services)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or not handler_call_details.method.startswith(self._prefixes):
            return handler
        sent = dict(handler_call_details.invocation_metadata or ()).get(METADATA_KEY, "")
        sent_bytes = sent.encode() if isinstance(sent, str) else sent
        if hmac.compare_digest(sent_bytes, self._expected):
            return handler
        return _refusing(handler, "missing or wrong service token" if sent else (
            "missing service token: this service requires call metadata "
            "'authorization: Bearer <LABSIGHT_SERVICE_TOKEN>'"
        ))


def _refusing(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of ``handler``'s kind that answers UNAUTHENTICATED without running it."""

    def refuse(request: Any, context: grpc.ServicerContext) -> Any:
        raise Unauthenticated(message)

    def refuse_stream(request: Any, context: grpc.ServicerContext) -> Any:
        raise Unauthenticated(message)
        yield  # a generator, as stream handlers are

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(refuse, **kwargs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(refuse, **kwargs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(refuse_stream, **kwargs)
    return grpc.stream_stream_rpc_method_handler(refuse_stream, **kwargs)


class _ServiceTokenMetadata(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds the shared token to every call of a channel."""

    def __init__(self, token: str) -> None:
        self._entry = (METADATA_KEY, _bearer(token))

    def _with_token(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return _CallDetails(
            details.method,
            details.timeout,
            [*(details.metadata or ()), self._entry],
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation, details, request):  # noqa: ANN001, ANN201
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation, details, request):  # noqa: ANN001, ANN201
        return continuation(self._with_token(details), request)

    def intercept_stream_unary(self, continuation, details, requests):  # noqa: ANN001, ANN201
        return continuation(self._with_token(details), requests)

    def intercept_stream_stream(self, continuation, details, requests):  # noqa: ANN001, ANN201
        return continuation(self._with_token(details), requests)


class _CallDetails(grpc.ClientCallDetails):
    def __init__(
        self,
        method: str,
        timeout: float | None,
        metadata: list[tuple[str, str]],
        credentials: grpc.CallCredentials | None,
        wait_for_ready: bool | None,
        compression: grpc.Compression | None,
    ) -> None:
        self.method = method
        self.timeout = timeout
        self.metadata = metadata
        self.credentials = credentials
        self.wait_for_ready = wait_for_ready
        self.compression = compression


def with_service_token(channel: grpc.Channel, token: str) -> grpc.Channel:
    """``channel`` sending the shared token on every call (unchanged when ``token`` is empty)."""
    return grpc.intercept_channel(channel, _ServiceTokenMetadata(token)) if token else channel
