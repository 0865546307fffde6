"""Embeddings of table rows: the first two principal components, coloured by group or by a value."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from labsight.export import combined_table
from labsight.plots.groups import group_colours, legend_columns, ordered_groups, outside_legend
from labsight.plots.values import principal_components, row_values
from labsight.v1 import gateway_pb2 as pb

VALUE_MAP = "viridis"
"""Colour map of continuous values, in every figure."""


@dataclass(frozen=True)
class RowColours:
    """How rows are coloured: by group (``groups``, one per row) or by ``values`` on VALUE_MAP."""

    groups: Sequence[str] | None = None
    values: np.ndarray | None = None
    label: str = ""


def embedding_figure(
    results: Sequence[pb.JobResult], table: str, groups: Sequence[str] | None = None,
    colour_by: str = "",
) -> Figure:
    """PCA of the rows of ``table`` over all results, coloured by each result's group
    (``groups``, one per result), by a value of each row (``colour_by``: a column or PC<k>)
    or, for several results, by result."""
    columns, _, values, _ = combined_table(results, table)
    if len(values) < 2:
        raise ValueError(f"table {table!r}: an embedding needs at least 2 rows, got {len(values)}")
    if colour_by and groups is None:
        figure = Figure(figsize=(7.5, 5), layout="constrained")
        shade, label = row_values(values, columns, colour_by)
        draw_embedding(figure.subplots(), values, table, RowColours(values=shade, label=label))
        return figure
    if groups is None and len(results) > 1:
        groups = [result.input_name or result.job_id for result in results]
    row_groups = None if groups is None else [
        group for result, group in zip(results, groups, strict=True)
        for _ in result.tables[table].row_ids
    ]
    figure = Figure(figsize=(7.5, 5), layout="constrained")
    draw_embedding(figure.subplots(), values, table, RowColours(groups=row_groups))
    if row_groups is not None:  # each legend column takes room of its own, never the points'
        figure.set_size_inches(5.0 + 2.8 * legend_columns(len(set(row_groups))), 5)
    return figure


def draw_embedding(axes: Axes, values: np.ndarray, table: str, colours: RowColours) -> None:
    """Scatter the rows' first two principal components on ``axes``, coloured as ``colours`` says."""
    scores, explained = principal_components(values, 2)
    if colours.groups is not None:
        names = ordered_groups(colours.groups)
        members = np.asarray(colours.groups)
        for name, colour in zip(names, group_colours(len(names)), strict=True):
            rows = members == name
            axes.scatter(scores[rows, 0], scores[rows, 1], s=10, color=colour,
                         label=f"{name} (n={int(rows.sum())})")
        outside_legend(axes)
    elif colours.values is not None:
        points = axes.scatter(scores[:, 0], scores[:, 1], s=10, c=colours.values, cmap=VALUE_MAP)
        axes.figure.colorbar(points, ax=axes, label=colours.label)
    else:
        axes.scatter(scores[:, 0], scores[:, 1], s=10)
    axes.set(xlabel=f"PC1 ({explained[0]:.0%} of variance)",
             ylabel=f"PC2 ({explained[1]:.0%} of variance)",
             title=f"PCA of {values.shape[1]} {table} columns, {len(values)} rows")
