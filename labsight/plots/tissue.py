"""Results over their image: spots as circles of their real diameter, cells as coloured outlines."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.collections import EllipseCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.patches import Patch
from scipy.ndimage import binary_dilation
from skimage.morphology import disk
from skimage.segmentation import find_boundaries

from labsight.errors import InvalidArgument
from labsight.export import COORDINATES
from labsight.images import decode_image, decode_label_mask, image_from_file
from labsight.plots.embedding import VALUE_MAP, RowColours, draw_embedding
from labsight.plots.groups import Colour, group_colours, ordered_groups, outside_legend
from labsight.spatial import EDGE
from labsight.tables import table_values
from labsight.tensors import from_tensor
from labsight.v1 import gateway_pb2 as pb
from labsight.v1 import tensor_pb2

MAX_DISPLAY_SIDE = 2500
"""Images are shown with at most this many pixels a side (every k-th pixel): twice what the
figure's image panel holds at 150 dpi, and a bounded cost (an 8000² slide with 5,000 spots draws
in 1.4 s, where 4000 a side took 4.5 s and 0.9 GB more)."""

LOCAL_IMAGE_BYTES = 16 * 1024**3
"""Decoded size up to which a local file is read for a figure (the service limits do not apply)."""

OUTLINE_PIXELS_PER_SIDE = 1500
"""Outlines are one image pixel wide per this many pixels of the image's longer side, so that
they stay visible once the image is shrunk to the figure."""

NO_VALUE: Colour = (0.75, 0.75, 0.75, 1.0)
"""Outline colour of a cell that has no row in the result."""


def load_image(
    path: Path, what: str, *, labels: bool = False, read: Mapping[str, str] | None = None
) -> np.ndarray:
    """The pixels of a local image file (PNG, TIFF, JPEG or .npy) as the pipelines read it,
    with a job's reading parameters ``read`` (channels, plane, z_project, intensity: the job's
    params), or with ``labels`` a label mask's integers; ValueError naming ``what``."""
    try:
        image = image_from_file(path)
        if labels:
            return decode_label_mask(image, f"{what} {path}", LOCAL_IMAGE_BYTES)
        choices = read or {}
        for field in tensor_pb2.ImageReadOptions.DESCRIPTOR.fields:
            if choices.get(field.name):
                setattr(image.read, field.name, choices[field.name])
        return decode_image(image, f"{what} {path}", LOCAL_IMAGE_BYTES)
    except (InvalidArgument, OSError) as error:
        raise ValueError(str(error)) from None


def spots_figure(
    result: pb.JobResult, table: str, diameter: float, colours: RowColours,
    image: np.ndarray | None = None,
) -> Figure:
    """The PCA of the spots' rows and, beside it, each spot as a filled circle of ``diameter``
    pixels at its coordinates over ``image`` (white without one), coloured as ``colours`` says."""
    if diameter <= 0:
        raise ValueError("spots need their diameter in pixels (the job's spot_diameter)")
    values = table_values(result.tables[table], table)
    centres = _coordinates(result, len(values))
    figure, (embedding, tissue) = _two_panels()
    draw_embedding(embedding, values, table, colours)
    spots = EllipseCollection(
        widths=diameter, heights=diameter, angles=0.0, units="xy", offsets=centres,
        offset_transform=tissue.transData, edgecolors="none", alpha=0.85,
    )
    if colours.groups is not None:
        lookup = dict(zip(ordered_groups(colours.groups), group_colours(len(set(colours.groups))),
                          strict=True))
        spots.set_facecolors([lookup[group] for group in colours.groups])
    elif colours.values is not None:
        spots.set_array(colours.values)
        spots.set_cmap(VALUE_MAP)
        figure.colorbar(spots, ax=tissue, label=colours.label, shrink=0.8)
    tissue.add_collection(spots, autolim=False)
    _mark_edge_spots(tissue, result, centres, diameter)
    # The spots' region (a Visium capture area is a part of the slide image) with a margin.
    low, high = centres.min(axis=0) - diameter, centres.max(axis=0) + diameter
    if image is not None:
        draw_image(tissue, image)
        low = np.maximum(low, -0.5)
        high = np.minimum(high, np.array(image.shape[1::-1]) - 0.5)
    tissue.set(xlim=(low[0], high[0]), ylim=(high[1], low[1]))  # image rows grow downwards
    tissue.set(aspect="equal", xlabel="x (pixels)", ylabel="y (pixels)",
               title=f"{len(centres)} spots, {diameter:g} px across" + (
                   "" if image is not None else " (no image given)"))
    return figure


def _mark_edge_spots(axes: Axes, result: pb.JobResult, centres: np.ndarray, diameter: float) -> None:
    """Ring in dashes the spots whose patch reached past the image and was padded (the result's
    ``edge`` flags), and say how many below the axes."""
    if EDGE not in result.tensors:
        return
    flags = from_tensor(result.tensors[EDGE], EDGE).astype(bool)
    if len(flags) != len(centres) or not flags.any():
        return
    rings = EllipseCollection(
        widths=diameter, heights=diameter, angles=0.0, units="xy", offsets=centres[flags],
        offset_transform=axes.transData, facecolors="none", edgecolors="black",
        linestyles="--", linewidths=1.2,
    )
    axes.add_collection(rings, autolim=False)
    proxy = Patch(facecolor="none", edgecolor="black", linestyle="--")
    axes.legend([proxy], [f"{int(flags.sum())} spots padded at the image edge"], loc="upper center",
                bbox_to_anchor=(0.5, -0.1), fontsize="small", frameon=False)


def cells_figure(
    result: pb.JobResult, table: str, cell_labels: np.ndarray, colours: RowColours,
    image: np.ndarray | None = None,
) -> Figure:
    """The PCA of the cells' rows and, beside it, each cell's outline from the ``cell_labels``
    mask over ``image``, coloured as ``colours`` says (rows are keyed by cell label)."""
    values = table_values(result.tables[table], table)
    if image is not None and image.shape[:2] != cell_labels.shape:
        raise ValueError(f"the cell mask's shape {list(cell_labels.shape)} is not the image's "
                         f"{list(image.shape[:2])}")
    figure, (embedding, tissue) = _two_panels()
    draw_embedding(embedding, values, table, colours)
    labels = np.array([_cell_label(row_id) for row_id in result.tables[table].row_ids], np.int64)
    # Outlines of the mask as shown: at display size they look the same as at full size, for
    # a fraction of the memory of a whole slide's mask.
    step = display_step(cell_labels.shape)
    shown = cell_labels[::step, ::step]
    outlines = cell_outlines(shown)
    rgba = np.zeros((*shown.shape, 4), np.float32)
    rgba[outlines] = _colours_of(shown[outlines], labels, _row_colours(colours, tissue))
    if image is not None:
        draw_image(tissue, image)
    _show(tissue, rgba, cell_labels.shape)
    tissue.set(aspect="equal", xlabel="x (pixels)", ylabel="y (pixels)",
               title=f"{len(labels)} cells")
    return figure


def cell_outlines(cell_labels: np.ndarray) -> np.ndarray:
    """Where cells' outlines are drawn: the pixels of each cell next to another label (inner
    boundaries), thickened inwards for large images; each outline pixel belongs to its own cell."""
    if cell_labels.ndim != 2 or cell_labels.dtype.kind not in "iu":
        raise ValueError(f"the cell mask must be a 2-D integer label image, got "
                         f"{list(cell_labels.shape)} {cell_labels.dtype}")
    outlines = find_boundaries(cell_labels, mode="inner")
    width = max(cell_labels.shape) // OUTLINE_PIXELS_PER_SIDE
    if width > 0:
        outlines = binary_dilation(outlines, structure=disk(width))
    return outlines & (cell_labels > 0)


def _row_colours(colours: RowColours, axes: Axes) -> np.ndarray:
    """The RGBA of each row, and on ``axes`` the colour bar or legend that explains them."""
    if colours.groups is not None:
        names = ordered_groups(colours.groups)
        lookup = dict(zip(names, group_colours(len(names)), strict=True))
        outside_legend(axes, [Patch(color=lookup[name]) for name in names], names)
        return np.array([lookup[group] for group in colours.groups])
    if colours.values is not None:
        mappable = ScalarMappable(Normalize(colours.values.min(), colours.values.max()), VALUE_MAP)
        axes.figure.colorbar(mappable, ax=axes, label=colours.label, shrink=0.8)
        return mappable.to_rgba(colours.values)
    raise ValueError("cells are coloured by a value or by group")


def _colours_of(pixel_labels: np.ndarray, labels: np.ndarray, row_colours: np.ndarray) -> np.ndarray:
    """The colour of each pixel's cell (row ``i`` has label ``labels[i]``); NO_VALUE for a cell
    without a row. Labels are looked up, not indexed, so any label values cost no memory."""
    order = np.argsort(labels)
    sorted_labels = labels[order]
    at = np.minimum(np.searchsorted(sorted_labels, pixel_labels), len(labels) - 1)
    found = sorted_labels[at] == pixel_labels if len(labels) else np.zeros(len(pixel_labels), bool)
    result = np.tile(np.array(NO_VALUE, np.float32), (len(pixel_labels), 1))
    result[found] = row_colours[order[at[found]]]
    return result


def display_step(shape: tuple[int, ...]) -> int:
    """The step between shown pixels that keeps an image of ``shape`` within MAX_DISPLAY_SIDE."""
    return -(-max(shape[:2]) // MAX_DISPLAY_SIDE)


def draw_image(axes: Axes, image: np.ndarray) -> AxesImage:
    """``image`` on ``axes`` in its own pixel coordinates (x right, y down, pixel centres on
    integers), shrunk by an integer step to at most MAX_DISPLAY_SIDE a side; grey shown grey."""
    step = display_step(image.shape)
    return _show(axes, display_pixels(image[::step, ::step]), image.shape[:2])


def _show(axes: Axes, shown: np.ndarray, full_shape: tuple[int, ...]) -> AxesImage:
    """``shown`` pixels (maybe every k-th) stretched over an image of ``full_shape``."""
    height, width = full_shape[:2]
    return axes.imshow(shown, extent=(-0.5, width - 0.5, height - 0.5, -0.5),
                       cmap="gray" if shown.ndim == 2 else None, interpolation="antialiased")


def display_pixels(image: np.ndarray) -> np.ndarray:
    """Pixels matplotlib shows as they are: RGBA floats stay; 8-bit grey/RGB stays; anything
    else is stretched per channel between its 0.5th and 99.5th percentile (12-bit in 16-bit,
    float); 2 or more than 4 channels show the first."""
    if image.ndim == 3 and image.shape[2] == 4 and image.dtype.kind == "f":
        return image
    if image.ndim == 3 and image.shape[2] not in (3, 4):
        image = image[..., 0]
    elif image.ndim == 3:
        image = image[..., :3]
    if image.dtype == np.uint8:
        return image
    pixels = image.astype(np.float64)
    low = np.percentile(pixels, 0.5, axis=(0, 1))
    high = np.percentile(pixels, 99.5, axis=(0, 1))
    return np.clip((pixels - low) / np.maximum(high - low, 1e-12), 0.0, 1.0)


def _two_panels() -> tuple[Figure, tuple[Axes, Axes]]:
    figure = Figure(figsize=(14, 6), layout="constrained")
    embedding, tissue = figure.subplots(1, 2, width_ratios=(1, 1.5))
    return figure, (embedding, tissue)


def _coordinates(result: pb.JobResult, rows: int) -> np.ndarray:
    if COORDINATES not in result.tensors:
        raise ValueError(f"result of job {result.job_id} has no spot coordinates")
    centres = from_tensor(result.tensors[COORDINATES], COORDINATES).astype(np.float64)
    if centres.shape != (rows, 2):
        raise ValueError(f"result of job {result.job_id}: {len(centres)} coordinates for {rows} rows")
    return centres


def _cell_label(row_id: str) -> int:
    try:
        return int(row_id)
    except ValueError:
        raise ValueError(f"row {row_id!r} is not a cell label; is this a spot job?") from None
