"""Wire-format pieces parse back into the messages they stand for."""

from __future__ import annotations

import numpy as np
import pytest

from labsight.v1 import features_pb2 as pb
from labsight.wire import length_delimited, packed_doubles, varint, varint_field


def test_varints_are_base_128_little_end_first() -> None:
    assert varint(0) == b"\x00"
    assert varint(127) == b"\x7f"
    assert varint(300) == b"\xac\x02"
    assert varint(2**63) == b"\x80" * 9 + b"\x01"
    with pytest.raises(ValueError, match=">= 0"):
        varint(-1)


def test_a_sub_message_of_packed_doubles_parses_as_built_from_floats() -> None:
    values = np.random.default_rng(0).random(1682)  # r = 41: masses 0 to 41²
    values[:3] = [0.0, -0.0, np.inf]
    expected = pb.ComputeFractalResponse(
        probabilities=[pb.MassProbability(box_size=41, probability=values.tolist()),
                       pb.MassProbability(box_size=3, probability=[])]
    )
    built = pb.ComputeFractalResponse()
    built.MergeFromString(
        length_delimited(2, varint_field(1, 41) + packed_doubles(2, values))
        + length_delimited(2, varint_field(1, 3) + packed_doubles(2, np.zeros(0)))
    )
    assert built == expected
    assert built.SerializeToString() == expected.SerializeToString()
