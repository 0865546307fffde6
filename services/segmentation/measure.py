"""Per-cell measurements of a segmentation: areas, centroid, bounding box and channel intensities."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from labsight.columns import CELL_CHANNELS, cell_column_names
from services.segmentation.shape import Runs, form_factors, label_runs, moment_ellipses, perimeters

__all__ = ["CellTable", "measure_cells"]


@dataclass(frozen=True)
class CellTable:
    """The cells table: one row per cell label (see :func:`measure_cells`).

    Attributes
    ----------
    labels : ndarray of int64, shape (n,)
        The cell labels, increasing.
    columns : list of str
        Column names (``labsight.columns.cell_column_names``).
    values : ndarray of float64, shape (n, len(columns))
        One row per label.
    """

    labels: np.ndarray
    columns: list[str]
    values: np.ndarray


def measure_cells(
    nucleus_labels: np.ndarray,
    cell_labels: np.ndarray,
    channels: np.ndarray,
    *,
    pixel_size_um: float,
    channel_names: Sequence[str] = CELL_CHANNELS,
) -> CellTable:
    """Measure every labelled cell and its nucleus.

    Parameters
    ----------
    nucleus_labels, cell_labels : ndarray of int, shape (H, W)
        Label masks, 0 = background; nucleus k belongs to cell k. Nucleus
        pixels whose label is no cell's are ignored.
    channels : ndarray, shape (H, W, C)
        The image, one channel per name in ``channel_names``.
    pixel_size_um : float
        Side of a pixel in micrometres (> 0), for the areas in µm².
    channel_names : sequence of str, optional
        The channels' names in column names (``labsight.columns.channel_column_names``);
        HPA's red, green, blue, yellow (``labsight.columns.CELL_CHANNELS``) by default.

    Returns
    -------
    CellTable
        Columns in the order of ``labsight.columns.cell_column_names``: label,
        areas in pixels and µm² of the cell and its nucleus, their ratio,
        centroid (x, y), bounding box (min inclusive, max exclusive), the shapes
        of the cell and its nucleus (:mod:`services.segmentation.shape`: perimeter,
        form factor, second-moment ellipse), and per channel the mean, summed
        and standard deviation of the intensity over the cell, the mean over its
        nucleus (NaN for a cell without a nucleus) and over the rest of the cell (NaN
        where the nucleus fills it).

    Raises
    ------
    ValueError
        For masks of other shapes than the channels', non-integer masks, a
        channel count other than the names', or a pixel size that is not positive.

    Notes
    -----
    Sums are taken over the masks' runs along the rows (``services.segmentation.shape.
    label_runs``): areas, centroids and boxes from the runs alone, intensities from
    running sums along each row read at each run's ends, so the cost is a pass over the
    masks and two over each channel whatever the labels' values.
    The centroid is the mean of the pixel coordinates,
    :math:`\\bar x = \\frac{1}{A} \\sum_{p \\in \\text{cell}} x_p`.

    Examples
    --------
    >>> cells = np.zeros((4, 4), np.int32); cells[:2, :3] = 7
    >>> table = measure_cells(cells, cells, np.ones((4, 4, 4), np.uint8), pixel_size_um=0.5)
    >>> table.labels.tolist(), float(table.values[0, table.columns.index("area_um2")])
    ([7], 1.5)
    """
    _check(nucleus_labels, cell_labels, channels, len(channel_names), pixel_size_um)
    columns = cell_column_names(channel_names)
    labels, index = _compact(cell_labels)
    count = len(labels)
    bins = count + 1
    # A nucleus counts for the cell of its label, and only inside the range of cell labels.
    in_nuclei = np.flatnonzero(nucleus_labels)
    nucleus_index = np.zeros(index.size, np.int32)
    nucleus_index[in_nuclei] = _index_of(nucleus_labels.ravel()[in_nuclei], labels)
    nucleus_index = nucleus_index.reshape(index.shape)
    # Every sum runs over the masks' runs along the rows (a few per row and cell), not their pixels.
    cell_runs, nucleus_runs = label_runs(index), label_runs(nucleus_index)
    area = _per_object(cell_runs, cell_runs.length, bins)
    nucleus_area = _per_object(nucleus_runs, nucleus_runs.length, bins)
    centroid_x = _per_object(cell_runs, cell_runs.sum_x, bins) / np.maximum(area, 1)
    centroid_y = _per_object(cell_runs, cell_runs.row * cell_runs.length, bins) / np.maximum(area, 1)
    bbox = _boxes(cell_runs, count)
    cell_shape, nucleus_shape = moment_ellipses(cell_runs, count), moment_ellipses(nucleus_runs, count)
    cell_perimeter, nucleus_perimeter = perimeters(index, count), perimeters(nucleus_index, count)
    sums, square_sums, nucleus_sums = _channel_sums(channels, cell_runs, nucleus_runs, bins)
    cytoplasm_area = area - nucleus_area
    with np.errstate(invalid="ignore", divide="ignore"):
        nucleus_means = np.where(nucleus_area > 0, nucleus_sums / nucleus_area, np.nan)
        cytoplasm_means = np.where(cytoplasm_area > 0, (sums - nucleus_sums) / cytoplasm_area,
                                   np.nan)
    means = sums / np.maximum(area, 1)
    stds = np.sqrt(np.maximum(square_sums / np.maximum(area, 1) - means**2, 0.0))
    square_um = float(pixel_size_um) ** 2
    has_nucleus = nucleus_area > 0
    um = float(pixel_size_um)
    values = np.column_stack([
        labels.astype(np.float64), area, area * square_um, nucleus_area, nucleus_area * square_um,
        nucleus_area / np.maximum(area, 1), centroid_x, centroid_y, bbox,
        cell_perimeter * um, form_factors(area, cell_perimeter), cell_shape.major_axis * um,
        cell_shape.minor_axis * um, cell_shape.eccentricity, cell_shape.orientation_deg,
        np.where(has_nucleus, nucleus_perimeter * um, np.nan),
        np.where(has_nucleus, form_factors(nucleus_area, nucleus_perimeter), np.nan),
        nucleus_shape.major_axis * um, nucleus_shape.minor_axis * um, nucleus_shape.eccentricity,
        means.T, sums.T, stds.T, nucleus_means.T, cytoplasm_means.T,
    ]) if count else np.zeros((0, len(columns)))
    return CellTable(labels, columns, values)


def _per_object(runs: Runs, per_run: np.ndarray, bins: int) -> np.ndarray:
    """Sum over each object's runs of ``per_run`` (objects 1..bins-1)."""
    return np.bincount(runs.owner, weights=per_run.astype(np.float64), minlength=bins)[1:]


def _boxes(runs: Runs, count: int) -> np.ndarray:
    """Each object's bounding box (min x, min y, max x, max y; max exclusive) from its runs."""
    big = np.iinfo(np.int64).max
    low_x, low_y = np.full(count + 1, big), np.full(count + 1, big)
    high_x, high_y = np.zeros(count + 1, np.int64), np.zeros(count + 1, np.int64)
    np.minimum.at(low_x, runs.owner, runs.first)
    np.minimum.at(low_y, runs.owner, runs.row)
    np.maximum.at(high_x, runs.owner, runs.stop)
    np.maximum.at(high_y, runs.owner, runs.row + 1)
    return np.column_stack([low_x, low_y, high_x, high_y])[1:].astype(np.float64)


def _channel_sums(channels: np.ndarray, cell_runs: Runs, nucleus_runs: Runs,
                  bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per channel and cell: the summed values and squared values over the cell, and the summed
    values over its nucleus, from running sums along each row (exact for integer images: int64;
    float images sum in float64)."""
    height, width = channels.shape[:2]
    exact = channels.dtype.kind in "iub"
    kind = np.int64 if exact else np.float64
    shape = (channels.shape[2], bins - 1)
    sums, square_sums, nucleus_sums = np.empty(shape), np.empty(shape), np.empty(shape)
    # one running-sum buffer with a zero column in front (a run's sum is two reads) and one for
    # the squares, for every channel: fresh ones per channel cost more to touch than to fill
    running = np.zeros((height, width + 1), kind)
    squared = np.empty((height, width), kind)
    cell_at = _run_ends(cell_runs, width + 1)
    nucleus_at = _run_ends(nucleus_runs, width + 1)
    flat = running.ravel()
    for c in range(channels.shape[2]):
        plane = channels[..., c]
        np.cumsum(plane, axis=1, dtype=kind, out=running[:, 1:])
        sums[c] = _per_object(cell_runs, flat[cell_at[1]] - flat[cell_at[0]], bins)
        nucleus_sums[c] = _per_object(nucleus_runs, flat[nucleus_at[1]] - flat[nucleus_at[0]], bins)
        np.multiply(plane, plane, out=squared, dtype=kind)
        np.cumsum(squared, axis=1, out=running[:, 1:])
        square_sums[c] = _per_object(cell_runs, flat[cell_at[1]] - flat[cell_at[0]], bins)
    return sums, square_sums, nucleus_sums


def _run_ends(runs: Runs, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Where each run starts and ends in a flat (H, W + 1) running sum with a zero column first."""
    at = runs.row * stride
    return at + runs.first, at + runs.stop


def _check(nucleus_labels: np.ndarray, cell_labels: np.ndarray, channels: np.ndarray,
           channel_count: int, pixel_size_um: float) -> None:
    if channels.ndim != 3 or channels.shape[2] != channel_count:
        raise ValueError(f"channels: expected (H, W, {channel_count}) for {channel_count} channel "
                         f"names, got {list(channels.shape)}")
    for name, mask in (("nucleus_labels", nucleus_labels), ("cell_labels", cell_labels)):
        if mask.shape != channels.shape[:2]:
            raise ValueError(f"{name}: shape {list(mask.shape)} differs from the channels' "
                             f"{list(channels.shape[:2])}")
        if mask.dtype.kind not in "iu":
            raise ValueError(f"{name}: expected integer labels, got dtype {mask.dtype}")
    if not np.isfinite(pixel_size_um) or pixel_size_um <= 0:
        raise ValueError(f"pixel_size_um: must be > 0, got {pixel_size_um}")


def _compact(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The positive labels of a mask, increasing, and the mask as indices 1..n into them
    (0 = background, negatives too)."""
    top = int(labels.max(initial=0))
    if top <= labels.size:  # the usual labels 1..n: counting finds them in one pass
        present = np.flatnonzero(np.bincount(np.clip(labels, 0, None).ravel(), minlength=top + 1))
    else:
        present = np.unique(labels)
    present = present[present > 0].astype(np.int64)
    return present, _index_of(labels, present).reshape(labels.shape).astype(np.int32)


def _index_of(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """For each value, 1 + its position in the increasing ``labels``, or 0 where it is none."""
    flat = values.ravel()
    if len(labels) == 0:
        return np.zeros(flat.shape, np.intp)
    top = int(labels[-1])
    if top <= flat.size:  # a lookup table no larger than the image
        lookup = np.zeros(top + 2, np.intp)
        lookup[labels] = np.arange(1, len(labels) + 1)
        return lookup[np.clip(flat, 0, top + 1)]
    wide = flat.astype(np.int64)
    position = np.searchsorted(labels, wide)
    found = labels[np.minimum(position, len(labels) - 1)] == wide
    return np.where(found, position + 1, 0)
