"""Tensor contents of the Open Inference Protocol: datatypes, raw and typed elements to numpy and back.

An input tensor carries its elements either as raw little-endian row-major
bytes (one ``raw_input_contents`` entry per input) or as typed values in the
``InferTensorContents`` field of its datatype; outputs go back as raw bytes,
as Triton answers them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from labsight.errors import InvalidArgument, echo
from labsight.oip import grpc_predict_v2_pb2 as pb


@dataclass(frozen=True)
class Datatype:
    """One datatype of the protocol: its numpy dtype and the typed-contents field that carries it."""

    dtype: np.dtype
    contents_field: str


DATATYPES: dict[str, Datatype] = {
    "BOOL": Datatype(np.dtype(np.bool_), "bool_contents"),
    "UINT8": Datatype(np.dtype("<u1"), "uint_contents"),
    "UINT16": Datatype(np.dtype("<u2"), "uint_contents"),
    "UINT32": Datatype(np.dtype("<u4"), "uint_contents"),
    "UINT64": Datatype(np.dtype("<u8"), "uint64_contents"),
    "INT8": Datatype(np.dtype("<i1"), "int_contents"),
    "INT16": Datatype(np.dtype("<i2"), "int_contents"),
    "INT32": Datatype(np.dtype("<i4"), "int_contents"),
    "INT64": Datatype(np.dtype("<i8"), "int64_contents"),
    "FP16": Datatype(np.dtype("<f2"), ""),
    "FP32": Datatype(np.dtype("<f4"), "fp32_contents"),
    "FP64": Datatype(np.dtype("<f8"), "fp64_contents"),
}
"""The numeric datatypes (BYTES, variable-length strings, is not among them); FP16 travels only raw."""

CONTENTS_FIELDS = tuple(field.name for field in pb.InferTensorContents.DESCRIPTOR.fields)
"""Every typed-contents field, to find those a tensor sets besides its own."""


def datatype_of(dtype: np.dtype) -> str:
    """The protocol's name of a numpy dtype (``float32`` → ``FP32``)."""
    for name, datatype in DATATYPES.items():
        if datatype.dtype == dtype.newbyteorder("<"):
            return name
    raise ValueError(f"no Open Inference Protocol datatype for numpy dtype {dtype}")


def input_array(
    tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes | None, field: str
) -> np.ndarray:
    """The elements of one input tensor as an array of its datatype and shape.

    Parameters
    ----------
    tensor : ModelInferRequest.InferInputTensor
        The input: its name, datatype, shape and (unless ``raw`` is given) typed contents.
    raw : bytes or None
        Its ``raw_input_contents`` entry; None when the request sends typed contents.
    field : str
        How errors name the tensor, e.g. ``inputs[0] ('input')``.

    Raises
    ------
    InvalidArgument
        For an unknown datatype, a negative axis, raw bytes of the wrong length,
        typed contents of the wrong count or in another datatype's field, naming
        the tensor.
    """
    datatype = DATATYPES.get(tensor.datatype)
    if datatype is None:
        raise InvalidArgument(f"{field}: datatype {echo(tensor.datatype)} is not one of {list(DATATYPES)}")
    shape = tuple(tensor.shape)
    if any(axis < 0 for axis in shape):
        raise InvalidArgument(f"{field}: shape {list(shape)} has a negative axis")
    count = math.prod(shape)
    if raw is not None:
        if tensor.HasField("contents"):
            raise InvalidArgument(f"{field}: contents and raw_input_contents are both set; send one")
        expected = count * datatype.dtype.itemsize
        if len(raw) != expected:
            raise InvalidArgument(
                f"{field}: raw_input_contents holds {len(raw)} bytes; shape {list(shape)} of "
                f"{tensor.datatype} takes {expected}"
            )
        return np.frombuffer(raw, datatype.dtype).reshape(shape)
    return _typed(tensor, datatype, shape, count, field)


def _typed(
    tensor: pb.ModelInferRequest.InferInputTensor,
    datatype: Datatype,
    shape: tuple[int, ...],
    count: int,
    field: str,
) -> np.ndarray:
    """The typed contents of ``tensor``, checked against its datatype and element count."""
    if not datatype.contents_field:
        raise InvalidArgument(f"{field}: {tensor.datatype} has no typed contents; send raw_input_contents")
    others = [name for name in CONTENTS_FIELDS
              if name != datatype.contents_field and len(getattr(tensor.contents, name))]
    if others:
        raise InvalidArgument(
            f"{field}: contents.{others[0]} is set; a {tensor.datatype} tensor carries its elements "
            f"in contents.{datatype.contents_field}"
        )
    values: Sequence[object] = getattr(tensor.contents, datatype.contents_field)
    if len(values) != count:
        raise InvalidArgument(
            f"{field}: contents.{datatype.contents_field} holds {len(values)} elements; shape "
            f"{list(shape)} takes {count}"
        )
    array = np.asarray(values)
    if array.size and np.issubdtype(datatype.dtype, np.integer):
        info = np.iinfo(datatype.dtype)
        if array.min() < info.min or array.max() > info.max:
            raise InvalidArgument(
                f"{field}: contents.{datatype.contents_field} holds values outside {tensor.datatype}'s "
                f"range [{info.min}, {info.max}]"
            )
    return array.astype(datatype.dtype).reshape(shape)


def output_tensor(
    name: str, array: np.ndarray
) -> tuple[pb.ModelInferResponse.InferOutputTensor, bytes]:
    """One output's tensor description and its raw little-endian row-major bytes."""
    datatype = datatype_of(array.dtype)
    data = np.ascontiguousarray(array, DATATYPES[datatype].dtype).tobytes()
    tensor = pb.ModelInferResponse.InferOutputTensor(name=name, datatype=datatype, shape=list(array.shape))
    return tensor, data
