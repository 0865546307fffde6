"""JobResult messages as plain Python values, ready for JSON."""

from __future__ import annotations

from typing import Any

from labsight.tables import table_records
from labsight.tensors import from_tensor
from labsight.v1 import gateway_pb2 as pb

MAX_JSON_ELEMENTS = 100_000
"""Tensors larger than this appear in JSON as dtype and shape only."""


def result_to_dict(result: pb.JobResult, max_elements: int = MAX_JSON_ELEMENTS) -> dict[str, Any]:
    """A JSON-ready dict: tables as row records, small tensors as nested lists, scalars."""
    tensors: dict[str, Any] = {}
    for name, tensor in sorted(result.tensors.items()):
        array = from_tensor(tensor, f"tensors[{name}]")
        if array.size <= max_elements:
            tensors[name] = array.tolist()
        else:
            tensors[name] = {"dtype": str(array.dtype), "shape": list(array.shape)}
    return {
        "tables": {name: table_records(table) for name, table in sorted(result.tables.items())},
        "tensors": tensors,
        "scalars": dict(sorted(result.scalars.items())),
    }
