"""How results are kept in Redis: packed where that pays, read back byte for byte."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf.message import DecodeError

from labsight.stored_results import (
    PACK_MIN_BYTES,
    PACKED_MAGIC,
    SIZE_HEAD_BYTES,
    pack_result,
    plain_size,
    unpack_result,
)
from labsight.tensors import to_tensor
from labsight.v1 import gateway_pb2 as pb


def _result(**arrays: np.ndarray) -> bytes:
    result = pb.JobResult(pipeline="cells")
    for name, array in arrays.items():
        result.tensors[name].CopyFrom(to_tensor(array))
    return result.SerializeToString()


def _labels(size: int = 512) -> np.ndarray:
    """A label image as segmentations give them: blocks of one value on a 0 background."""
    labels = np.zeros((size, size), np.uint16)
    step = size // 8
    for index, (y, x) in enumerate(np.ndindex(8, 8)):
        labels[y * step + 4 : (y + 1) * step - 4, x * step + 4 : (x + 1) * step - 4] = index + 1
    return labels


def test_a_result_of_label_images_is_kept_packed_and_read_back_whole() -> None:
    plain = _result(cell_labels=_labels(), nucleus_labels=_labels() // 2)
    kept = pack_result(plain)
    assert kept.startswith(PACKED_MAGIC) and len(kept) < len(plain) / 10
    assert unpack_result(kept) == plain
    assert plain_size(kept[:SIZE_HEAD_BYTES], len(kept)) == len(plain)


@pytest.mark.parametrize("plain", [
    _result(cell_labels=_labels(64)),  # under PACK_MIN_BYTES
    _result(noise=np.random.default_rng(3).integers(0, 256, 1 << 18, dtype=np.uint8)),  # no saving
], ids=["small", "incompressible"])
def test_small_and_incompressible_results_are_kept_as_they_are(plain: bytes) -> None:
    assert pack_result(plain) is plain
    assert unpack_result(plain) is plain
    assert plain_size(plain[:SIZE_HEAD_BYTES], len(plain)) == len(plain)


def test_results_kept_before_packing_existed_still_read() -> None:
    plain = _result(cell_labels=_labels())
    assert len(plain) >= PACK_MIN_BYTES
    assert unpack_result(plain) == plain and pb.JobResult.FromString(unpack_result(plain)).pipeline == "cells"


def test_a_packed_value_can_never_be_read_as_a_job_result() -> None:
    kept = pack_result(_result(cell_labels=_labels()))
    with pytest.raises(DecodeError):
        pb.JobResult.FromString(kept)
    with pytest.raises(DecodeError):
        pb.JobResult.FromString(PACKED_MAGIC)
