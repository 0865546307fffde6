"""Row ids of a stack's images: their names where the job gives them, checked again in the worker."""

from __future__ import annotations

import pytest

from labsight.errors import InvalidArgument
from labsight.v1 import gateway_pb2 as pb
from services.gateway.pipelines.base import stack_row_ids


def test_a_stack_without_names_has_index_rows() -> None:
    assert stack_row_ids(pb.JobInput(), "tiles", 3) == ["0", "1", "2"]


def test_named_images_name_their_rows_in_order() -> None:
    job_input = pb.JobInput()
    job_input.tensor_names["tiles"].names.extend(["b.png", "a.png"])
    assert stack_row_ids(job_input, "tiles", 2) == ["b.png", "a.png"]
    assert stack_row_ids(job_input, "patches", 2) == ["0", "1"]  # another stack's names


def test_names_that_do_not_count_the_images_are_refused_naming_the_field() -> None:
    job_input = pb.JobInput()
    job_input.tensor_names["tiles"].names.extend(["a.png"])
    with pytest.raises(InvalidArgument, match=r"input.tensor_names\[tiles\]: 1 names for the 3 images"):
        stack_row_ids(job_input, "tiles", 3)
