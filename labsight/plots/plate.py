"""Plate heatmaps: one value per well of a 96- or 384-well plate, wells read from image names."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from labsight.plots.embedding import VALUE_MAP

WELL = re.compile(r"(?<![A-Za-z0-9])([A-P])([0-9]{1,2})(?![A-Za-z0-9])")
"""A well name as a token of an id: a row letter A-P and a column number, e.g. ``C05`` in
``plate1_C05_s2.tif`` or ``B12`` in ``B12.png`` (upper case, so ``f1`` field suffixes are not wells)."""

PLATES = ((8, 12), (16, 24))
"""Rows and columns of the plates drawn: 96 and 384 wells."""

FIGURE_SIZES = {(8, 12): (9.0, 5.5), (16, 24): (14.0, 8.0)}
"""Figure size in inches of each plate, with room for its colour bar."""

ANNOTATED_WELLS = 96
"""Plates up to this many wells get each well's value written in it."""


def well_of(name: str) -> tuple[int, int] | None:
    """(row, column) from 0 of the first well-name token of ``name`` (columns 1-24), or None."""
    for match in WELL.finditer(name):
        column = int(match.group(2))
        if 1 <= column <= PLATES[-1][1]:
            return ord(match.group(1)) - ord("A"), column - 1
    return None


def plate_grid(names: Sequence[str], values: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Per well of the smallest plate that holds every named well: the median value of its images
    (NaN for none) and their count, and the names that carry no well.

    Raises
    ------
    ValueError
        When no name carries a well.
    """
    wells = [well_of(name) for name in names]
    found = [(well, value) for well, value in zip(wells, values, strict=True) if well is not None]
    if not found:
        raise ValueError("no id carries a well name (A01 to P24 as a token, e.g. plate1_C05_s1.tif)")
    rows, columns = next(
        (plate for plate in PLATES
         if all(row < plate[0] and column < plate[1] for (row, column), _ in found)),
    )
    grid = np.full((rows, columns), np.nan)
    counts = np.zeros((rows, columns), dtype=np.int64)
    per_well: dict[tuple[int, int], list[float]] = {}
    for well, value in found:
        per_well.setdefault(well, []).append(float(value))
    for (row, column), well_values in per_well.items():
        grid[row, column] = np.median(well_values)
        counts[row, column] = len(well_values)
    return grid, counts, [name for name, well in zip(names, wells, strict=True) if well is None]


def plate_figure(names: Sequence[str], values: np.ndarray, label: str) -> Figure:
    """A heatmap of ``values`` (one per image, its well read from its name) on the plate, row
    letters down and column numbers across; empty wells grey, several images a well by median."""
    grid, counts, unplaced = plate_grid(names, values)
    rows, columns = grid.shape
    figure = Figure(figsize=FIGURE_SIZES[rows, columns], layout="constrained")
    axes = figure.subplots()
    colour_map = colormaps[VALUE_MAP].with_extremes(bad=(0.88, 0.88, 0.88))
    heatmap = axes.imshow(np.ma.masked_invalid(grid), cmap=colour_map, aspect="equal")
    figure.colorbar(heatmap, ax=axes, label=label, shrink=0.9)
    axes.set_xticks(range(columns), [str(c + 1) for c in range(columns)])
    axes.set_yticks(range(rows), [chr(ord("A") + r) for r in range(rows)])
    axes.tick_params(top=True, labeltop=True, bottom=False, labelbottom=False, length=0)
    axes.set_xticks(np.arange(columns + 1) - 0.5, minor=True)
    axes.set_yticks(np.arange(rows + 1) - 0.5, minor=True)
    axes.grid(which="minor", color="white", linewidth=1.5)
    axes.tick_params(which="minor", length=0)
    if rows * columns <= ANNOTATED_WELLS:
        for row, column in zip(*np.nonzero(counts), strict=True):
            red, green, blue, _ = heatmap.to_rgba(grid[row, column])
            dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
            axes.text(column, row, f"{grid[row, column]:.3g}", ha="center", va="center",
                      fontsize="small", color="white" if dark else "black")
    title = f"{label}: {int(counts.sum())} images in {int((counts > 0).sum())} of {rows * columns} wells"
    if counts.max() > 1:
        title += " (median of a well's images)"
    if unplaced:
        title += f"\n{len(unplaced)} images without a well name left out, e.g. {unplaced[0]}"
    axes.set_title(title, fontsize="medium")
    return figure
