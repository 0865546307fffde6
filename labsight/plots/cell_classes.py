"""An ``hpa-cells`` result to look at: every cell filled with the colour of its most probable class,
a legend of the classes found (with their cell counts), and with the image, the cells' outlines in
those colours over the channels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from labsight.plots.masks import composite
from labsight.plots.scale_bar import add_scale_bar
from labsight.plots.tissue import cell_outlines, display_step
from labsight.result import Result
from labsight.tables import table_values
from labsight.tensors import from_tensor
from labsight.v1 import gateway_pb2 as pb

__all__ = ["HPA_CELLS", "cell_classes_figure", "class_colours", "is_cell_classes_result",
           "write_cell_classes_figure"]

HPA_CELLS = "hpa-cells"


def is_cell_classes_result(result: pb.JobResult) -> bool:
    """True for an ``hpa-cells`` result with its cell labels and classes table."""
    return (result.pipeline == HPA_CELLS and "cell_labels" in result.tensors
            and "classes" in result.tables)


def class_colours(count: int) -> np.ndarray:
    """One RGB colour per class index (matplotlib's tab20, so 19 classes stay apart)."""
    return np.asarray(colormaps["tab20"](np.arange(count) % 20))[:, :3]


def cell_classes_figure(result: pb.JobResult, image: np.ndarray | None = None) -> Figure:
    """Cells coloured by their top class, with a legend of the classes found; with ``image``
    (the job's 4 channels) a second panel draws the cells' outlines in those colours over it.
    Each panel has a scale bar where the result states its pixel size.

    Raises
    ------
    ValueError
        For another result, or an image whose size is not the cell mask's.
    """
    if not is_cell_classes_result(result):
        raise ValueError(f"the result of job {result.job_id} ({result.pipeline}) has no cell classes "
                         "(an hpa-cells result has)")
    cells = from_tensor(result.tensors["cell_labels"], "cell_labels")
    if image is not None and image.shape[:2] != cells.shape:
        raise ValueError(f"the image's shape {list(image.shape[:2])} is not the cell mask's "
                         f"{list(cells.shape)}")
    names = result.provenance.get("classifier_classes", "").split("; ")
    table = result.tables["classes"]
    values = table_values(table, "classes")
    columns = list(table.columns)
    labels = values[:, columns.index("label")].astype(np.int64)
    top = values[:, columns.index("top_class")].astype(np.int64)
    colours = class_colours(len(names))
    lookup = np.zeros(int(max(cells.max(initial=0), labels.max(initial=0))) + 1, np.int64)
    lookup[labels] = top + 1  # 0: background or an unclassified cell
    step = display_step(cells.shape)
    shown = cells[::step, ::step]
    classes = lookup[shown]
    filled = np.zeros((*shown.shape, 3))
    filled[classes > 0] = colours[classes[classes > 0] - 1]
    filled[cell_outlines(shown)] = 0.0
    panels = 2 if image is not None else 1
    figure = Figure(figsize=(7 * panels + 3, 6.5), layout="constrained")
    axes = figure.subplots(1, panels, squeeze=False)[0]
    height, width = cells.shape
    extent = (-0.5, width - 0.5, height - 0.5, -0.5)
    axes[0].imshow(filled, extent=extent, interpolation="nearest")
    axes[0].set(aspect="equal", xlabel="x (pixels)", ylabel="y (pixels)",
                title=f"{len(labels)} cells by most probable class")
    if image is not None:
        over = composite(image[::step, ::step])
        edges = cell_outlines(shown) & (classes > 0)
        over[edges] = colours[classes[edges] - 1]
        axes[1].imshow(over, extent=extent, interpolation="nearest")
        axes[1].set(aspect="equal", xlabel="x (pixels)", title="outlines over the channels")
    pixel_size = Result(result).pixel_size_um
    if pixel_size is not None:
        for axis in axes:
            add_scale_bar(axis, width, pixel_size)
    found, counts = np.unique(top, return_counts=True)
    handles = [Patch(color=colours[k], label=f"{names[k] if k < len(names) else k} ({n})")
               for k, n in zip(found, counts, strict=True)]
    if handles:
        figure.legend(handles=handles, loc="outside right center", title="top class (cells)",
                      fontsize="small", frameon=False)
    return figure


def write_cell_classes_figure(result: pb.JobResult, path: Path, image: np.ndarray | None = None) -> str:
    """Write :func:`cell_classes_figure` to ``path`` (PNG, PDF or SVG by its suffix); returns
    the kind drawn, ``classes``."""
    cell_classes_figure(result, image).savefig(path, dpi=150)
    return "classes"
