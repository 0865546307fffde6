"""The shared runtime on real loopback servers: health, reflection, metrics, limits, status codes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from labsight.catalog import CLASSIFIER, SEGMENTATION
from labsight.config import Settings
from labsight.images import image_from_array
from labsight.models import ModelServer, ServingConfig
from labsight.redis_server import free_port
from labsight.runtime.server import RunningServer, start_metrics
from labsight.v1 import classifier_pb2, classifier_pb2_grpc, segmentation_pb2, segmentation_pb2_grpc
from services.classifier.repository import classifier_repository
from services.classifier.servicer import ClassifierServicer
from services.classifier.servicer import register as register_classifier
from services.segmentation.servicer import register as register_segmentation

Serve = Callable[..., RunningServer]


def _segmentation(serve: Serve, settings: Settings) -> tuple[RunningServer, grpc.Channel]:
    server = serve(register_segmentation, SEGMENTATION.grpc_services, settings)
    options = settings.grpc_options()
    return server, grpc.insecure_channel(server.address, options=options)


def test_health_reports_serving_overall_and_per_service(serve: Serve, settings: Settings) -> None:
    server, channel = _segmentation(serve, settings)
    stub = health_pb2_grpc.HealthStub(channel)
    for name in ("", "labsight.v1.SegmentationService"):
        reply = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as error:
        stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    server.stop(0)


def test_reflection_lists_the_service_and_health(serve: Serve, settings: Settings) -> None:
    _, channel = _segmentation(serve, settings)
    services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert {"labsight.v1.SegmentationService", "grpc.health.v1.Health"} <= services


def test_a_method_the_service_lacks_answers_unimplemented(serve: Serve, settings: Settings) -> None:
    server = serve(register_classifier, CLASSIFIER.grpc_services, settings)
    call = grpc.insecure_channel(server.address).unary_unary(
        "/labsight.v1.ClassifierService/NoSuchMethod",
        request_serializer=classifier_pb2.ExplainCellsRequest.SerializeToString,
        response_deserializer=classifier_pb2.ExplainCellsResponse.FromString,
    )
    with pytest.raises(grpc.RpcError) as error:
        call(classifier_pb2.ExplainCellsRequest(), timeout=5)
    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_messages_over_4_mb_pass_and_over_the_limit_are_refused(serve: Serve, settings: Settings) -> None:
    big = image_from_array(np.zeros((3000, 3000), np.uint8))  # 9 MB, over gRPC's 4 MB default
    request = segmentation_pb2.SegmentCellsRequest(image=big)
    _, channel = _segmentation(serve, settings)
    stub = segmentation_pb2_grpc.SegmentationServiceStub(channel)
    with pytest.raises(grpc.RpcError) as passed:  # it arrives, and one channel is too few
        stub.SegmentCells(request, timeout=10)
    assert passed.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    small_limit = Settings(**{**vars(settings), "max_message_bytes": 1024 * 1024})
    _, small_channel = _segmentation(serve, small_limit)
    with pytest.raises(grpc.RpcError) as refused:
        segmentation_pb2_grpc.SegmentationServiceStub(small_channel).SegmentCells(
            request, timeout=10
        )
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


class _BrokenClassifier(ClassifierServicer):
    """A servicer with a bug, to show a crash becomes INTERNAL, not UNKNOWN."""

    def ClassifyCells(self, request: object, context: object) -> None:
        raise ZeroDivisionError("division by zero in a buggy handler")


def test_unexpected_exception_is_internal_and_server_keeps_serving(
    serve: Serve, settings: Settings
) -> None:
    def register(server: grpc.Server, _: Settings) -> None:
        models = ModelServer(classifier_repository(), ServingConfig())
        classifier_pb2_grpc.add_ClassifierServiceServicer_to_server(
            _BrokenClassifier(models, 1 << 20), server)

    server = serve(register, CLASSIFIER.grpc_services, settings)
    stub = classifier_pb2_grpc.ClassifierServiceStub(grpc.insecure_channel(server.address))
    for _ in range(3):
        with pytest.raises(grpc.RpcError) as error:
            stub.ClassifyCells(classifier_pb2.ClassifyCellsRequest(), timeout=5)
        assert error.value.code() == grpc.StatusCode.INTERNAL
        assert "ZeroDivisionError" in error.value.details()
    with pytest.raises(grpc.RpcError) as still_serving:
        stub.ExplainCells(classifier_pb2.ExplainCellsRequest(), timeout=5)
    assert still_serving.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert still_serving.value.details().startswith("image, channel_images:")


def test_metrics_endpoint_counts_rpcs(serve: Serve, settings: Settings) -> None:
    _, channel = _segmentation(serve, settings)
    port = start_metrics(Settings(**{**vars(settings), "metrics_port": 0}))
    stub = segmentation_pb2_grpc.SegmentationServiceStub(channel)
    with pytest.raises(grpc.RpcError):
        stub.ExtractPatches(segmentation_pb2.ExtractPatchesRequest(), timeout=5)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert (
        'labsight_grpc_requests_total{code="INVALID_ARGUMENT",'
        'method="/labsight.v1.SegmentationService/ExtractPatches"}' in body
    )


def test_service_process_stops_gracefully_on_sigterm(repo_root: object) -> None:
    port, metrics_port = free_port(), free_port()
    env = {**os.environ, "LABSIGHT_PORT": str(port), "LABSIGHT_METRICS_PORT": str(metrics_port)}
    process = subprocess.Popen(
        [sys.executable, "-m", "services.segmentation"], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        deadline = time.monotonic() + 30
        while True:
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                    break
            except grpc.RpcError:
                assert time.monotonic() < deadline, "service never became SERVING"
                time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        log = process.stdout.read().decode()
        assert '"msg": "stopping"' in log and '"level": "info"' in log
    finally:
        process.kill()


HANGING_SERVICE = """
import sys
import threading
from pathlib import Path

import grpc

from labsight.config import Settings
from labsight.runtime.server import run_forever


def hang(request, context):
    Path(sys.argv[1]).write_text("started")
    threading.Event().wait()  # a handler that never looks at its call again


def register(server, settings):
    handler = grpc.unary_unary_rpc_method_handler(hang)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Hang", {"Hang": handler})])


run_forever(register, ("test.Hang",), Settings.from_env())
"""


def test_a_handler_that_outlives_the_grace_does_not_keep_the_process(tmp_path: object) -> None:
    """The interpreter's exit would wait for the handler's thread forever; the process ends
    after the grace and HANDLER_EXIT_S instead, with status 0, naming the thread it left."""
    port = free_port()
    started = tmp_path / "started"  # type: ignore[operator]
    env = {**os.environ, "LABSIGHT_PORT": str(port), "LABSIGHT_METRICS_PORT": str(free_port()),
           "LABSIGHT_SHUTDOWN_GRACE_S": "1"}
    process = subprocess.Popen([sys.executable, "-c", HANGING_SERVICE, str(started)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=60)
        call = channel.unary_unary("/test.Hang/Hang").future(b"")
        deadline = time.monotonic() + 60
        while not started.exists():
            assert time.monotonic() < deadline, "the handler never started"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 0
        with pytest.raises(grpc.RpcError):
            call.result(timeout=30)
        log = process.stdout.read().decode()
        assert "handlers still running after the grace; ending the process without them" in log
    finally:
        process.kill()
