"""The worker's model-service clients tell which service refused a call and when it is back."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from labsight.catalog import FEATURES
from labsight.config import Settings
from labsight.redis_server import free_port
from labsight.runtime.server import RunningServer
from labsight.tensors import to_tensor
from labsight.v1 import features_pb2, tensor_pb2
from services.features.servicer import register as register_features
from services.gateway.services import ServiceClients

Serve = Callable[..., RunningServer]
REQUEST = features_pb2.ComputeFractalRequest(
    image=tensor_pb2.Image(tensor=to_tensor(np.zeros((8, 8), np.uint8))), box_sizes=[3]
)


def _clients(features: str) -> ServiceClients:
    return ServiceClients({"features": features, "segmentation": "127.0.0.1:1",
                           "classifier": "127.0.0.1:1"})


def test_a_refused_call_names_its_service_blocking_or_future() -> None:
    clients = _clients(f"127.0.0.1:{free_port()}")
    with pytest.raises(grpc.RpcError):
        clients.features.ComputeFractal(REQUEST, timeout=5)
    assert clients.refusals() == {"features"}
    clients.forget_calls()
    assert clients.refusals() == set()
    # A future's error reaches its waiter before done-callbacks run: still named at once.
    with pytest.raises(grpc.RpcError):
        clients.features.ComputeFractal.future(REQUEST, timeout=5).result()
    assert clients.refusals() == {"features"}
    clients.close()


def test_wait_for_restart_sees_a_service_come_back(serve: Serve, settings: Settings) -> None:
    port = free_port()
    clients = _clients(f"127.0.0.1:{port}")
    assert not clients.is_serving("features")
    assert not clients.wait_for_restart({"features"}, time.monotonic() + 60, lambda: True)

    started: list[RunningServer] = []

    def start_meanwhile() -> bool:
        if not started:
            started.append(serve(register_features, FEATURES.grpc_services,
                                 Settings(**{**vars(settings), "port": port})))
        return False

    assert clients.wait_for_restart({"features"}, time.monotonic() + 60, start_meanwhile)
    assert clients.features.ComputeFractal(REQUEST, timeout=10).box_sizes == [3]
    # A service that serves was not restarting: the refusal was something else.
    assert not clients.wait_for_restart({"features"}, time.monotonic() + 60, lambda: False)
    clients.close()


def _abort_cancelled(request: bytes, context: grpc.ServicerContext) -> bytes:
    context.abort(grpc.StatusCode.CANCELLED, "CANCELLED")  # what a shutting-down server sends
    return b""


def _hang(request: bytes, context: grpc.ServicerContext) -> bytes:
    time.sleep(5)
    return b""


def test_cancelled_by_the_service_is_a_refusal_cancelled_here_is_not() -> None:
    # A server shutting down ends CANCELLED the calls it had received but not started
    # (seen on 2026-12-04 in test_restarted_model_service_costs_no_attempts).
    server = grpc.server(ThreadPoolExecutor(2))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "labsight.v1.FeatureService",
        {"ComputeFractal": grpc.unary_unary_rpc_method_handler(_abort_cancelled),
         "ExtractDeepFeatures": grpc.unary_unary_rpc_method_handler(_hang)},
    )])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    clients = _clients(f"127.0.0.1:{port}")
    with pytest.raises(grpc.RpcError) as raised:
        clients.features.ComputeFractal(REQUEST, timeout=5)
    assert raised.value.code() == grpc.StatusCode.CANCELLED
    assert clients.refusals() == {"features"}
    clients.forget_calls()

    call = clients.features.ExtractDeepFeatures.future(features_pb2.ExtractDeepFeaturesRequest(), timeout=5)
    clients.cancel_calls()  # as the worker does for a job cancelled meanwhile
    with pytest.raises(grpc.FutureCancelledError):
        call.result()
    assert clients.refusals() == set()
    clients.close()
    server.stop(None)
