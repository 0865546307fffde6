"""Resizing image arrays of any channel count and dtype, the same way for every service."""

from __future__ import annotations

import numpy as np
from PIL import Image as PILImage


def resize_image(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an (H, W) or (H, W, C) array to ``size`` = (height, width).

    Parameters
    ----------
    pixels : ndarray, shape (H, W) or (H, W, C)
        Any real dtype; each channel is resized on its own in float32.
    size : tuple of int
        Output (height, width), both >= 1.

    Returns
    -------
    ndarray of float32, shape (height, width) or (height, width, C)
        Unchanged values (as float32) when the size already matches.

    Notes
    -----
    Pillow's bilinear filter widens its support when shrinking, so downscaling
    averages over the covered pixels instead of aliasing.
    """
    height, width = size
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive, got {size}")
    planes = pixels.astype(np.float32, copy=False)
    if planes.shape[:2] == (height, width):
        return planes
    if planes.ndim == 2:
        return _resize_plane(planes, height, width)
    return np.stack(
        [_resize_plane(planes[:, :, c], height, width) for c in range(planes.shape[2])], axis=2
    )


def _resize_plane(plane: np.ndarray, height: int, width: int) -> np.ndarray:
    image = PILImage.fromarray(np.ascontiguousarray(plane))
    return np.asarray(image.resize((width, height), PILImage.Resampling.BILINEAR), dtype=np.float32)


def cast_like(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Round and clip float ``values`` into an integer ``dtype``'s range (floats pass through)."""
    dtype = np.dtype(dtype)
    if dtype.kind not in "iu":
        return values.astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.rint(values), info.min, info.max).astype(dtype)
