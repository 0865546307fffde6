"""Open Inference Protocol tensor contents: raw and typed elements to numpy, checked, and back."""

from __future__ import annotations

import re

import numpy as np
import pytest

from labsight.errors import InvalidArgument
from labsight.oip import grpc_predict_v2_pb2 as pb
from labsight.oip.contents import input_array, output_tensor

Tensor = pb.ModelInferRequest.InferInputTensor


def test_raw_and_typed_contents_give_the_same_array() -> None:
    values = np.arange(6, dtype=np.float32).reshape(2, 3) / 7
    typed = Tensor(name="x", datatype="FP32", shape=[2, 3])
    typed.contents.fp32_contents.extend(values.ravel().tolist())
    raw = input_array(Tensor(name="x", datatype="FP32", shape=[2, 3]), values.tobytes(), "x")
    np.testing.assert_array_equal(raw, values)
    np.testing.assert_array_equal(input_array(typed, None, "x"), values)


def test_integer_and_boolean_typed_contents_keep_their_datatype() -> None:
    pixels = Tensor(name="p", datatype="UINT8", shape=[3])
    pixels.contents.uint_contents.extend([0, 7, 255])
    assert input_array(pixels, None, "p").dtype == np.uint8
    flags = Tensor(name="f", datatype="BOOL", shape=[2])
    flags.contents.bool_contents.extend([True, False])
    np.testing.assert_array_equal(input_array(flags, None, "f"), [True, False])


@pytest.mark.parametrize(
    ("tensor", "raw", "message"),
    [
        (Tensor(name="x", datatype="FP8", shape=[1]), b"\0", "x: datatype 'FP8' is not one of"),
        (Tensor(name="x", datatype="FP32", shape=[-1, 2]), b"", "x: shape [-1, 2] has a negative axis"),
        (Tensor(name="x", datatype="FP32", shape=[2]), b"\0" * 7, "x: raw_input_contents holds 7 bytes"),
        (Tensor(name="x", datatype="FP16", shape=[1]), None, "x: FP16 has no typed contents"),
        (Tensor(name="x", datatype="UINT8", shape=[1], contents=pb.InferTensorContents(uint_contents=[256])),
         None, "x: contents.uint_contents holds values outside UINT8's range [0, 255]"),
        (Tensor(name="x", datatype="INT32", shape=[1], contents=pb.InferTensorContents(fp32_contents=[1])),
         None, "x: contents.fp32_contents is set; a INT32 tensor carries its elements in contents.int_"),
        (Tensor(name="x", datatype="FP32", shape=[1], contents=pb.InferTensorContents(fp32_contents=[1])),
         b"\0" * 4, "x: contents and raw_input_contents are both set"),
    ],
)
def test_bad_contents_are_refused_naming_the_tensor(tensor: Tensor, raw: bytes | None, message: str) -> None:
    with pytest.raises(InvalidArgument, match="^" + re.escape(message)):
        input_array(tensor, raw, "x")


def test_outputs_travel_as_little_endian_row_major_bytes() -> None:
    values = np.arange(6, dtype=np.float32).reshape(3, 2)
    tensor, data = output_tensor("y", values.T)  # not C-contiguous
    assert (tensor.name, tensor.datatype, list(tensor.shape)) == ("y", "FP32", [2, 3])
    np.testing.assert_array_equal(np.frombuffer(data, "<f4").reshape(2, 3), values.T)
