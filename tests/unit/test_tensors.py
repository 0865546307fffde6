"""The tensor codec round-trips every dtype, decodes without copying past the one read of
``data``, encodes in place, sends label masks in their narrowest dtype, and rejects malformed
tensors with named fields."""

from __future__ import annotations

import numpy as np
import pytest

from labsight.errors import InvalidArgument
from labsight.images import decode_image
from labsight.tensors import from_tensor, narrow_labels, to_tensor, write_labels, write_tensor
from labsight.v1 import segmentation_pb2, tensor_pb2


@pytest.mark.parametrize(
    "dtype", ["uint8", "uint16", "int16", "int32", "uint32", "int64", "float32", "float64", "bool"]
)
def test_round_trip_keeps_values_shape_and_dtype(dtype: str) -> None:
    rng = np.random.default_rng(0)
    array = (rng.random((3, 4, 2)) * 100).astype(dtype)
    decoded = from_tensor(to_tensor(array))
    assert decoded.dtype == array.dtype
    assert decoded.shape == (3, 4, 2)
    np.testing.assert_array_equal(decoded, array)


def test_big_endian_input_is_sent_little_endian() -> None:
    array = np.arange(6, dtype=">u2").reshape(2, 3)
    tensor = to_tensor(array)
    assert tensor.data == np.arange(6, dtype="<u2").tobytes()
    np.testing.assert_array_equal(from_tensor(tensor), array)


def test_non_contiguous_views_are_encoded_in_c_order() -> None:
    array = np.arange(12, dtype=np.int32).reshape(3, 4).T
    np.testing.assert_array_equal(from_tensor(to_tensor(array)), array)


def test_scalar_and_empty_tensors() -> None:
    assert from_tensor(to_tensor(np.float64(2.5))).item() == 2.5
    assert from_tensor(to_tensor(np.zeros((0, 3), np.uint8))).shape == (0, 3)


def test_byte_length_mismatch_names_field_and_sizes() -> None:
    tensor = tensor_pb2.Tensor(dtype=tensor_pb2.DATA_TYPE_UINT16, shape=[2, 3], data=b"\0" * 10)
    with pytest.raises(InvalidArgument, match=r"image\.tensor\.data: 10 bytes .* \(12 bytes expected\)"):
        from_tensor(tensor, "image.tensor")


def test_unspecified_dtype_is_rejected() -> None:
    tensor = tensor_pb2.Tensor(shape=[1], data=b"\0")
    with pytest.raises(InvalidArgument, match=r"t\.dtype: DATA_TYPE_UNSPECIFIED is not supported"):
        from_tensor(tensor, "t")


def test_unknown_dtype_number_is_rejected() -> None:
    tensor = tensor_pb2.Tensor(dtype=77, shape=[1], data=b"\0")
    with pytest.raises(InvalidArgument, match=r"dtype: 77 is not supported"):
        from_tensor(tensor)


def test_negative_dimension_is_rejected() -> None:
    tensor = tensor_pb2.Tensor(dtype=tensor_pb2.DATA_TYPE_UINT8, shape=[-1, 2], data=b"")
    with pytest.raises(InvalidArgument, match="dimensions must be >= 0"):
        from_tensor(tensor)


def test_declared_size_over_limit_is_rejected_before_reading() -> None:
    tensor = tensor_pb2.Tensor(dtype=tensor_pb2.DATA_TYPE_FLOAT64, shape=[10**6, 10**6])
    with pytest.raises(InvalidArgument, match="over the limit"):
        from_tensor(tensor, max_bytes=1024)


def test_unsupported_numpy_dtype_cannot_be_sent() -> None:
    with pytest.raises(InvalidArgument, match="complex128"):
        to_tensor(np.zeros(2, np.complex128))


def _owner(array: np.ndarray) -> object:
    """The object at the end of an array's chain of bases (what holds its memory)."""
    owner: object = array
    while isinstance(owner, np.ndarray) and owner.base is not None:
        owner = owner.base
    return owner


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int32", "float32", "float64", "bool"])
def test_decoded_array_is_a_read_only_view_of_the_data_read_once(dtype: str) -> None:
    array = np.arange(24).reshape(2, 3, 4).astype(dtype)
    tensor = to_tensor(array)
    decoded = from_tensor(tensor)
    owner = _owner(decoded)
    # One bytes object read from the message holds the pixels; the array is a view of it.
    assert isinstance(owner, bytes) and owner == tensor.data
    assert np.shares_memory(decoded, np.frombuffer(owner, np.uint8))
    assert not decoded.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        decoded[0, 0, 0] = 1


def test_write_tensor_fills_a_nested_field_in_place() -> None:
    pixels = np.arange(12, dtype=np.uint16).reshape(3, 4)
    request = segmentation_pb2.ExtractPatchesRequest(spot_diameter=2)
    write_tensor(request.image.tensor, pixels)
    assert request.HasField("image") and request.image.WhichOneof("source") == "tensor"
    assert request.image.tensor.data == pixels.tobytes()
    np.testing.assert_array_equal(from_tensor(request.image.tensor), pixels)


def test_write_tensor_replaces_what_the_tensor_held() -> None:
    tensor = to_tensor(np.zeros((2, 3), np.int32))
    assert write_tensor(tensor, np.arange(4, dtype=np.uint8)) is tensor
    assert (tensor.dtype, list(tensor.shape), tensor.data) == (
        tensor_pb2.DATA_TYPE_UINT8, [4], bytes(range(4))
    )


def test_tensor_image_is_read_without_copying_its_pixels() -> None:
    pixels = np.arange(64 * 48 * 3, dtype=np.uint16).reshape(64, 48, 3)
    image = tensor_pb2.Image()
    write_tensor(image.tensor, pixels)
    read = decode_image(image)  # what ExtractPatches and every other servicer reads
    np.testing.assert_array_equal(read, pixels)
    assert isinstance(_owner(read), bytes)


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        (tensor_pb2.Tensor(dtype=tensor_pb2.DATA_TYPE_UINT16, shape=[4, 4], data=b"\0" * 31),
         r"image\.tensor\.data: 31 bytes do not match shape \[4, 4\]"),
        (tensor_pb2.Tensor(dtype=99, shape=[4, 4], data=b"\0" * 16),
         r"image\.tensor\.dtype: 99 is not supported"),
        (tensor_pb2.Tensor(dtype=tensor_pb2.DATA_TYPE_UINT8, shape=[4, -4], data=b""),
         r"image\.tensor\.shape: dimensions must be >= 0"),
    ],
)
def test_malformed_image_tensor_is_refused_naming_the_field(
    tensor: tensor_pb2.Tensor, message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        decode_image(tensor_pb2.Image(tensor=tensor), "image")


@pytest.mark.parametrize(("dtype", "top", "sent"), [
    ("int32", 65535, "uint16"),
    ("int64", 65535, "uint16"),
    ("uint32", 300, "uint16"),
    ("int32", 65536, "int32"),
    ("int64", 2**31 - 1, "int32"),
    ("int64", 2**31, "uint32"),
    ("int64", 2**32, "int64"),  # beyond uint32: as it is
    ("uint8", 200, "uint8"),  # already narrower than uint16
    ("int16", 3000, "int16"),  # as narrow, no negative label
])
def test_label_masks_go_in_the_narrowest_dtype_that_holds_them(dtype: str, top: int, sent: str) -> None:
    labels = np.zeros((4, 5), dtype)
    labels[1, 2], labels[3, 4] = 1, top
    tensor = write_labels(tensor_pb2.Tensor(), labels)
    decoded = from_tensor(tensor)
    assert decoded.dtype == np.dtype(sent)
    np.testing.assert_array_equal(decoded, labels)
    assert len(tensor.data) == labels.size * np.dtype(sent).itemsize


def test_negative_labels_keep_their_dtype_and_other_arrays_are_refused() -> None:
    labels = np.array([[0, -1], [2, 3]], np.int32)
    assert narrow_labels(labels) is labels
    assert narrow_labels(np.zeros((0, 3), np.int32)).dtype == np.uint16
    with pytest.raises(ValueError, match="integer dtype"):
        narrow_labels(np.zeros((2, 2), np.float32))
