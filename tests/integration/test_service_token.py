"""LABSIGHT_SERVICE_TOKEN: model services answer only callers with the shared token; workers send it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from labsight.catalog import FEATURES, GATEWAY, SEGMENTATION, ProcessSpec
from labsight.client import LabSightClient
from labsight.config import Settings
from labsight.demo import demo_image
from labsight.runtime.interceptors import StatusInterceptor
from labsight.runtime.server import RunningServer
from labsight.runtime.service_token import ServiceTokenInterceptor, with_service_token
from labsight.v1 import features_pb2, features_pb2_grpc, segmentation_pb2, segmentation_pb2_grpc
from labsight.v1 import gateway_pb2 as pb
from services.features.servicer import register as register_features
from services.gateway.servicer import register as register_gateway
from services.segmentation.servicer import register as register_segmentation
from tests.conftest import RunningWorker

TOKEN = "shared-secret-0123456789"


def _code(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as error:
        call()
    return error.value.code(), error.value.details()


def _list_models(channel: grpc.Channel) -> object:
    return features_pb2_grpc.FeatureServiceStub(channel).ListModels(
        features_pb2.ListModelsRequest(), timeout=30
    )


def _extract_nothing(channel: grpc.Channel) -> object:
    return segmentation_pb2_grpc.SegmentationServiceStub(channel).ExtractPatches(
        segmentation_pb2.ExtractPatchesRequest(), timeout=30
    )


@pytest.mark.parametrize(
    ("register", "spec", "call"),
    [(register_features, FEATURES, _list_models), (register_segmentation, SEGMENTATION, _extract_nothing)],
)
def test_model_services_refuse_calls_without_the_token_but_keep_probes_open(
    serve: Callable[..., RunningServer], settings: Settings,
    register: Callable[..., None], spec: ProcessSpec, call: Callable[[grpc.Channel], object],
) -> None:
    settings.service_token = TOKEN
    server = serve(register, spec.grpc_services, settings)
    with grpc.insecure_channel(server.address) as channel:
        code, message = _code(lambda: call(channel))
        assert code == grpc.StatusCode.UNAUTHENTICATED and "missing service token" in message
        assert _code(lambda: call(with_service_token(channel, "not-the-token"))) == (
            grpc.StatusCode.UNAUTHENTICATED, "missing or wrong service token"
        )
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        assert next(reflection).list_services_response.service
        try:
            call(with_service_token(channel, TOKEN))
        except grpc.RpcError as error:  # the empty ExtractPatches request is refused...
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # ...but not for the token


def test_workers_send_the_token_and_the_gateway_keeps_its_own_tokens(
    serve: Callable[..., RunningServer],
    settings: Settings,
    worker_thread: Callable[..., RunningWorker],
) -> None:
    settings.service_token = TOKEN
    features = serve(register_features, FEATURES.grpc_services, settings)
    settings.service_addresses = {
        "features": features.address, "segmentation": "127.0.0.1:1", "classifier": "127.0.0.1:1",
    }
    gateway = serve(register_gateway, GATEWAY.grpc_services, settings)
    worker_thread()
    with LabSightClient(gateway.address, token="") as client:  # anonymous gateway, no token
        job = client.submit("fractal", demo_image(), {"box_sizes": "3"})
        final = client.wait(job.job_id, timeout_s=120)
    assert final.status == pb.JOB_STATUS_DONE, final.error
    assert final.attempts == 1


def _echo_service() -> grpc.GenericRpcHandler:
    """A bytes echo service with one method of each kind."""

    def first(requests: Iterator[bytes]) -> bytes:
        return next(iter(requests))

    return grpc.method_handlers_generic_handler("test.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(lambda request, _: request),
        "ServerStream": grpc.unary_stream_rpc_method_handler(lambda request, _: iter([request])),
        "ClientStream": grpc.stream_unary_rpc_method_handler(lambda requests, _: first(requests)),
        "BothStreams": grpc.stream_stream_rpc_method_handler(lambda requests, _: iter([first(requests)])),
    })


@pytest.mark.parametrize("kind", ["unary_unary", "unary_stream", "stream_unary", "stream_stream"])
def test_every_kind_of_call_needs_the_token_and_carries_it(kind: str) -> None:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        interceptors=[StatusInterceptor(), ServiceTokenInterceptor(TOKEN, ["test.Echo"])],
    )
    server.add_generic_rpc_handlers((_echo_service(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    method = {"unary_unary": "Unary", "unary_stream": "ServerStream",
              "stream_unary": "ClientStream", "stream_stream": "BothStreams"}[kind]
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            def call(on: grpc.Channel) -> bytes:
                multi = getattr(on, kind)(f"/test.Echo/{method}")
                answer = multi(iter([b"hi"]) if kind.startswith("stream") else b"hi", timeout=10)
                return b"".join(answer) if kind.endswith("stream") else answer

            assert _code(lambda: call(channel))[0] == grpc.StatusCode.UNAUTHENTICATED
            assert call(with_service_token(channel, TOKEN)) == b"hi"
    finally:
        server.stop(0)
