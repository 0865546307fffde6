"""gRPC clients of the model services, shared by every pipeline run in a worker."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from labsight.catalog import MODEL_SERVICES
from labsight.runtime.encoded_channel import EncodedRequestChannel
from labsight.runtime.service_token import with_service_token
from labsight.v1 import classifier_pb2_grpc, features_pb2_grpc, segmentation_pb2_grpc

MAX_RECONNECT_BACKOFF_MS = 2000
"""A channel whose service went away tries it again at least this often (gRPC's default
backs off to two minutes), so a restarted service is used within seconds."""
HEALTH_POLL_S = 0.5
"""How often a worker asks a service that refused a call whether it is SERVING again."""
HEALTH_TIMEOUT_S = 2.0
"""A health check not answered this fast counts as not SERVING."""

GRPC_SERVICE_NAMES = {spec.name: spec.grpc_services[0] for spec in MODEL_SERVICES}
"""The gRPC service whose health tells whether a model service can take calls."""


class _CallRecorder(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Keeps each call made to ``service``, so a failed pipeline run can tell which
    service refused it (its error does not say), and a cancelled job's calls can be cancelled."""

    def __init__(self, service: str, calls: list[tuple[str, grpc.Future]]) -> None:
        self._service = service
        self._calls = calls

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        call = continuation(client_call_details, request)
        self._calls.append((self._service, call))
        return call

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        call = continuation(client_call_details, request)
        self._calls.append((self._service, call))
        return call


REFUSAL_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
"""How a service that is starting, stopping or gone ends a call: UNAVAILABLE, or CANCELLED
for a call it had received but not started when its server shut down."""


def _refused(call: grpc.Future) -> bool:
    """True if the service ended ``call`` UNAVAILABLE, or CANCELLED without this side
    cancelling it (its outcome is set before a waiter sees it; done-callbacks may run
    later, so they cannot tell)."""
    if not call.done() or call.cancelled():
        return False
    error = call.exception()
    return isinstance(error, grpc.RpcError) and error.code() in REFUSAL_CODES


class ServiceClients:
    """Stubs to the segmentation, features and classifier services over shared channels
    (sending ``service_token``, LABSIGHT_SERVICE_TOKEN, on every call when set). Their calls
    take a request message or its bytes as a :class:`labsight.tensor_wire.EncodedMessage`."""

    def __init__(
        self,
        addresses: Mapping[str, str],
        options: list[tuple[str, int]] | None = None,
        call_timeout_s: float = 600.0,
        service_token: str = "",
    ) -> None:
        self.call_timeout_s = call_timeout_s
        self._calls: list[tuple[str, grpc.Future]] = []
        # round_robin spreads calls over every address a (headless) service name resolves to.
        channel_options = [
            *(options or []),
            ("grpc.lb_policy_name", "round_robin"),
            ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
        ]
        # Requests may come serialized already (labsight.tensor_wire.EncodedMessage).
        self._channels = {
            name: with_service_token(
                EncodedRequestChannel(grpc.insecure_channel(address, options=channel_options)),
                service_token,
            )
            for name, address in addresses.items()
        }
        calls = {
            name: grpc.intercept_channel(channel, _CallRecorder(name, self._calls))
            for name, channel in self._channels.items()
        }
        self.segmentation = segmentation_pb2_grpc.SegmentationServiceStub(calls["segmentation"])
        self.features = features_pb2_grpc.FeatureServiceStub(calls["features"])
        self.classifier = classifier_pb2_grpc.ClassifierServiceStub(calls["classifier"])

    def refusals(self) -> set[str]:
        """Names of the services that refused a call (see ``REFUSAL_CODES``) since
        ``forget_calls``."""
        return {service for service, call in list(self._calls) if _refused(call)}

    def cancel_calls(self) -> None:
        """Cancel every call still in flight (futures and streams; a blocking call is recorded
        only once it has ended): their waiters get FutureCancelledError or CANCELLED."""
        for _, call in list(self._calls):
            call.cancel()

    def forget_calls(self) -> None:
        """Let go of the calls made so far (and the answers they hold)."""
        self._calls.clear()

    def is_serving(self, name: str) -> bool:
        """True if service ``name`` reports SERVING through grpc.health.v1 now."""
        stub = health_pb2_grpc.HealthStub(self._channels[name])
        request = health_pb2.HealthCheckRequest(service=GRPC_SERVICE_NAMES.get(name, ""))
        try:
            reply = stub.Check(request, timeout=HEALTH_TIMEOUT_S)
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    def wait_for_restart(
        self, names: Collection[str], deadline: float, give_up: Callable[[], bool]
    ) -> bool:
        """Wait until every service in ``names`` reports SERVING again.

        Returns True if one of them was not SERVING (starting, stopping, or not
        reachable) and all of them are SERVING before the monotonic ``deadline``;
        False if all were SERVING at once (the refusal was not a restart), at the
        deadline, or once ``give_up()`` is true.
        """
        waiting = {name for name in names if not self.is_serving(name)}
        if not waiting:
            return False
        while waiting:
            if time.monotonic() >= deadline or give_up():
                return False
            time.sleep(HEALTH_POLL_S)
            waiting = {name for name in waiting if not self.is_serving(name)}
        return True

    def close(self) -> None:
        """Close every channel."""
        for channel in self._channels.values():
            channel.close()
