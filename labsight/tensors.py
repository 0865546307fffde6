"""Tensor codec: numpy arrays to and from labsight.v1.Tensor, validated at the door."""

from __future__ import annotations

import math

import numpy as np

from labsight.errors import InvalidArgument
from labsight.tensor_wire import resolve_detached
from labsight.v1 import tensor_pb2

DataType = tensor_pb2.DataType

_NUMPY_BY_DATA_TYPE: dict[int, np.dtype] = {
    tensor_pb2.DATA_TYPE_UINT8: np.dtype("<u1"),
    tensor_pb2.DATA_TYPE_UINT16: np.dtype("<u2"),
    tensor_pb2.DATA_TYPE_INT16: np.dtype("<i2"),
    tensor_pb2.DATA_TYPE_INT32: np.dtype("<i4"),
    tensor_pb2.DATA_TYPE_UINT32: np.dtype("<u4"),
    tensor_pb2.DATA_TYPE_INT64: np.dtype("<i8"),
    tensor_pb2.DATA_TYPE_FLOAT32: np.dtype("<f4"),
    tensor_pb2.DATA_TYPE_FLOAT64: np.dtype("<f8"),
    tensor_pb2.DATA_TYPE_BOOL: np.dtype("?"),
}
_DATA_TYPE_BY_KIND: dict[tuple[str, int], int] = {
    (dt.kind, dt.itemsize): code for code, dt in _NUMPY_BY_DATA_TYPE.items()
}


def numpy_dtype(data_type: int, field: str = "tensor") -> np.dtype:
    """The little-endian numpy dtype of a DataType value; InvalidArgument if unknown."""
    try:
        return _NUMPY_BY_DATA_TYPE[data_type]
    except KeyError:
        name = DataType.Name(data_type) if data_type in DataType.values() else str(data_type)
        supported = ", ".join(DataType.Name(code) for code in _NUMPY_BY_DATA_TYPE)
        raise InvalidArgument(
            f"{field}.dtype: {name} is not supported; expected one of {supported}"
        ) from None


def to_tensor(array: np.ndarray) -> tensor_pb2.Tensor:
    """Encode an array as a new Tensor (little-endian, C order); see :func:`write_tensor`.

    Raises
    ------
    InvalidArgument
        If the array's dtype has no DataType (e.g. complex, object, float16).
    """
    return write_tensor(tensor_pb2.Tensor(), array)


def write_tensor(tensor: tensor_pb2.Tensor, array: np.ndarray) -> tensor_pb2.Tensor:
    """Encode an array into ``tensor`` in place (little-endian, C order) and return it.

    Write into the field of the message being built (``write_tensor(request.image.tensor,
    pixels)``) rather than passing ``to_tensor(pixels)`` to a constructor or ``CopyFrom``:
    protobuf copies a sub-message handed to it, data and all, while a field written in
    place holds the only copy.

    Parameters
    ----------
    tensor : Tensor
        The message to fill; what it held before is cleared.
    array : array_like
        Any shape and memory layout of a dtype :func:`numpy_dtype` names.

    Returns
    -------
    Tensor
        ``tensor``.

    Raises
    ------
    InvalidArgument
        If the array's dtype has no DataType (e.g. complex, object, float16).

    Notes
    -----
    The bytes are copied once (``tobytes`` writes C order from any layout) and once
    more by protobuf into the message; a big-endian array is swapped first, the only
    case with a further copy.
    """
    tensor.data = describe_tensor(tensor, array).tobytes()
    return tensor


def describe_tensor(tensor: tensor_pb2.Tensor, array: np.ndarray) -> np.ndarray:
    """Set ``tensor``'s dtype and shape for ``array``, clearing the rest, and return the
    array in the little-endian dtype whose C-order bytes are the tensor's data.

    :func:`write_tensor` sets those bytes as ``data``;
    :func:`labsight.tensor_wire.serialize_with_arrays` appends them on the wire.

    Raises
    ------
    InvalidArgument
        If the array's dtype has no DataType (e.g. complex, object, float16).
    """
    array = np.asarray(array)
    code = _DATA_TYPE_BY_KIND.get((array.dtype.kind, array.dtype.itemsize))
    if code is None:
        raise InvalidArgument(f"arrays of dtype {array.dtype} cannot be sent as a Tensor")
    little = array.astype(_NUMPY_BY_DATA_TYPE[code], copy=False)
    tensor.Clear()
    tensor.dtype = code
    tensor.shape.extend(little.shape)
    return little


def narrow_labels(labels: np.ndarray) -> np.ndarray:
    """A label mask in the narrowest of uint16, int32 and uint32 that holds its labels.

    Label tensors go on the wire this way: a mask of fewer than 65536 labels as
    uint16 (half the bytes of int32), else int32, else uint32. A mask already as
    narrow (uint8, or int16 without negative labels), with negative labels or with
    labels beyond uint32 is returned as it is. Costs one pass for the extremes and
    one copy when the dtype changes.

    Raises
    ------
    ValueError
        For an array that is not of an integer dtype.
    """
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise ValueError(f"label mask: expected an integer dtype, got {labels.dtype}")
    low = int(labels.min(initial=0)) if labels.dtype.kind == "i" else 0
    high = int(labels.max(initial=0))
    if low < 0 or labels.dtype.itemsize == 1:
        return labels
    for dtype in (np.uint16, np.int32, np.uint32):
        if high <= np.iinfo(dtype).max:
            wanted = np.dtype(dtype)
            return labels if labels.dtype.itemsize <= wanted.itemsize else labels.astype(wanted)
    return labels


def write_labels(tensor: tensor_pb2.Tensor, labels: np.ndarray) -> tensor_pb2.Tensor:
    """Encode a label mask into ``tensor`` in place in its narrowest dtype
    (:func:`narrow_labels`: uint16 below 65536 labels, else int32) and return it."""
    return write_tensor(tensor, narrow_labels(labels))


def from_tensor(
    tensor: tensor_pb2.Tensor, field: str = "tensor", max_bytes: int | None = None
) -> np.ndarray:
    """Decode a Tensor into a read-only numpy array in native byte order.

    Parameters
    ----------
    tensor : Tensor
        The message to decode.
    field : str
        Name of the request field, used in error messages.
    max_bytes : int, optional
        Reject tensors whose declared size exceeds this.

    Returns
    -------
    ndarray
        Read-only. On a little-endian host (every platform LabSight ships on)
        it is a view of the one ``bytes`` object read from ``data``: the only
        copy between the message and numpy. In a model service, big tensor
        data never entered the message (:mod:`labsight.tensor_wire`): the
        array is a view of the request bytes gRPC received, with no copy. A
        consumer that writes into its input must copy it
        (``np.array(decoded)``), where that write is.

    Raises
    ------
    InvalidArgument
        Unknown dtype, a negative dimension, or ``data`` whose length is not
        ``prod(shape) * itemsize``.
    """
    dtype = numpy_dtype(tensor.dtype, field)
    shape = tuple(int(n) for n in tensor.shape)
    if any(n < 0 for n in shape):
        raise InvalidArgument(f"{field}.shape: dimensions must be >= 0, got {list(shape)}")
    expected = math.prod(shape) * dtype.itemsize
    if max_bytes is not None and expected > max_bytes:
        raise InvalidArgument(
            f"{field}: shape {list(shape)} needs {expected} bytes, over the limit of {max_bytes}"
        )
    # every read of a bytes field copies it out of the message: read once; data a model
    # service left on the wire (labsight.tensor_wire) is a view of the received request
    data = resolve_detached(tensor.data)
    if len(data) != expected:
        raise InvalidArgument(
            f"{field}.data: {len(data)} bytes do not match shape {list(shape)} of "
            f"{DataType.Name(tensor.dtype)} ({expected} bytes expected)"
        )
    array = np.frombuffer(data, dtype=dtype).reshape(shape)
    return array if dtype.isnative else array.astype(dtype.newbyteorder("="))
