"""Square image patches around spatial-transcriptomics spots or around each labelled cell."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.segmentation import relabel_sequential

from labsight.resize import cast_like, resize_image
from labsight.spatial import SPOT_EDGE_MODES

DEFAULT_CELL_PATCH_SIZE = 224
"""Side of cell patches when no output size is asked for."""

CellBox = tuple[int, tuple[slice, slice]]
"""A cell's label and its bounding box (rows, columns), as ``scipy.ndimage.find_objects`` gives it."""


@dataclass(frozen=True)
class Patches:
    """Patches cut from one image.

    Attributes
    ----------
    pixels : ndarray, shape (N, S, S, C)
        The patches in the image's dtype (C = 1 for a grey image).
    centres : ndarray of float64, shape (N, 2)
        Centre (x, y) of each patch in the source image's pixel coordinates.
    labels : ndarray of int64, shape (N,)
        Cell label of each patch, or the spot's index.
    at_edge : ndarray of bool, shape (N,)
        True where the patch reaches past the image border and was padded.
    """

    pixels: np.ndarray
    centres: np.ndarray
    labels: np.ndarray
    at_edge: np.ndarray


def spot_patches(
    image: np.ndarray,
    centres: np.ndarray,
    diameter: float,
    output_size: int = 0,
    max_bytes: int | None = None,
    edge: str = "pad-constant",
) -> Patches:
    """Square crops of side ``diameter`` centred on each spot, as MUSE cuts Visium/ST spots.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C)
        Source image.
    centres : ndarray, shape (N, 2)
        Spot centres as (x, y) pixel coordinates (x = column, y = row).
    diameter : float
        Side of each crop in pixels, rounded to the nearest integer.
    output_size : int, optional
        Side of the returned patches (bilinear resize); 0 keeps the crop side.
    max_bytes : int, optional
        Refuse to cut patches that would take more memory than this (the
        answer's message limit), before allocating them.
    edge : {"pad-constant", "pad-reflect", "pad-edge", "drop"}, optional
        A crop that reaches past the image border is padded with zeros, with the
        image mirrored about its border pixel (numpy's ``reflect``), with the
        border pixel repeated, or the spot is left out. Padded spots are flagged
        in ``Patches.at_edge``.

    Returns
    -------
    Patches
        ``labels`` holds each kept spot's index in ``centres``.

    Raises
    ------
    ValueError
        Naming ``spot_centres[i]`` when a spot's centre lies outside the image,
        the argument that is malformed, every spot being dropped, or the
        patches being over ``max_bytes``.

    Notes
    -----
    The crop of a spot at (x, y) with side s covers columns
    ``floor(x - s/2 + 1/2) .. + s - 1`` and the same rows around y, so its
    centre is the spot centre to within half a pixel. A centre lies inside the
    image when its nearest pixel does: -0.5 <= x < W - 0.5, and alike for y.

    Examples
    --------
    >>> image = np.arange(100, dtype=np.uint8).reshape(10, 10)
    >>> spot_patches(image, np.array([[5.0, 5.0]]), 2).pixels[0, :, :, 0]
    array([[44, 45],
           [54, 55]], dtype=uint8)
    """
    planes = _planes(image)
    centres = np.asarray(centres, dtype=np.float64)
    if centres.ndim != 2 or centres.shape[1] != 2 or len(centres) == 0:
        raise ValueError(f"spot_centres: expected (N, 2) (x, y) coordinates, got shape {list(centres.shape)}")
    if not np.all(np.isfinite(centres)):
        raise ValueError("spot_centres: coordinates must be finite")
    if edge not in SPOT_EDGE_MODES:
        raise ValueError(f"spot_edge: expected one of {list(SPOT_EDGE_MODES)}, got {edge[:100]!r}")
    height, width = planes.shape[:2]
    if not np.isfinite(diameter) or diameter < 1:
        raise ValueError(f"spot_diameter: must be at least 1 pixel, got {diameter}")
    if diameter > min(height, width):
        raise ValueError(
            f"spot_diameter: a {diameter:g}-pixel patch does not fit in the {height}x{width} image"
        )
    _check_output_size(output_size)
    side = int(np.floor(diameter + 0.5))
    # Corners stay floats until all are known to lie near the image: a far-away centre
    # (1e30) would overflow an integer.
    nearest = np.floor(centres + 0.5)
    outside = np.flatnonzero(
        (nearest[:, 0] < 0) | (nearest[:, 1] < 0) | (nearest[:, 0] >= width) | (nearest[:, 1] >= height)
    )
    if len(outside):
        i = int(outside[0])
        raise ValueError(
            f"spot_centres[{i}]: the centre (x={centres[i, 0]}, y={centres[i, 1]}) lies outside "
            f"the {height}x{width} image ({len(outside)} spots do)"
        )
    corners = np.floor(centres - side / 2 + 0.5).astype(np.int64)
    at_edge = (
        (corners[:, 0] < 0) | (corners[:, 1] < 0)
        | (corners[:, 0] + side > width) | (corners[:, 1] + side > height)
    )
    kept = np.flatnonzero(~at_edge) if edge == "drop" else np.arange(len(centres))
    if len(kept) == 0:
        raise ValueError(
            f"spot_centres: every spot's {side}x{side} patch reaches past the border of the "
            f"{height}x{width} image, so spot_edge=drop leaves none"
        )
    size = output_size or side
    _check_patch_bytes(len(kept), size, planes, max_bytes, "spot_centres", "spots")
    mode = edge.removeprefix("pad-")
    pixels = np.empty((len(kept), size, size, planes.shape[2]), planes.dtype)
    for index, (x0, y0) in enumerate(corners[kept]):
        pixels[index] = _fit(_padded_crop(planes, int(y0), int(x0), side, mode), size)
    return Patches(pixels, centres[kept], kept.astype(np.int64), at_edge[kept])


def cell_patches(
    image: np.ndarray,
    labels: np.ndarray,
    output_size: int = DEFAULT_CELL_PATCH_SIZE,
    blank_other_cells: bool = False,
    only_labels: Sequence[int] = (),
    max_bytes: int | None = None,
    boxes: Sequence[CellBox] | None = None,
) -> Patches:
    """One square patch per labelled cell, centred on the cell's bounding box.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C)
        Source image.
    labels : ndarray of int, shape (H, W)
        Cell label mask; 0 is background.
    output_size : int, optional
        Side of the returned patches (bilinear resize); 0 means 224.
    blank_other_cells : bool, optional
        Set pixels of every other cell inside a patch to 0.
    only_labels : sequence of int, optional
        Cut only these cells (to split a mask with many cells over several
        calls); empty: every cell.
    max_bytes : int, optional
        Refuse to cut patches that would take more memory than this, before
        allocating them.
    boxes : sequence of (int, (slice, slice)), optional
        ``cell_boxes(labels)``, when the caller has it already (it is not
        computed again).

    Returns
    -------
    Patches
        One patch per label, in increasing label order.

    Raises
    ------
    ValueError
        If the mask is not an integer (H, W) array of the image's size, holds
        no cell, lacks one of ``only_labels``, or the patches are over ``max_bytes``.

    Notes
    -----
    The square's side is the longer side of the bounding box; where the square
    extends past the image border it is padded with 0.
    """
    planes = _planes(image)
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise ValueError(f"cell_labels: expected an integer mask, got dtype {labels.dtype}")
    if labels.shape != planes.shape[:2]:
        raise ValueError(
            f"cell_labels: shape {list(labels.shape)} does not match the image's {list(planes.shape[:2])}"
        )
    _check_output_size(output_size)
    size = output_size or DEFAULT_CELL_PATCH_SIZE
    present = list(cell_boxes(labels) if boxes is None else boxes)
    if not present:
        raise ValueError("cell_labels: the mask holds no cell (every label is 0)")
    if len(only_labels):
        wanted = {int(label) for label in only_labels}
        missing = sorted(wanted - {label for label, _ in present})
        if missing:
            raise ValueError(f"cell_label_ids: labels {missing[:10]} are not in the cell mask")
        present = [(label, box) for label, box in present if label in wanted]
    _check_patch_bytes(len(present), size, planes, max_bytes, "cell_labels", "cells")
    pixels = np.empty((len(present), size, size, planes.shape[2]), planes.dtype)
    centres = np.empty((len(present), 2), np.float64)
    at_edge = np.zeros(len(present), bool)
    height, width = planes.shape[:2]
    for index, (label, (rows, cols)) in enumerate(present):
        side = max(rows.stop - rows.start, cols.stop - cols.start)
        y0 = (rows.start + rows.stop - side) // 2
        x0 = (cols.start + cols.stop - side) // 2
        at_edge[index] = y0 < 0 or x0 < 0 or y0 + side > height or x0 + side > width
        crop = _padded_crop(planes, y0, x0, side)
        if blank_other_cells:
            others = _padded_crop(labels[:, :, None], y0, x0, side)[:, :, 0]
            crop[(others != 0) & (others != label)] = 0
        pixels[index] = _fit(crop, size)
        centres[index] = (x0 + side / 2 - 0.5, y0 + side / 2 - 0.5)
    return Patches(
        pixels, centres, np.array([label for label, _ in present], dtype=np.int64), at_edge
    )


def cell_boxes(labels: np.ndarray) -> list[CellBox]:
    """(label, bounding box) of every positive label of an integer mask, in increasing label order.

    A mask whose largest label is at most its pixel count (any segmentation's) goes
    to ``find_objects`` as it is; one with a few large label values (a uint32 id of
    4e9) is made consecutive first, so it costs memory for its cells, not for its largest id.
    """
    top = int(labels.max(initial=0))
    if top <= 0:
        return []
    if top <= labels.size:  # find_objects skips labels below 1 and lists one entry per value
        boxes = ndimage.find_objects(labels, max_label=top)
        return [(index, box) for index, box in enumerate(boxes, start=1) if box is not None]
    compact, _, original = relabel_sequential(np.maximum(labels, 0).astype(np.int64))
    boxes = ndimage.find_objects(compact)
    return [(int(original[index]), box) for index, box in enumerate(boxes, start=1) if box is not None]


def _check_patch_bytes(
    count: int, size: int, planes: np.ndarray, max_bytes: int | None, field: str, what: str
) -> None:
    """ValueError naming ``field`` when ``count`` patches of ``size``² would exceed ``max_bytes``."""
    needed = count * size * size * planes.shape[2] * planes.itemsize
    if max_bytes is not None and needed > max_bytes:
        raise ValueError(
            f"{field}: {count} patches of {size}x{size}x{planes.shape[2]} {planes.dtype} need "
            f"{needed / 2**20:.1f} MiB, over the {max_bytes / 2**20:.1f} MiB one answer may "
            f"carry; ask for fewer {what} per call"
        )


def _planes(image: np.ndarray) -> np.ndarray:
    """The image as (H, W, C), checked non-empty."""
    if image.ndim not in (2, 3) or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image: expected a non-empty (H, W) or (H, W, C) array, got {list(image.shape)}")
    return image[:, :, None] if image.ndim == 2 else image


def _check_output_size(output_size: int) -> None:
    if output_size < 0:
        raise ValueError(f"output_size: must be >= 0, got {output_size}")


def _padded_crop(
    planes: np.ndarray, y0: int, x0: int, side: int, mode: str = "constant"
) -> np.ndarray:
    """A copy of planes[y0:y0+side, x0:x0+side], padded where the square leaves the array.

    ``mode`` is numpy's padding name: ``constant`` (zeros), ``reflect`` (mirrored
    about the border pixel) or ``edge`` (the border pixel repeated).
    """
    height, width = planes.shape[:2]
    if mode != "constant":
        rows = _border_indices(np.arange(y0, y0 + side), height, mode)
        cols = _border_indices(np.arange(x0, x0 + side), width, mode)
        return planes[np.ix_(rows, cols)]
    crop = np.zeros((side, side, planes.shape[2]), planes.dtype)
    top, left = max(y0, 0), max(x0, 0)
    bottom, right = min(y0 + side, height), min(x0 + side, width)
    crop[top - y0 : bottom - y0, left - x0 : right - x0] = planes[top:bottom, left:right]
    return crop


def _border_indices(index: np.ndarray, length: int, mode: str) -> np.ndarray:
    """Indices into an axis of ``length``, those past either end mapped as numpy's pad ``mode``."""
    if mode == "edge" or length == 1:
        return np.clip(index, 0, length - 1)
    # Mirroring about both ends repeats with period 2(length - 1), so any distance folds back.
    period = 2 * (length - 1)
    folded = np.mod(index, period)
    return np.where(folded < length, folded, period - folded)


def _fit(crop: np.ndarray, size: int) -> np.ndarray:
    """The crop resized to size×size in its own dtype (unchanged when it already fits)."""
    if crop.shape[0] == size and crop.shape[1] == size:
        return crop
    return cast_like(resize_image(crop, (size, size)), crop.dtype)
