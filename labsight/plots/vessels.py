"""A ``vessel-content`` result to look at: each instance in a colour of its own, its classes and
fill level in the legend, and with the photo, the instances' outlines over it."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from labsight.plots.masks import composite
from labsight.plots.tissue import cell_outlines, display_step
from labsight.tables import table_values
from labsight.tensors import from_tensor
from labsight.v1 import gateway_pb2 as pb

__all__ = ["VESSEL_PIPELINE", "is_vessel_result", "vessel_figure"]

VESSEL_PIPELINE = "vessel-content"

_PALETTE = np.array([[0.12, 0.47, 0.71], [1.0, 0.5, 0.05], [0.17, 0.63, 0.17], [0.84, 0.15, 0.16],
                     [0.58, 0.4, 0.74], [0.55, 0.34, 0.29], [0.89, 0.47, 0.76], [0.5, 0.5, 0.5],
                     [0.74, 0.74, 0.13], [0.09, 0.75, 0.81]])
"""One colour per instance (cycled after ten, the most instances the seed's network gives)."""


def is_vessel_result(result: pb.JobResult) -> bool:
    """True for a ``vessel-content`` result with its instance masks."""
    return result.pipeline == VESSEL_PIPELINE and "instance_masks" in result.tensors


def vessel_figure(result: pb.JobResult, image: np.ndarray | None = None) -> Figure:
    """The instances of a vessel-content result, and with ``image`` (the job's photo) their
    outlines over it; the legend names each instance's classes and fill level.

    Raises
    ------
    ValueError
        For another result or an image whose size is not the masks'.
    """
    if not is_vessel_result(result):
        raise ValueError(f"the result of job {result.job_id} ({result.pipeline}) is not a "
                         "vessel-content result")
    masks = from_tensor(result.tensors["instance_masks"], "instance_masks") > 0
    shape = masks.shape[1:]
    if image is not None and image.shape[:2] != shape:
        raise ValueError(f"the image's shape {list(image.shape[:2])} is not the masks' {list(shape)}")
    labels = np.zeros(shape, np.int32)
    for index, mask in enumerate(masks):
        labels[mask] = index + 1
    step = display_step(shape)
    shown = labels[::step, ::step]
    colours = np.vstack([[0.0, 0.0, 0.0], _PALETTE[np.arange(len(masks)) % len(_PALETTE)]])
    panels = 2 if image is not None else 1
    figure = Figure(figsize=(6 * panels, 6.5), layout="constrained")
    axes = figure.subplots(1, panels, squeeze=False)[0]
    height, width = shape
    extent = (-0.5, width - 0.5, height - 0.5, -0.5)
    filled = result.scalars.get("filled", 0.0)
    axes[0].imshow(colours[shown], extent=extent, interpolation="nearest")
    axes[0].set(aspect="equal", xlabel="x (pixels)", ylabel="y (pixels)",
                title=f"{len(masks)} instances, {filled:.0%} of the vessel's height filled")
    if image is not None:
        overlay = composite(image[::step, ::step])
        for index in range(len(masks)):
            overlay[cell_outlines(np.where(shown == index + 1, index + 1, 0))] = colours[index + 1]
        axes[1].imshow(overlay, extent=extent, interpolation="nearest")
        axes[1].set(aspect="equal", xlabel="x (pixels)", title="outlines over the photo")
    if len(masks):
        figure.legend(handles=[Patch(color=colours[k + 1], label=text)
                               for k, text in enumerate(_instance_texts(result, len(masks)))],
                      loc="outside lower center", ncols=min(3, len(masks)), frameon=False,
                      fontsize="small")
    return figure


def _instance_texts(result: pb.JobResult, count: int) -> list[str]:
    """'k: Liquid (0.93), Filled — 41 % of the height' per instance, from the instances table."""
    texts = [f"{k}" for k in range(count)]
    table = result.tables.get("instances")
    if table is None or not len(table.row_ids):
        return texts
    values = table_values(table, "instances")
    columns = list(table.columns)
    for row, row_id in enumerate(table.row_ids):
        k = int(row_id)
        if not 0 <= k < count:
            continue
        classes = [f"{column[2:]} ({values[row, c]:.2f})" for c, column in enumerate(columns)
                   if column.startswith("p_") and values[row, c] > 0 and column != "p_Filled"]
        level = values[row, columns.index("fill_level")] if "fill_level" in columns else float("nan")
        texts[k] = f"{k}: {', '.join(classes) or 'material'} — {level:.0%} of the height"
    return texts
