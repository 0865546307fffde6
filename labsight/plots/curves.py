"""Fractal curves: lacunarity Λ(r) and box counts N(r), one line per image or a median band per group."""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce

import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullFormatter, ScalarFormatter

from labsight.plots.groups import (
    Colour,
    group_colours,
    legend_columns,
    ordered_groups,
    outside_legend,
)
from labsight.tables import table_values
from labsight.tensors import from_tensor, write_tensor
from labsight.v1 import gateway_pb2 as pb

MAX_SINGLE_CURVES = 10
"""Up to this many ungrouped images get a line each; more are summarised as a median band."""

LOG_TICKS = (1, 2, 3, 5, 10, 20, 30, 50, 100, 200, 300, 500)
"""Box sides labelled on the log-scaled axis, where they fall within the sides drawn."""

BAND_ALPHA = 0.25

CURVE_TENSORS = ("box_sizes", "lacunarity", "box_count")
"""The result tensors the curves are drawn from."""


def per_image(results: Sequence[pb.JobResult], groups: Sequence[str] | None
              ) -> tuple[list[pb.JobResult], list[str] | None]:
    """Each tile of a tile-stack result (one with scalar ``tiles``) as a result of its own, as the
    curves read one image's (its rows of ``lacunarity`` and ``box_count``, its fitted dimension
    from the ``fractal`` table), named ``<job>[<tile>]``; other results as they are. The groups
    (one per result) repeated to match, or None."""
    images: list[pb.JobResult] = []
    image_groups: list[str] = []
    for index, result in enumerate(results):
        tiles = [result] if "tiles" not in result.scalars else _tile_results(result)
        images.extend(tiles)
        image_groups.extend([groups[index]] * len(tiles) if groups is not None else [])
    return images, (image_groups if groups is not None else None)


_FIT_COLUMNS = {"fractal_dimension": "FractalDimension", "fractal_dimension_r_min": "FractalDimensionRMin",
                "fractal_dimension_r_max": "FractalDimensionRMax"}
"""The scalars of a one-image fractal result and the ``fractal`` table's columns that hold them."""


def _tile_results(result: pb.JobResult) -> list[pb.JobResult]:
    """A tile-stack result's tiles, each as a one-image result of the curves' tensors and scalars."""
    sides_name, lacunarity_name, count_name = CURVE_TENSORS
    table = result.tables["fractal"]
    values = table_values(table, "fractal")
    columns = list(table.columns)
    rows = {name: from_tensor(result.tensors[name], name) for name in (lacunarity_name, count_name)}
    tiles = []
    for row, tile in enumerate(table.row_ids):
        image = pb.JobResult(pipeline=result.pipeline, job_id=result.job_id,
                             input_name=f"{result.input_name or result.job_id}[{tile}]")
        image.tensors[sides_name].CopyFrom(result.tensors[sides_name])
        for name, stacked in rows.items():
            write_tensor(image.tensors[name], stacked[row])
        for scalar, column in _FIT_COLUMNS.items():
            image.scalars[scalar] = float(values[row, columns.index(column)])
        tiles.append(image)
    return tiles


class Curves:
    """The fractal curves of some results on their common box sides (sides every result has)."""

    def __init__(self, results: Sequence[pb.JobResult], group: str) -> None:
        sides_name, lacunarity_name, count_name = CURVE_TENSORS
        all_sides = [from_tensor(r.tensors[sides_name], sides_name).astype(np.int64) for r in results]
        common = reduce(np.intersect1d, all_sides)
        if len(common) == 0:
            raise ValueError(f"{group}: the images share no box size; plot them separately")
        self.sides = common.astype(np.float64)
        lacunarity, counts = [], []
        for result, sides in zip(results, all_sides, strict=True):
            kept = np.isin(sides, common)
            lacunarity.append(from_tensor(result.tensors[lacunarity_name], lacunarity_name)[kept])
            counts.append(from_tensor(result.tensors[count_name], count_name)[kept])
        self.lacunarity = np.array(lacunarity, dtype=np.float64)
        self.counts = np.array(counts, dtype=np.float64)
        self.dimensions = np.array([r.scalars["fractal_dimension"] for r in results])
        # The fit's range of sides, when the result says which sides it used.
        self.r_min = float(np.median([r.scalars.get("fractal_dimension_r_min", common.min())
                                      for r in results]))
        self.r_max = float(np.median([r.scalars.get("fractal_dimension_r_max", common.max())
                                      for r in results]))


def curves_figure(results: Sequence[pb.JobResult], groups: Sequence[str] | None = None) -> Figure:
    """Λ(r) and N(r) on log axes with the fitted dimension's line.

    Without ``groups`` and up to MAX_SINGLE_CURVES images, one coloured line
    per image; otherwise, per group (all images as one group without
    ``groups``), the median curve and its interquartile band. Every group has
    its own colour and a legend entry with its image count and median D.
    """
    figure = Figure(layout="constrained")
    lacunarity_axes, count_axes = figure.subplots(1, 2)
    entries: list[tuple[Artist | tuple[Artist, ...], str]] = []
    if groups is None and len(results) <= MAX_SINGLE_CURVES:
        names = [result.input_name or result.job_id for result in results]
        for result, name, colour in zip(results, names, group_colours(len(results)), strict=True):
            curves = Curves([result], name)
            entries.append(_draw(lacunarity_axes, count_axes, curves, colour,
                                 f"{name}: D = {curves.dimensions[0]:.3f}"))
        legend_title = None
    else:
        members = list(groups) if groups is not None else ["all images"] * len(results)
        names = ordered_groups(members)
        for name, colour in zip(names, group_colours(len(names)), strict=True):
            chosen = [result for result, group in zip(results, members, strict=True) if group == name]
            curves = Curves(chosen, name)
            low, median, high = np.percentile(curves.dimensions, [25, 50, 75])
            spread = f" [{low:.3f}–{high:.3f}]" if len(chosen) > 1 else ""
            entries.append(_draw(lacunarity_axes, count_axes, curves, colour,
                                 f"{name} (n={len(chosen)}): D = {median:.3f}{spread}"))
        legend_title = "median, band: interquartile range"
    lacunarity_axes.set(xlabel="box side r (pixels)", ylabel="lacunarity Λ(r)", title="Lacunarity",
                        xscale="log")
    count_axes.set(xlabel="box side r (pixels)", ylabel="box count N(r)",
                   title="Box counts and fitted fractal dimension D", xscale="log", yscale="log")
    sides = np.concatenate([from_tensor(r.tensors["box_sizes"], "box_sizes") for r in results])
    for axes in (lacunarity_axes, count_axes):
        axes.set_xticks([tick for tick in LOG_TICKS if sides.min() <= tick <= sides.max()])
        axes.xaxis.set_major_formatter(ScalarFormatter())  # r = 3, 10, 20, not 3×10⁰
        axes.xaxis.set_minor_formatter(NullFormatter())
    outside_legend(count_axes, [handle for handle, _ in entries], [label for _, label in entries],
                   legend_title)
    # Each legend column takes room of its own, never the curves'.
    figure.set_size_inches(8.2 + 3.8 * legend_columns(len(entries)), 4.8)
    return figure


def _draw(
    lacunarity_axes: Axes, count_axes: Axes, curves: Curves, colour: Colour, label: str
) -> tuple[Artist | tuple[Artist, ...], str]:
    """Median curves (the curves themselves for one image), their interquartile bands and the
    fitted line; returns the legend entry."""
    _median_and_band(lacunarity_axes, curves.sides, curves.lacunarity, colour)
    handle = _median_and_band(count_axes, curves.sides, curves.counts, colour)
    line = _fitted_line(curves, colour)
    if line is not None:
        count_axes.add_line(line)
    return handle, label


def _median_and_band(
    axes: Axes, sides: np.ndarray, values: np.ndarray, colour: Colour
) -> Artist | tuple[Artist, ...]:
    """The median of ``values`` (a row per image) over ``sides`` and, for several images, its
    interquartile band; returns the legend handle: the line, on its band when there is one."""
    low, median, high = np.percentile(values, [25, 50, 75], axis=0)
    (line,) = axes.plot(sides, median, marker="o", markersize=3, color=colour)
    if len(values) == 1:
        return line
    band = axes.fill_between(sides, low, high, color=colour, alpha=BAND_ALPHA, linewidth=0)
    return band, line


def _fitted_line(curves: Curves, colour: Colour) -> Line2D | None:
    """N = c·r^-D over the fitted range, through the mean log count of the median curve there;
    None when fewer than two sides counted any box."""
    median = np.median(curves.counts, axis=0)
    usable = median > 0  # an empty image counts no box: no point on a log axis
    fitted = usable & (curves.sides >= curves.r_min) & (curves.sides <= curves.r_max)
    if fitted.sum() < 2:
        fitted = usable
    if fitted.sum() < 2:
        return None
    sides, counts = curves.sides[fitted], median[fitted]
    dimension = float(np.median(curves.dimensions))
    log_sides = np.log(sides)
    line = np.exp(np.log(counts).mean() - dimension * (log_sides - log_sides.mean()))
    return Line2D(sides, line, color=colour, linestyle="--", linewidth=1, label="_fit")
