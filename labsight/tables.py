"""FeatureTable messages to and from numpy: named columns, row ids, float64 values."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from labsight.errors import InvalidArgument
from labsight.tensors import from_tensor, to_tensor
from labsight.v1 import gateway_pb2, tensor_pb2

ROW_NAMES = "row_names"
"""JobResult.provenance key: the stack whose images' names (JobInput.tensor_names) are the
result's row ids; exports of several results keep such ids as they are."""


def feature_table(
    columns: Sequence[str], values: np.ndarray, row_ids: Sequence[str]
) -> tensor_pb2.FeatureTable:
    """A FeatureTable of ``values`` (rows x columns, cast to float64)."""
    matrix = np.asarray(values, dtype=np.float64)
    if matrix.shape != (len(row_ids), len(columns)):
        raise ValueError(
            f"values of shape {matrix.shape} do not match {len(row_ids)} rows x {len(columns)} columns"
        )
    return tensor_pb2.FeatureTable(
        columns=list(columns), row_ids=list(row_ids), values=to_tensor(matrix)
    )


def feature_row(named_values: Mapping[str, float], row_id: str) -> tensor_pb2.FeatureTable:
    """A one-row FeatureTable from an ordered mapping of column name to value."""
    values = np.array([list(named_values.values())], dtype=np.float64)
    return feature_table(list(named_values), values, [row_id])


def table_values(table: tensor_pb2.FeatureTable, field: str = "table") -> np.ndarray:
    """The table's values as a (rows, columns) float64 array, shape checked."""
    values = from_tensor(table.values, f"{field}.values")
    expected = (len(table.row_ids), len(table.columns))
    if values.shape != expected:
        raise InvalidArgument(f"{field}.values: shape {list(values.shape)}, expected {list(expected)}")
    return values


def table_records(table: tensor_pb2.FeatureTable) -> list[dict[str, float | str]]:
    """The table as a list of row dicts ``{"id": row_id, column: value, ...}``."""
    values = table_values(table)
    return [
        {"id": row_id, **dict(zip(table.columns, map(float, row), strict=True))}
        for row_id, row in zip(table.row_ids, values, strict=True)
    ]


def tables_of(results: Sequence[gateway_pb2.JobResult], table: str) -> list[tensor_pb2.FeatureTable]:
    """The table ``table`` of every result, all with the same columns.

    Raises
    ------
    ValueError
        Naming the job whose result lacks the table or has other columns than the first.
    """
    tables = []
    for result in results:
        if table not in result.tables:
            raise ValueError(f"result of job {result.job_id} has no table {table!r}; "
                             f"tables: {sorted(result.tables)}")
        entry = result.tables[table]
        if tables and list(entry.columns) != list(tables[0].columns):
            raise ValueError(f"job {result.job_id}: table {table!r} has other columns than the first")
        tables.append(entry)
    return tables
