"""labsight.tensor_wire: requests written with arrays parse to the message write_tensor builds,
and big tensor data parsed off the wire resolves, as a view of the received bytes, only while
its message is held."""

from __future__ import annotations

import gc

import numpy as np
import pytest
from google.protobuf.message import DecodeError

from labsight.errors import InvalidArgument
from labsight.tensor_wire import (
    DETACH_MIN_BYTES,
    TOKEN_BYTES,
    TOKEN_MAGIC,
    DetachingParser,
    resolve_detached,
    serialize_with_arrays,
)
from labsight.tensors import from_tensor, write_tensor
from labsight.v1 import classifier_pb2, gateway_pb2, segmentation_pb2, tensor_pb2

BIG = np.random.default_rng(7).integers(0, 65536, (512, 512), dtype=np.uint16)
"""512 KiB: over DETACH_MIN_BYTES."""

FILE_BYTES = b"II*\x00" + BIG.tobytes()
"""An image file's bytes (as far as its signature goes) over DETACH_MIN_BYTES."""


def _patches_request(image: np.ndarray) -> segmentation_pb2.ExtractPatchesRequest:
    request = segmentation_pb2.ExtractPatchesRequest(spot_diameter=9)
    request.image.name = "well A1"
    write_tensor(request.image.tensor, image)
    write_tensor(request.spot_centres, np.array([[3.0, 4.0]]))
    return request


@pytest.mark.parametrize(
    "array",
    [
        BIG,
        np.arange(12, dtype=">i4").reshape(3, 4),  # big-endian: swapped on the way
        np.arange(24, dtype=np.float64).reshape(4, 6)[:, ::2],  # not contiguous
        np.zeros((0, 3), np.float32),
        np.array([True, False, True]),
    ],
)
def test_array_request_parses_to_the_message_write_tensor_builds(array: np.ndarray) -> None:
    request = segmentation_pb2.ExtractPatchesRequest(spot_diameter=9)
    request.image.name = "well A1"
    write_tensor(request.spot_centres, np.array([[3.0, 4.0]]))
    wire = serialize_with_arrays(request, {"image.tensor": array})
    parsed = segmentation_pb2.ExtractPatchesRequest.FromString(wire)
    assert parsed == _patches_request(array)
    np.testing.assert_array_equal(from_tensor(parsed.image.tensor, "image.tensor"), array)


def test_several_arrays_and_a_top_level_tensor() -> None:
    labels = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    request = classifier_pb2.ClassifyCellsRequest()
    wire = serialize_with_arrays(request, {"image.tensor": BIG, "cell_labels": labels})
    parsed = classifier_pb2.ClassifyCellsRequest.FromString(wire)
    np.testing.assert_array_equal(from_tensor(parsed.image.tensor), BIG)
    np.testing.assert_array_equal(from_tensor(parsed.cell_labels), labels)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("image", "is a labsight.v1.Image, not a Tensor"),
        ("image.name", "has no singular message field 'name'"),
        ("spot_ids", "has no singular message field 'spot_ids'"),
        ("nothing.tensor", "has no singular message field 'nothing'"),
    ],
)
def test_a_path_that_names_no_tensor_is_refused(path: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        serialize_with_arrays(segmentation_pb2.ExtractPatchesRequest(), {path: BIG})


def test_an_array_without_a_data_type_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="complex128"):
        serialize_with_arrays(
            segmentation_pb2.ExtractPatchesRequest(), {"image.tensor": np.zeros(3, complex)}
        )


def test_big_data_is_left_on_the_wire_and_decodes_as_a_view_of_it() -> None:
    wire = _patches_request(BIG).SerializeToString()
    parsed = DetachingParser(segmentation_pb2.ExtractPatchesRequest).parse(wire)
    tensor = parsed.message.image.tensor
    assert parsed.detached_bytes == BIG.nbytes
    assert len(tensor.data) == TOKEN_BYTES and tensor.data.startswith(TOKEN_MAGIC)
    assert parsed.message.ByteSize() < 200
    assert parsed.message.image.name == "well A1"
    assert parsed.message.spot_diameter == 9
    pixels = from_tensor(tensor, "image.tensor")
    np.testing.assert_array_equal(pixels, BIG)
    assert np.shares_memory(pixels, np.frombuffer(wire, np.uint8))  # no copy at all
    assert not pixels.flags.writeable
    np.testing.assert_array_equal(from_tensor(parsed.message.spot_centres), [[3.0, 4.0]])


def test_tokens_resolve_only_while_their_message_is_held() -> None:
    parsed = DetachingParser(segmentation_pb2.ExtractPatchesRequest).parse(
        _patches_request(BIG).SerializeToString()
    )
    message = parsed.message
    pixels = from_tensor(message.image.tensor, "image.tensor")
    del parsed
    gc.collect()
    np.testing.assert_array_equal(pixels, BIG)  # what was decoded stays valid
    with pytest.raises(InvalidArgument, match="24 bytes do not match shape"):
        from_tensor(message.image.tensor, "image.tensor")


def test_a_token_nobody_issued_is_ordinary_data() -> None:
    forged = TOKEN_MAGIC + bytes(range(16))
    tensor = tensor_pb2.Tensor(dtype=tensor_pb2.DATA_TYPE_UINT8, shape=[TOKEN_BYTES], data=forged)
    assert from_tensor(tensor).tobytes() == forged


def test_small_data_and_small_messages_are_parsed_as_usual() -> None:
    small = np.ones((64, 64), np.uint8)
    parsed = DetachingParser(segmentation_pb2.ExtractPatchesRequest).parse(
        _patches_request(small).SerializeToString()
    )
    assert parsed.detached_bytes == 0
    assert parsed.message == _patches_request(small)


def test_repeated_occurrences_merge_as_protobuf_merges_them() -> None:
    first = np.full((512, 512), 1, np.uint16)
    request = _patches_request(first)
    later = segmentation_pb2.ExtractPatchesRequest()
    later.image.tensor.data = BIG.tobytes()  # a second occurrence holding data only
    wire = request.SerializeToString() + later.SerializeToString()
    plain = segmentation_pb2.ExtractPatchesRequest.FromString(wire)
    parsed = DetachingParser(segmentation_pb2.ExtractPatchesRequest).parse(wire)
    np.testing.assert_array_equal(from_tensor(plain.image.tensor), BIG)  # the last one wins
    np.testing.assert_array_equal(from_tensor(parsed.message.image.tensor), BIG)
    assert parsed.message.image.name == plain.image.name == "well A1"


def test_tensors_in_map_values_are_detached() -> None:
    result = gateway_pb2.JobResult()
    write_tensor(result.tensors["cell_labels"], BIG)
    write_tensor(result.tensors["small"], np.arange(3))
    parsed = DetachingParser(gateway_pb2.JobResult).parse(result.SerializeToString())
    assert parsed.detached_bytes == BIG.nbytes
    np.testing.assert_array_equal(from_tensor(parsed.message.tensors["cell_labels"]), BIG)
    np.testing.assert_array_equal(from_tensor(parsed.message.tensors["small"]), np.arange(3))


def test_encoded_image_bytes_are_detached_only_when_asked_and_resolve_to_the_wire() -> None:
    request = segmentation_pb2.SegmentCellsRequest(method="classical")
    request.image.encoded.data = FILE_BYTES
    request.image.encoded.format = "tiff"
    wire = request.SerializeToString()
    plain = DetachingParser(segmentation_pb2.SegmentCellsRequest).parse(wire)
    assert plain.detached_bytes == 0 and plain.message == request  # tensors only: the gateway's
    parsed = DetachingParser(segmentation_pb2.SegmentCellsRequest, encoded_images=True).parse(wire)
    encoded = parsed.message.image.encoded
    assert parsed.detached_bytes == len(FILE_BYTES)
    assert len(encoded.data) == TOKEN_BYTES and encoded.format == "tiff"
    assert parsed.message.method == "classical"
    view = resolve_detached(encoded.data)
    assert isinstance(view, memoryview) and view == FILE_BYTES  # the received bytes, no copy
    assert view.obj is wire
    assert resolve_detached(b"small file") == b"small file"


def test_a_message_type_without_tensors_is_parsed_as_usual() -> None:
    parser = DetachingParser(tensor_pb2.ImageReadOptions)
    assert not parser.holds_tensors
    assert parser.parse(b"\x0a\x03RGB").message.channels == "RGB"


@pytest.mark.parametrize(
    "spoil",
    [
        lambda wire: wire[:-1],  # cut short inside the data
        lambda wire: wire[:3] + b"\xff" * 12 + wire[15:],  # a length varint that never ends
        lambda wire: b"\x0b" + wire,  # a group start: not in proto3
    ],
)
def test_malformed_bytes_raise_protobufs_own_error(spoil: object) -> None:
    wire = spoil(_patches_request(BIG).SerializeToString())  # type: ignore[operator]
    assert len(wire) >= DETACH_MIN_BYTES
    with pytest.raises(DecodeError):
        segmentation_pb2.ExtractPatchesRequest.FromString(wire)
    with pytest.raises(DecodeError):
        DetachingParser(segmentation_pb2.ExtractPatchesRequest).parse(wire)
