"""TensorFlow's TensorProto to and from numpy, as TF Serving reads and writes it."""

from __future__ import annotations

import numpy as np

from labsight.remote import tf_tensor_pb2, tf_tensor_shape_pb2
from labsight.remote import tf_types_pb2 as types

DTYPES: dict[int, np.dtype] = {
    types.DT_FLOAT: np.dtype("<f4"), types.DT_DOUBLE: np.dtype("<f8"), types.DT_HALF: np.dtype("<f2"),
    types.DT_INT8: np.dtype("i1"), types.DT_INT16: np.dtype("<i2"), types.DT_INT32: np.dtype("<i4"),
    types.DT_INT64: np.dtype("<i8"), types.DT_UINT8: np.dtype("u1"), types.DT_UINT16: np.dtype("<u2"),
    types.DT_UINT32: np.dtype("<u4"), types.DT_UINT64: np.dtype("<u8"), types.DT_BOOL: np.dtype("?"),
}
"""The numeric dtypes read, as their little-endian numpy dtypes (tensor_content's byte order)."""

_TYPED_FIELD = {
    types.DT_FLOAT: "float_val", types.DT_DOUBLE: "double_val", types.DT_HALF: "half_val",
    types.DT_INT8: "int_val", types.DT_INT16: "int_val", types.DT_INT32: "int_val",
    types.DT_UINT8: "int_val", types.DT_UINT16: "int_val", types.DT_INT64: "int64_val",
    types.DT_UINT32: "uint32_val", types.DT_UINT64: "uint64_val", types.DT_BOOL: "bool_val",
}


def to_tensor_proto(array: np.ndarray) -> tf_tensor_pb2.TensorProto:
    """A float32 TensorProto of ``array`` with its values as ``tensor_content``."""
    values = np.ascontiguousarray(array, np.dtype("<f4"))
    shape = tf_tensor_shape_pb2.TensorShapeProto(
        dim=[tf_tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in values.shape]
    )
    return tf_tensor_pb2.TensorProto(
        dtype=types.DT_FLOAT, tensor_shape=shape, tensor_content=values.tobytes()
    )


def from_tensor_proto(tensor: tf_tensor_pb2.TensorProto) -> np.ndarray:
    """The values of a numeric TensorProto in its shape, from ``tensor_content`` or its typed field.

    A typed field shorter than the shape is filled with its last value (zeros
    when empty), as TensorFlow reads it.

    Raises
    ------
    ValueError
        For a non-numeric dtype, an unknown or negative shape, or a value count
        that does not fit the shape.
    """
    dtype = DTYPES.get(tensor.dtype)
    if dtype is None:
        name = types.DataType.Name(tensor.dtype) if tensor.dtype in types.DataType.values() else tensor.dtype
        raise ValueError(f"dtype {name} is not a numeric type")
    if tensor.tensor_shape.unknown_rank or any(dim.size < 0 for dim in tensor.tensor_shape.dim):
        raise ValueError("the tensor's shape is not fully known")
    shape = tuple(dim.size for dim in tensor.tensor_shape.dim)
    size = int(np.prod(shape, dtype=np.int64))
    if tensor.tensor_content:
        if len(tensor.tensor_content) != size * dtype.itemsize:
            raise ValueError(
                f"tensor_content has {len(tensor.tensor_content)} bytes; shape {list(shape)} of "
                f"{dtype} needs {size * dtype.itemsize}"
            )
        return np.frombuffer(tensor.tensor_content, dtype).reshape(shape)
    typed = getattr(tensor, _TYPED_FIELD[tensor.dtype])
    if len(typed) > size:
        raise ValueError(f"{len(typed)} values for shape {list(shape)}")
    if tensor.dtype == types.DT_HALF:
        values = np.asarray(typed, np.uint32).astype(np.uint16).view(np.float16)
    else:
        values = np.asarray(typed, dtype)
    filled = np.full(size, values[-1] if len(values) else 0, dtype)
    filled[: len(values)] = values
    return filled.reshape(shape)
