"""Deep-feature arithmetic around a CNN: input preprocessing, layer pooling and column names."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np

from labsight.models import Preprocessing
from labsight.resize import resize_image

PoolingMode = Literal["average", "max", "none"]
POOLING_MODES: tuple[PoolingMode, ...] = ("average", "max", "none")


def preprocess(
    images: Sequence[np.ndarray],
    input_size: tuple[int, int],
    preprocessing: Preprocessing,
    field: str = "images",
) -> np.ndarray:
    """Stack images into a model batch: resized, scaled to [0, 1], normalised, channels first.

    Parameters
    ----------
    images : sequence of ndarray, each (H, W, 3), (H, W, 1) or (H, W), uint8 or uint16
        RGB or grey images (grey is repeated into three channels).
    input_size : tuple of int
        Model input (height, width); images are resized bilinearly to it.
    preprocessing : Preprocessing
        Per-channel mean and std applied after scaling by the dtype's range.
    field : str
        Request field the images came from, for error messages.

    Returns
    -------
    ndarray of float32, shape (N, 3, height, width)

    Raises
    ------
    ValueError
        Naming ``<field>[i]`` for an empty image, a wrong channel count or dtype.
    """
    if len(images) == 0:
        raise ValueError(f"{field}: no images given")
    mean = np.asarray(preprocessing.mean, np.float32)
    std = np.asarray(preprocessing.std, np.float32)
    batch = np.empty((len(images), 3, *input_size), np.float32)
    for index, image in enumerate(images):
        rgb = _as_rgb(image, f"{field}[{index}]")
        # (x / max - mean) / std as one multiply-add per channel, written in place; pixels
        # already at the input size are read as integers, without a float copy first.
        scale = 1.0 / (np.float32(np.iinfo(image.dtype).max) * std)
        pixels = rgb if rgb.shape[:2] == tuple(input_size) else resize_image(rgb, input_size)
        for channel in range(3):
            plane = batch[index, channel]
            np.multiply(pixels[:, :, channel], scale[channel], out=plane, dtype=np.float32)
            plane -= mean[channel] / std[channel]
    return batch


def check_images(images: Sequence[np.ndarray], field: str = "images") -> None:
    """Raise ValueError naming the first image :func:`preprocess` would refuse, or an empty list."""
    if len(images) == 0:
        raise ValueError(f"{field}: no images given")
    for index, image in enumerate(images):
        _check_image(image, f"{field}[{index}]")


def _check_image(image: np.ndarray, field: str) -> None:
    if image.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"{field}: dtype {image.dtype} not supported; expected uint8 or uint16")
    if image.ndim not in (2, 3) or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{field}: expected a non-empty (H, W, 3) image, got shape {list(image.shape)}")
    if image.ndim == 3 and image.shape[2] not in (1, 3):
        raise ValueError(f"{field}: {image.shape[2]} channels; expected 3 (RGB) or 1 (grey)")


def _as_rgb(image: np.ndarray, field: str) -> np.ndarray:
    _check_image(image, field)
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    return image


def pool(activations: np.ndarray, mode: PoolingMode) -> np.ndarray:
    """Reduce (N, C, ...) activations to (N, D) float64 feature vectors.

    ``average`` and ``max`` reduce every axis after the channel axis (global
    pooling, D = C); ``none`` flattens each activation map in C order. (N, D)
    activations pass through unchanged.
    """
    if mode not in POOLING_MODES:
        raise ValueError(f"pooling: expected one of {list(POOLING_MODES)}, got {mode!r}")
    values = activations.astype(np.float64, copy=False)
    if values.ndim <= 2 or mode == "none":
        return values.reshape(len(values), -1)
    spatial = tuple(range(2, values.ndim))
    return values.mean(axis=spatial) if mode == "average" else values.max(axis=spatial)


CACHED_COLUMNS_MAX = 4096
"""Most columns whose names are cached: a pooled layer's channels (1280, 2048) are; an
unpooled activation map's (``pooling=none``: up to millions) are not, or the cache's 256
entries would keep gigabytes of names (+552 MiB after 160 calls on random layers)."""


def feature_columns(layer: str, count: int) -> list[str]:
    """Column names ``<layer>1 .. <layer>count`` as the seed wrote them (``avgpool1``, ...).

    A layer name ending in a digit gets an underscore first (``_blocks.15_1``) so
    the index stays readable. The names of a pooled layer are made once (1280 of them
    took 0.19 ms, 2% of a single-image request's CPU); longer lists are made each time.
    """
    if count > CACHED_COLUMNS_MAX:
        return list(_column_names(layer, count))
    return list(_cached_columns(layer, count))


@functools.lru_cache(maxsize=256)
def _cached_columns(layer: str, count: int) -> tuple[str, ...]:
    return tuple(_column_names(layer, count))


def _column_names(layer: str, count: int) -> Iterator[str]:
    stem = f"{layer}_" if layer[-1:].isdigit() else layer
    return (f"{stem}{i}" for i in range(1, count + 1))
