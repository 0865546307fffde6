"""Numbers that figures colour by: principal components of table rows, named columns, scalars."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from labsight.tables import table_values, tables_of
from labsight.v1 import gateway_pb2 as pb

COMPONENT = re.compile(r"PC([1-9][0-9]*)", re.IGNORECASE)


def principal_components(values: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores of the first ``count`` principal components of the rows, and each one's share of variance.

    Components beyond min(rows, columns) come out as zeros, with a share of 0.
    """
    centred = values - values.mean(axis=0)
    left, singular, _ = np.linalg.svd(centred, full_matrices=False)
    scores = np.zeros((len(values), count))
    shares = np.zeros(count)
    kept = min(count, len(singular))
    scores[:, :kept] = left[:, :kept] * singular[:kept]
    total = float(np.sum(singular**2))
    if total > 0:
        shares[:kept] = singular[:kept] ** 2 / total
    return scores, shares


def row_values(values: np.ndarray, columns: Sequence[str], name: str) -> tuple[np.ndarray, str]:
    """One number per row to colour by, and its label: ``PC<k>`` of the rows or a column by name.

    Raises
    ------
    ValueError
        A name that is neither, or a component of fewer than two rows.
    """
    component = COMPONENT.fullmatch(name)
    if component:
        index = int(component.group(1))
        if len(values) < 2:
            raise ValueError(f"{name}: principal components need at least 2 rows, got {len(values)}")
        scores, shares = principal_components(values, index)
        return scores[:, index - 1], f"PC{index} ({shares[index - 1]:.0%} of variance)"
    if name in columns:
        return values[:, list(columns).index(name)], name
    shown = ", ".join(list(columns)[:5]) + (", ..." if len(columns) > 5 else "")
    raise ValueError(f"colour by {name!r}: not PC1, PC2, ... nor a column of the table ({shown})")


def result_values(
    results: Sequence[pb.JobResult], table: str, name: str
) -> tuple[np.ndarray, str]:
    """One number per result and its label: a scalar every result has (``fractal_dimension``),
    else ``row_values`` of each result's mean table row (PC1, or a column by name).

    Raises
    ------
    ValueError
        A result without the table, tables whose columns differ, or as :func:`row_values`.
    """
    if all(name in result.scalars for result in results):
        return np.array([result.scalars[name] for result in results]), name
    entries = tables_of(results, table)
    means = [table_values(entry, table).mean(axis=0) for entry in entries]
    values, label = row_values(np.array(means), list(entries[0].columns), name)
    if any(len(entry.row_ids) > 1 for entry in entries):
        label += " of each image's mean row"
    return values, label
