"""Tensors through a real segmentation service on loopback: over gRPC's 4 MB default both ways,
pixels unchanged, also when written and read with labsight.tensor_wire, and malformed tensor
fields refused as INVALID_ARGUMENT naming the field."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pytest

from labsight.catalog import SEGMENTATION
from labsight.config import Settings
from labsight.runtime.encoded_channel import EncodedRequestChannel
from labsight.runtime.server import RunningServer
from labsight.tensor_wire import DetachingParser, EncodedMessage, serialize_with_arrays
from labsight.tensors import from_tensor, write_tensor
from labsight.v1 import segmentation_pb2 as pb
from labsight.v1 import segmentation_pb2_grpc as pb_grpc
from labsight.v1 import tensor_pb2
from services.segmentation.servicer import register

SIDE = 2048
"""An 8 MiB uint16 image: twice gRPC's default message limit."""


@pytest.fixture
def stub(
    serve: Callable[..., RunningServer], settings: Settings
) -> Iterator[pb_grpc.SegmentationServiceStub]:
    server = serve(register, SEGMENTATION.grpc_services, settings)
    with grpc.insecure_channel(server.address, options=settings.grpc_options()) as channel:
        yield pb_grpc.SegmentationServiceStub(channel)


def _request(image: np.ndarray, centre: tuple[float, float], diameter: float) -> pb.ExtractPatchesRequest:
    request = pb.ExtractPatchesRequest(spot_diameter=diameter)
    write_tensor(request.image.tensor, image)
    write_tensor(request.spot_centres, np.array([centre]))
    return request


def test_big_tensor_goes_in_and_comes_back_unchanged(stub: pb_grpc.SegmentationServiceStub) -> None:
    image = np.random.default_rng(3).integers(0, 65536, (SIDE, SIDE), dtype=np.uint16)
    whole = stub.ExtractPatches(_request(image, (SIDE / 2, SIDE / 2), SIDE), timeout=60)
    patches = from_tensor(whole.patches, "patches")
    assert patches.shape == (1, SIDE, SIDE, 1)
    np.testing.assert_array_equal(patches[0, ..., 0], image)
    small = stub.ExtractPatches(_request(image, (100.0, 200.0), 8), timeout=60)
    np.testing.assert_array_equal(from_tensor(small.patches, "patches")[0, ..., 0], image[196:204, 96:104])
    np.testing.assert_array_equal(from_tensor(small.patch_centres, "patch_centres"), [[100.0, 200.0]])


def test_array_request_and_detached_answer_carry_the_same_pixels(
    serve: Callable[..., RunningServer], settings: Settings
) -> None:
    server = serve(register, SEGMENTATION.grpc_services, settings)
    image = np.random.default_rng(4).integers(0, 4096, (SIDE, SIDE), dtype=np.uint16)
    request = pb.ExtractPatchesRequest(spot_diameter=SIDE)
    write_tensor(request.spot_centres, np.array([[SIDE / 2, SIDE / 2]]))
    with grpc.insecure_channel(server.address, options=settings.grpc_options()) as channel:
        extract = channel.unary_unary(
            "/labsight.v1.SegmentationService/ExtractPatches",
            response_deserializer=DetachingParser(pb.ExtractPatchesResponse).parse,
        )
        answer = extract(serialize_with_arrays(request, {"image.tensor": image}), timeout=60)
    assert answer.detached_bytes == image.nbytes
    np.testing.assert_array_equal(from_tensor(answer.message.patches, "patches")[0, ..., 0], image)
    assert list(answer.message.patch_ids) == ["0"]


def test_a_stub_over_an_encoded_request_channel_takes_messages_and_their_bytes(
    serve: Callable[..., RunningServer], settings: Settings
) -> None:
    server = serve(register, SEGMENTATION.grpc_services, settings)
    image = np.random.default_rng(5).integers(0, 4096, (300, 200), dtype=np.uint16)
    channel = EncodedRequestChannel(grpc.insecure_channel(server.address, options=settings.grpc_options()))
    with channel:
        stub = pb_grpc.SegmentationServiceStub(channel)
        as_message = stub.ExtractPatches(_request(image, (50.0, 60.0), 20), timeout=60)
        request = pb.ExtractPatchesRequest(spot_diameter=20)
        write_tensor(request.spot_centres, np.array([[50.0, 60.0]]))
        encoded = EncodedMessage(serialize_with_arrays(request, {"image.tensor": image}))
        as_bytes = stub.ExtractPatches.future(encoded, timeout=60).result()
    assert as_bytes == as_message
    np.testing.assert_array_equal(from_tensor(as_bytes.patches, "patches")[0, ..., 0], image[50:70, 40:60])


def test_big_tensor_of_the_wrong_length_is_refused_with_its_real_length(
    stub: pb_grpc.SegmentationServiceStub,
) -> None:
    request = _request(np.zeros((SIDE, SIDE), np.uint16), (64.0, 64.0), 16)
    request.image.tensor.data = request.image.tensor.data[:-2]  # still detached: over 256 KiB
    with pytest.raises(grpc.RpcError) as refusal:
        stub.ExtractPatches(request, timeout=60)
    assert refusal.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"image.tensor.data: {SIDE * SIDE * 2 - 2} bytes do not match shape" in refusal.value.details()


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (lambda r: setattr(r.image.tensor, "data", r.image.tensor.data[:-1]),
         "image.tensor.data: 32767 bytes do not match shape [128, 128]"),
        (lambda r: setattr(r.image.tensor, "dtype", tensor_pb2.DATA_TYPE_UNSPECIFIED),
         "image.tensor.dtype: DATA_TYPE_UNSPECIFIED is not supported"),
        (lambda r: setattr(r.spot_centres, "dtype", 42), "spot_centres.dtype: 42 is not supported"),
        (lambda r: r.spot_centres.shape.__setitem__(0, -1),
         "spot_centres.shape: dimensions must be >= 0, got [-1, 2]"),
    ],
)
def test_malformed_tensor_is_invalid_argument_naming_the_field(
    stub: pb_grpc.SegmentationServiceStub,
    spoil: Callable[[pb.ExtractPatchesRequest], None],
    message: str,
) -> None:
    image = np.zeros((128, 128), np.uint16)
    request = _request(image, (64.0, 64.0), 16)
    spoil(request)
    with pytest.raises(grpc.RpcError) as refusal:
        stub.ExtractPatches(request, timeout=30)
    assert refusal.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in refusal.value.details()
    answer = stub.ExtractPatches(_request(image, (64.0, 64.0), 16), timeout=30)  # still serving
    assert list(answer.patches.shape) == [1, 16, 16, 1]


def test_services_other_than_the_model_services_get_their_data_in_the_message(
    serve: Callable[..., RunningServer], settings: Settings
) -> None:
    """The gateway stores the requests it gets: a detached token there would be stored in place
    of the pixels, so only the model services parse with their data left on the wire."""

    def data_length(request: pb.ExtractPatchesRequest, context: grpc.ServicerContext) -> int:
        return len(request.image.tensor.data)

    def register(server: grpc.Server, _: Settings) -> None:
        handler = grpc.unary_unary_rpc_method_handler(
            data_length,
            request_deserializer=pb.ExtractPatchesRequest.FromString,
            response_serializer=lambda length: str(length).encode(),
        )
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler("test.Storing", {"DataLength": handler})]
        )

    server = serve(register, ("test.Storing",), settings)
    request = _request(np.zeros((SIDE, SIDE), np.uint16), (64.0, 64.0), 16)
    with grpc.insecure_channel(server.address, options=settings.grpc_options()) as channel:
        answer = channel.unary_unary("/test.Storing/DataLength")(request.SerializeToString(), timeout=60)
    assert answer == str(SIDE * SIDE * 2).encode()
