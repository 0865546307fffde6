"""Requests no client library would send: undecodable bytes, absurd numbers, huge messages.

Each is the client's fault, so each is INVALID_ARGUMENT (never INTERNAL or
UNKNOWN), and the server answers the next call as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pytest

from labsight.catalog import SEGMENTATION
from labsight.config import Settings
from labsight.demo import demo_image
from labsight.errors import InvalidArgument
from labsight.runtime.interceptors import MAX_STATUS_MESSAGE_CHARS
from labsight.runtime.server import RunningServer
from labsight.tensors import to_tensor
from labsight.v1 import gateway_pb2 as pb
from labsight.v1 import segmentation_pb2, segmentation_pb2_grpc
from services.segmentation.servicer import register as register_segmentation

from .conftest import InProcessStack

GARBAGE = b"\xff\xff"  # a field tag whose varint never ends


def _raw(channel: grpc.Channel, method: str, kind: str = "unary_unary") -> Callable[..., object]:
    """A call that sends and receives bytes as they are."""
    return getattr(channel, kind)(method, request_serializer=None, response_deserializer=None)


def _refusal(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as error:
        call()
    return error.value


@pytest.mark.parametrize(
    ("method", "kind", "message_type"),
    [
        ("GetJob", "unary_unary", "labsight.v1.GetJobRequest"),
        ("WatchJob", "unary_stream", "labsight.v1.WatchJobRequest"),
        ("SubmitBatch", "stream_unary", "labsight.v1.SubmitBatchRequest"),
        ("UploadJob", "stream_unary", "labsight.v1.UploadJobRequest"),
    ],
)
def test_undecodable_gateway_requests_are_invalid_argument(
    stack: InProcessStack, method: str, kind: str, message_type: str
) -> None:
    with grpc.insecure_channel(stack.gateway.address) as channel:
        call = _raw(channel, f"/labsight.v1.GatewayService/{method}", kind)
        request: object = iter([GARBAGE]) if kind.startswith("stream") else GARBAGE
        error = _refusal(lambda: list(call(request, timeout=10)) if kind == "unary_stream"
                         else call(request, timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert error.details().startswith(f"request: cannot parse {message_type} from 2 bytes")
    assert stack.client.list_jobs() == []  # the gateway answers the next call, nothing queued


def test_undecodable_job_after_good_ones_in_a_batch_queues_nothing(stack: InProcessStack) -> None:
    good = pb.SubmitBatchRequest(header=pb.BatchHeader(batch_id="half-read")).SerializeToString()
    with grpc.insecure_channel(stack.gateway.address) as channel:
        call = _raw(channel, "/labsight.v1.GatewayService/SubmitBatch", "stream_unary")
        error = _refusal(lambda: call(iter([good, GARBAGE]), timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert stack.client.list_jobs() == []


def test_undecodable_model_service_request_is_invalid_argument(stack: InProcessStack) -> None:
    assert stack.segmentation is not None
    with grpc.insecure_channel(stack.segmentation.address) as channel:
        call = _raw(channel, "/labsight.v1.SegmentationService/ExtractPatches")
        error = _refusal(lambda: call(GARBAGE, timeout=10))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "labsight.v1.ExtractPatchesRequest" in error.details()
        # Not a parse failure: an empty request is a request with every field unset.
        assert _refusal(lambda: call(b"", timeout=10)).code() == grpc.StatusCode.INVALID_ARGUMENT


IMAGE = np.zeros((64, 48), np.uint8)


@pytest.mark.parametrize(
    ("diameter", "centres", "expected"),
    [
        (1e30, [[24.0, 32.0]], "spot_diameter: a 1e+30-pixel patch does not fit in the 64x48 image"),
        (float("nan"), [[24.0, 32.0]], "spot_diameter: must be at least 1 pixel"),
        (float("inf"), [[24.0, 32.0]], "spot_diameter: must be at least 1 pixel"),
        (-5.0, [[24.0, 32.0]], "spot_diameter: must be at least 1 pixel"),
        (49.0, [[24.0, 32.0]], "spot_diameter: a 49-pixel patch does not fit"),
        (8.0, [[1e30, 32.0]], "spot_centres[0]: the centre (x=1e+30, y=32.0) lies outside"),
        (8.0, [[-1e30, -1e30]], "spot_centres[0]: the centre (x=-1e+30"),
    ],
)
def test_absurd_spot_patches_are_invalid_argument(
    serve: Callable[..., RunningServer], settings: Settings,
    diameter: float, centres: list[list[float]], expected: str,
) -> None:
    server = serve(register_segmentation, SEGMENTATION.grpc_services, settings)
    request = segmentation_pb2.ExtractPatchesRequest(
        image={"tensor": to_tensor(IMAGE)},
        spot_centres=to_tensor(np.array(centres)),
        spot_diameter=diameter,
    )
    with grpc.insecure_channel(server.address) as channel:
        stub = segmentation_pb2_grpc.SegmentationServiceStub(channel)
        error = _refusal(lambda: stub.ExtractPatches(request, timeout=30))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        assert error.details().startswith(expected), error.details()
        request.spot_centres.CopyFrom(to_tensor(np.array([[24.0, 32.0]])))
        request.spot_diameter = 8.0  # the same service answers a sound request
        assert stub.ExtractPatches(request, timeout=30).patches.shape == [1, 8, 8, 1]


@pytest.mark.parametrize("centres", [np.array(5.0), np.zeros(4)], ids=["0-d", "1-d"])
def test_spot_ids_beside_centres_of_no_shape_name_the_centres(
    serve: Callable[..., RunningServer], settings: Settings, centres: np.ndarray,
) -> None:
    # The fuzzer's seed 3: the ids were counted against a 0-d centres tensor (INTERNAL TypeError)
    server = serve(register_segmentation, SEGMENTATION.grpc_services, settings)
    request = segmentation_pb2.ExtractPatchesRequest(
        image={"tensor": to_tensor(IMAGE)}, spot_centres=to_tensor(centres),
        spot_diameter=8.0, spot_ids=["a", "b"])
    with grpc.insecure_channel(server.address) as channel:
        stub = segmentation_pb2_grpc.SegmentationServiceStub(channel)
        error = _refusal(lambda: stub.ExtractPatches(request, timeout=30))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert error.details().startswith(
        f"spot_centres: expected (N, 2) (x, y) coordinates, got shape {list(centres.shape)}")


def _long_refusal_handler() -> grpc.GenericRpcHandler:
    def refuse(request: bytes, context: grpc.ServicerContext) -> bytes:
        raise InvalidArgument("field: " + "é" * 20_000)

    def refuse_stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        yield b""
        raise InvalidArgument("field: " + "x" * 20_000)

    return grpc.method_handlers_generic_handler("test.Long", {
        "Refuse": grpc.unary_unary_rpc_method_handler(refuse),
        "RefuseLater": grpc.unary_stream_rpc_method_handler(refuse_stream),
    })


def test_long_error_messages_are_cut_so_the_status_arrives(
    serve: Callable[..., RunningServer], settings: Settings
) -> None:
    server = serve(lambda s, _: s.add_generic_rpc_handlers((_long_refusal_handler(),)), (), settings)
    with grpc.insecure_channel(server.address) as channel:
        for call in (
            lambda: _raw(channel, "/test.Long/Refuse")(b"", timeout=10),
            lambda: list(_raw(channel, "/test.Long/RefuseLater", "unary_stream")(b"", timeout=10)),
        ):
            error = _refusal(call)
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # not RESOURCE_EXHAUSTED
            assert error.details().startswith("field: ")
            assert error.details().endswith("… (20007 characters)")
            assert len(error.details()) < MAX_STATUS_MESSAGE_CHARS + 30


def test_huge_values_are_quoted_cut_in_messages(stack: InProcessStack) -> None:
    huge = "q" * 20_000
    for call, start in (
        (lambda: stack.client.submit(huge, demo_image()), "pipeline: unknown pipeline 'qqq"),
        (lambda: stack.client.submit("fractal", demo_image(), {huge: "1"}),
         "params: unknown parameter(s) 'qqq"),
        (lambda: stack.client.submit("fractal", demo_image(), {"percolation": huge}),
         "params.percolation: expected true or false, got 'qqq"),
    ):
        error = _refusal(call)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.details().startswith(start) and "… (20000 characters)" in error.details()
        assert len(error.details()) < 500
