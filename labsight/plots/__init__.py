"""Figures of job results to look at: fractal curves, embeddings, results over their image, plates.

``plot_results`` picks the figure from the results (or takes the one asked for)
and writes it as PNG, PDF or SVG; each kind is drawn by its own module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from labsight.export import COORDINATES
from labsight.plots.cell_classes import cell_classes_figure, is_cell_classes_result
from labsight.plots.curves import CURVE_TENSORS, curves_figure, per_image
from labsight.plots.embedding import RowColours, embedding_figure
from labsight.plots.groups import groups_of, read_groups
from labsight.plots.masks import has_masks, load_cells_image, masks_figure
from labsight.plots.plate import plate_figure, well_of
from labsight.plots.tissue import cells_figure, load_image, spots_figure
from labsight.plots.tracks import is_tracks_result, job_tracks_figure
from labsight.plots.values import principal_components, result_values, row_values
from labsight.plots.vessels import is_vessel_result, vessel_figure
from labsight.result import main_table
from labsight.tables import table_values, tables_of
from labsight.v1 import gateway_pb2 as pb

__all__ = ["KINDS", "PlotOptions", "build_figure", "load_cells_image", "load_image", "plot_hints",
           "plot_results", "principal_components", "read_groups", "well_of"]

KINDS = ("auto", "curves", "embedding", "tissue", "plate", "masks", "classes", "vessel", "tracks")
"""Figures ``plot_results`` draws; ``auto`` picks one from the results."""


@dataclass(frozen=True)
class PlotOptions:
    """What to draw beyond the results themselves.

    ``groups`` names one group per result (e.g. a job label); ``group_map``
    maps ids to groups instead (job ids or input names, or for ``tissue`` the
    rows' spot/cell ids). ``colour_by`` is ``PC1``, ``PC2``, ... a table
    column or a result scalar; ``image``, ``cell_labels`` and
    ``spot_diameter`` (pixels) place one result's rows over its image;
    ``ids`` writes the cells' labels on a ``masks`` figure.
    """

    kind: str = "auto"
    table: str = ""
    groups: Sequence[str] | None = None
    group_map: Mapping[str, str] | None = None
    colour_by: str = ""
    image: np.ndarray | None = None
    cell_labels: np.ndarray | None = None
    spot_diameter: float = 0.0
    ids: bool = False


def plot_results(
    results: Sequence[pb.JobResult], path: Path, options: PlotOptions | None = None
) -> str:
    """Draw ``results`` into an image file (PNG, PDF or SVG by its suffix); returns the kind drawn.

    ``auto`` draws fractal results as ``curves``; one cell-tracks result as ``tracks``
    (centroid paths), one vessel-content result as ``vessel``, one hpa-cells result as
    ``classes`` (cells by top class), one other
    segmentation result (label masks) as ``masks``; one result with coordinates
    and a spot diameter or a cell mask as ``tissue``, and anything else as an
    ``embedding`` (PCA of the table rows).

    Raises
    ------
    ValueError
        No results, a kind the results cannot give, a missing table, or too few rows.
    """
    figure, kind = build_figure(results, options or PlotOptions())
    figure.savefig(path, dpi=150)
    return kind


def build_figure(results: Sequence[pb.JobResult], options: PlotOptions) -> tuple[Figure, str]:
    """The figure ``plot_results`` writes, and its kind."""
    if not results:
        raise ValueError("no results to plot")
    kind = choose_kind(results, options)
    fractal = all(result.pipeline == "fractal" for result in results)
    table = options.table or (main_table(results[0]) if results[0].tables else "features")
    if kind == "curves":
        if not fractal:
            raise ValueError("curves are drawn for fractal results only")
        if options.colour_by:
            raise ValueError("curves are coloured by group (a job label or a groups file), "
                             "not by a value")
        figure = curves_figure(*per_image(results, _result_groups(results, options)))
    elif kind == "embedding":
        figure = embedding_figure(results, table, _result_groups(results, options),
                                  options.colour_by)
    elif kind == "tissue":
        figure = _tissue_figure(results, table, options)
    elif kind in SINGLE_RESULT_FIGURES:
        if len(results) != 1:
            raise ValueError(f"{kind} figures show one job's result, got {len(results)}")
        figure = _single_result_figure(kind, results[0], options)
    elif kind == "plate":
        default = "fractal_dimension" if fractal else "PC1"
        values, label = result_values(results, table, options.colour_by or default)
        figure = plate_figure([_name(result) for result in results], values, label)
    else:
        raise ValueError(f"unknown kind {kind!r}; kinds: {', '.join(KINDS)}")
    return figure, kind


SINGLE_RESULT_FIGURES = {
    "tracks": is_tracks_result,
    "vessel": is_vessel_result,
    "classes": is_cell_classes_result,
    "masks": has_masks,
}
"""Figures of one result, by kind, and the test of a result that ``auto`` draws so (in order:
an hpa-cells result also has masks, and is drawn by its classes)."""


def _single_result_figure(kind: str, result: pb.JobResult, options: PlotOptions) -> Figure:
    if kind == "tracks":
        return job_tracks_figure(result, _name(result))
    if kind == "vessel":
        return vessel_figure(result, options.image)
    if kind == "classes":
        return cell_classes_figure(result, options.image)
    return masks_figure(result, options.image, options.ids)


def keep_for_several(result: pb.JobResult) -> pb.JobResult:
    """``result`` cut down in place to what a figure of several results reads, and returned.

    Those figures (curves, embedding, plate) read tables, scalars, names, labels and
    the curves' tensors; masks, crops and probability tensors, drawn for one result
    only, go. A batch's plot then holds each job's tables, not its masks.
    """
    for name in [name for name in result.tensors if name not in CURVE_TENSORS]:
        del result.tensors[name]
    return result


def choose_kind(results: Sequence[pb.JobResult], options: PlotOptions) -> str:
    """The kind ``auto`` stands for with these results and options (or the kind asked for)."""
    if options.kind != "auto":
        return options.kind
    if all(result.pipeline == "fractal" for result in results):
        return "curves"
    if len(results) == 1 and options.cell_labels is None:
        for kind, draws in SINGLE_RESULT_FIGURES.items():
            if draws(results[0]):
                return kind
    placeable = options.spot_diameter > 0 or options.cell_labels is not None
    if len(results) == 1 and COORDINATES in results[0].tensors and placeable:
        return "tissue"
    return "embedding"


def plot_hints(results: Sequence[pb.JobResult], options: PlotOptions, kind: str) -> list[str]:
    """What else the user could have drawn of these results, as one sentence each."""
    hints = []
    if kind == "tissue" and options.image is None:
        hints.append("give the job's input image with --image FILE to draw it underneath")
    if kind == "masks" and options.image is None:
        hints.append("give the job's input image with --image FILE (or one of its channel files, "
                     "ID_red.png) to draw the outlines over the channels")
    if kind == "masks" and not options.ids:
        hints.append("--ids writes each cell's label on it")
    single = len(results) == 1 and COORDINATES in results[0].tensors
    if kind == "embedding" and single and options.spot_diameter <= 0 and options.cell_labels is None:
        hints.append("--cell-labels MASK (and --image FILE) draw the cells over their image")
    names = [_name(result) for result in results]
    if kind == "curves" and len(names) > 1 and all(well_of(name) for name in names):
        hints.append("the image names carry wells: --kind plate draws a plate heatmap")
    return hints


def _tissue_figure(results: Sequence[pb.JobResult], table: str, options: PlotOptions) -> Figure:
    if len(results) != 1:
        raise ValueError(f"tissue figures show one job's result, got {len(results)}")
    (result,) = results
    (entry,) = tables_of(results, table)
    if options.group_map is not None:
        colours = RowColours(groups=groups_of([[row] for row in entry.row_ids], options.group_map,
                                              "rows"))
    else:
        values, label = row_values(table_values(entry, table), list(entry.columns),
                                   options.colour_by or "PC1")
        colours = RowColours(values=values, label=label)
    if options.cell_labels is not None:
        return cells_figure(result, table, options.cell_labels, colours, options.image)
    return spots_figure(result, table, options.spot_diameter, colours, options.image)


def _result_groups(results: Sequence[pb.JobResult], options: PlotOptions) -> Sequence[str] | None:
    """One group per result: ``options.groups``, or looked up by job id or input name."""
    if options.group_map is None:
        return options.groups
    keys = [[result.job_id, result.input_name, Path(result.input_name).name] for result in results]
    return groups_of(keys, options.group_map, "results")


def _name(result: pb.JobResult) -> str:
    return result.input_name or result.job_id
