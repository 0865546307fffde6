"""Per-cell model inputs: one square, resized, normalised multi-channel crop per labelled cell."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from labsight.patches import cell_boxes, cell_patches

__all__ = ["CellCrops", "cell_crops"]


@dataclass(frozen=True)
class CellCrops:
    """The crops of one image's cells, ready for a (N, C, S, S) model.

    Attributes
    ----------
    pixels : ndarray of float32, shape (N, C, S, S)
        Each crop scaled to [0, 1] by the image dtype's range, then
        ``(x - mean) / std`` per channel.
    cell_ids : ndarray of int64, shape (N,)
        The cell label of each crop, in increasing order.
    boxes : ndarray of int64, shape (N, 4)
        Each cell's bounding box in the image as (top, left, bottom, right),
        bottom and right exclusive.
    """

    pixels: np.ndarray
    cell_ids: np.ndarray
    boxes: np.ndarray


def cell_crops(
    image: np.ndarray,
    cell_labels: np.ndarray,
    size: int,
    *,
    channels: int | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    blank_other_cells: bool = True,
    max_bytes: int | None = None,
) -> CellCrops:
    """Cut, resize and normalise one crop per cell, as a classifier takes them.

    Parameters
    ----------
    image : ndarray of uint8 or uint16, shape (H, W, C)
        The image, channels last.
    cell_labels : ndarray of int, shape (H, W)
        Cell label mask; 0 is background.
    size : int
        Side of the square crops (the model's input size).
    channels : int, optional
        Channels the image must have (a model's input channels).
    mean, std : tuple of float, optional
        Per-channel normalisation after scaling to [0, 1] (default 0 and 1).
    blank_other_cells : bool
        Zero the pixels of neighbouring cells inside each crop, so that a
        cell is judged on its own pixels only.
    max_bytes : int, optional
        Refuse crops that would take more memory than this.

    Returns
    -------
    CellCrops
        Empty (N = 0) when the mask holds no cell.

    Raises
    ------
    ValueError
        Naming ``image`` for a wrong shape, dtype or channel count, and
        ``cell_labels`` for a mask that is not integer or not the image's size.

    Notes
    -----
    Each crop is the square around the cell's bounding box, its side the box's
    longer side, zero-padded where it leaves the image (see
    :func:`labsight.patches.cell_patches`), resized bilinearly with
    antialiasing to ``size`` × ``size``.

    Examples
    --------
    >>> image = np.zeros((8, 8, 4), np.uint8)
    >>> labels = np.zeros((8, 8), np.int32)
    >>> labels[2:6, 3:5] = 7
    >>> crops = cell_crops(image, labels, 16)
    >>> crops.pixels.shape, crops.cell_ids.tolist(), crops.boxes.tolist()
    ((1, 4, 16, 16), [7], [[2, 3, 6, 5]])
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image: expected a non-empty (H, W, C) array, got shape {list(image.shape)}")
    if image.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"image: dtype {image.dtype} not supported; expected uint8 or uint16")
    if channels is not None and image.shape[2] != channels:
        raise ValueError(f"image: {image.shape[2]} channel(s); the model takes {channels}")
    labels = np.asarray(cell_labels)
    if labels.dtype.kind not in "iu":
        raise ValueError(f"cell_labels: expected an integer mask, got dtype {labels.dtype}")
    if labels.shape != image.shape[:2]:
        raise ValueError(
            f"cell_labels: shape {list(labels.shape)} does not match the image's {list(image.shape[:2])}"
        )
    if size < 1:
        raise ValueError(f"size: must be >= 1, got {size}")
    count = image.shape[2]
    shift = np.zeros(count, np.float32) if mean is None else np.asarray(mean, np.float32)
    spread = np.ones(count, np.float32) if std is None else np.asarray(std, np.float32)
    if shift.shape != (count,) or spread.shape != (count,):
        raise ValueError(f"mean, std: expected {count} values each (one per channel)")
    boxes = cell_boxes(labels)
    if not boxes:
        return CellCrops(
            np.zeros((0, count, size, size), np.float32), np.zeros(0, np.int64), np.zeros((0, 4), np.int64)
        )
    patches = cell_patches(image, labels, size, blank_other_cells=blank_other_cells, max_bytes=max_bytes,
                           boxes=boxes)
    scale = 1.0 / (np.float32(np.iinfo(image.dtype).max) * spread)
    pixels = np.empty((len(boxes), count, size, size), np.float32)
    np.multiply(patches.pixels.transpose(0, 3, 1, 2), scale[None, :, None, None], out=pixels)
    pixels -= (shift / spread)[None, :, None, None]
    corners = np.array(
        [(rows.start, cols.start, rows.stop, cols.stop) for _, (rows, cols) in boxes], dtype=np.int64
    )
    return CellCrops(pixels, patches.labels, corners)
