"""Segmentation results to look at: nucleus and cell masks and their outlines over the channels."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from labsight.cell_images import read_cell_image
from labsight.columns import CELL_CHANNELS
from labsight.errors import InvalidArgument
from labsight.images import image_from_file
from labsight.inputs import channel_siblings
from labsight.plots.scale_bar import add_scale_bar
from labsight.plots.tissue import LOCAL_IMAGE_BYTES, cell_outlines, display_step
from labsight.result import LABEL_MASKS, Result
from labsight.tensors import from_tensor
from labsight.v1 import gateway_pb2 as pb
from labsight.v1 import tensor_pb2

CELL_OUTLINE = (1.0, 1.0, 1.0, 1.0)
"""Colour of cell outlines (white over the dark channels)."""
NUCLEUS_OUTLINE = (0.0, 1.0, 1.0, 1.0)
"""Colour of nucleus outlines (cyan)."""
MAX_IDS = 500
"""Most ids written on a figure; more would hide the cells."""

CHANNEL_COLOURS = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]], np.float64)
"""RGB of each channel in the composite (HPA's convention: yellow is red + green)."""
TWO_CHANNEL_COLOURS = np.array([[1, 0, 1], [0, 1, 0]], np.float64)
"""RGB of a 2-channel image's channels: magenta and green, told apart by colour-blind eyes too."""


def has_masks(result: pb.JobResult) -> bool:
    """True when the result carries label masks (a segmentation result such as ``cells``')."""
    return all(name in result.tensors for name in LABEL_MASKS)


def masks_figure(result: pb.JobResult, image: np.ndarray | None = None, ids: bool = False) -> Figure:
    """Cells and nuclei of a segmentation result: the label masks in colour and, with
    ``image``, their outlines over the channels (a 4-channel image as HPA's composite, red,
    green, blue and yellow; other images as they are); ``ids`` writes each cell's label at
    its centroid. Each panel has a scale bar where the result states its pixel size.

    Raises
    ------
    ValueError
        For a result without masks or an image whose size is not the masks'.
    """
    if not has_masks(result):
        raise ValueError(f"the result of job {result.job_id} ({result.pipeline}) has no label masks")
    nuclei = from_tensor(result.tensors["nucleus_labels"], "nucleus_labels")
    cells = from_tensor(result.tensors["cell_labels"], "cell_labels")
    if image is not None and image.shape[:2] != cells.shape:
        raise ValueError(f"the image's shape {list(image.shape[:2])} is not the masks' "
                         f"{list(cells.shape)}")
    step = display_step(cells.shape)
    shown_cells, shown_nuclei = cells[::step, ::step], nuclei[::step, ::step]
    panels = 2 if image is not None else 1
    figure = Figure(figsize=(7 * panels, 6.5), layout="constrained")
    axes = figure.subplots(1, panels, squeeze=False)[0]
    count = len(np.unique(cells[cells > 0]))
    _show(axes[0], label_colours(shown_cells, shown_nuclei), cells.shape,
          f"{count} cell{'' if count == 1 else 's'} (nuclei darker)")
    if image is not None:
        overlay = composite(image[::step, ::step])
        overlay[cell_outlines(shown_cells)] = CELL_OUTLINE[:3]
        overlay[cell_outlines(shown_nuclei)] = NUCLEUS_OUTLINE[:3]
        _show(axes[1], overlay, cells.shape, "outlines over the channels")
        axes[1].legend([Line2D([], [], color=CELL_OUTLINE), Line2D([], [], color=NUCLEUS_OUTLINE)],
                       ["cell", "nucleus"], loc="upper center", bbox_to_anchor=(0.5, -0.08),
                       ncols=2, fontsize="small", facecolor="black", framealpha=1.0,
                       labelcolor="white")  # the white cell outline shows on black, as drawn
    if ids:
        for axis in axes:
            _write_ids(axis, cells)
    pixel_size = Result(result).pixel_size_um
    if pixel_size is not None:
        for axis in axes:
            add_scale_bar(axis, cells.shape[1], pixel_size)
    return figure


def label_colours(cells: np.ndarray, nuclei: np.ndarray) -> np.ndarray:
    """An RGB image of the masks: each cell a colour of its own (fixed by its label, so two
    figures agree), its nucleus the same colour darker, background black."""
    rgb = np.zeros((*cells.shape, 3), np.float64)
    inside = cells > 0
    # A golden-ratio walk round the hue circle keeps neighbouring labels apart.
    hue = (cells[inside].astype(np.float64) * 0.618033988749895) % 1.0
    rgb[inside] = _hsv_to_rgb(hue, 0.65, 0.95)
    rgb[(nuclei > 0) & inside] *= 0.55
    rgb[(nuclei > 0) & ~inside] = 0.5  # a nucleus outside every cell (none from SegmentCells)
    return rgb


def composite(image: np.ndarray) -> np.ndarray:
    """RGB floats of an image for display: 4 channels as HPA's composite (each channel
    stretched between its 0.5th and 99.5th percentile, yellow adding to red and green),
    2 channels magenta and green, RGB as it is (stretched), others as the grey of their
    first channel."""
    pixels = image.astype(np.float64)
    if pixels.ndim == 2:
        pixels = pixels[..., np.newaxis]
    low = np.percentile(pixels, 0.5, axis=(0, 1))
    high = np.percentile(pixels, 99.5, axis=(0, 1))
    stretched = np.clip((pixels - low) / np.maximum(high - low, 1e-12), 0.0, 1.0)
    channels = stretched.shape[2]
    if channels == len(CELL_CHANNELS):
        return np.clip(stretched @ CHANNEL_COLOURS, 0.0, 1.0)
    if channels == 3:
        return stretched
    if channels == 2:
        return np.clip(stretched @ TWO_CHANNEL_COLOURS, 0.0, 1.0)
    return np.repeat(stretched[..., :1], 3, axis=2)


def load_cells_image(path: Path, read: Mapping[str, str] | None = None) -> np.ndarray:
    """The (H, W, 4) channels of a cells job's input from a local file, read as the job read
    them (its params ``read``): a 4-channel image, or one of HPA's channel files
    (``ID_red.png``), whose three siblings are read with it. ValueError naming the file."""
    siblings = channel_siblings(path)
    paths = [siblings[channel] for channel in CELL_CHANNELS] if siblings else [path]
    parts = []
    for each in paths:
        image = image_from_file(each)
        for field in tensor_pb2.ImageReadOptions.DESCRIPTOR.fields:
            if read and read.get(field.name) and not (siblings and field.name == "channels"):
                setattr(image.read, field.name, read[field.name])
        parts.append((f"--image {each}", image))
    try:
        return read_cell_image(parts, LOCAL_IMAGE_BYTES)  # its headers checked first
    except (InvalidArgument, OSError) as error:
        raise ValueError(str(error)) from None


def _show(axes: Axes, shown: np.ndarray, full_shape: tuple[int, ...], title: str) -> None:
    """``shown`` (maybe every k-th pixel) over the full image's pixel coordinates."""
    height, width = full_shape[:2]
    axes.imshow(shown, extent=(-0.5, width - 0.5, height - 0.5, -0.5), interpolation="nearest")
    axes.set(aspect="equal", xlabel="x (pixels)", ylabel="y (pixels)", title=title)


def _write_ids(axes: Axes, cells: np.ndarray) -> None:
    """Each cell's label at its centroid (at most MAX_IDS of them, the largest cells)."""
    labels, inverse, areas = np.unique(cells.ravel(), return_inverse=True, return_counts=True)
    rows, cols = np.indices(cells.shape)
    ys = np.bincount(inverse, weights=rows.ravel()) / areas
    xs = np.bincount(inverse, weights=cols.ravel()) / areas
    keep = np.flatnonzero(labels > 0)
    keep = keep[np.argsort(-areas[keep], kind="stable")[:MAX_IDS]]
    for i in keep:
        axes.text(xs[i], ys[i], str(labels[i]), color="white", fontsize=6, ha="center",
                  va="center", clip_on=True)


def _hsv_to_rgb(hue: np.ndarray, saturation: float, value: float) -> np.ndarray:
    """RGB of hues in [0, 1) at one saturation and value (the standard HSV formula)."""
    k = (np.array([5.0, 3.0, 1.0]) + hue[:, np.newaxis] * 6.0) % 6.0
    return value - value * saturation * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
