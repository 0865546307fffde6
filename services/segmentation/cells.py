"""Nuclei and whole cells of a fluorescence image: the public segmentation functions.

``segment_nuclei`` labels the nuclei of a nuclear stain; ``segment_cells``
labels nuclei and the cells around them from an HPA-style image's channels
(red microtubules + yellow ER for the cytoplasm, blue nuclei). Both check their
input, pick a method by name and return int32 labels (0 = background, ids
1..N); cell k contains nucleus k. Methods are plain functions in
``NUCLEUS_METHODS`` and ``CELL_METHODS``, so a new one is one entry there:

- ``flows`` (default): the Cellpose-style flow networks shipped by the
  scellseg package, tiled at any size (:mod:`services.segmentation.flows`);
- ``classical``: smoothing, Otsu threshold, seeded watershed; cells by
  propagation over the cytoplasm (:mod:`services.segmentation.classical`);
- ``hpa``: HPA-Cell-Segmentation's two U-Nets, when an operator supplies their
  weights (:mod:`services.segmentation.hpa_method`).
"""

from __future__ import annotations

import math
from typing import Protocol, TypeVar

import numpy as np
from numpy.typing import ArrayLike

from labsight.errors import InvalidArgument, echo
from services.segmentation.classical import classical_cells, classical_nuclei
from services.segmentation.flows import segment_cells_flows, segment_nuclei_flows
from services.segmentation.hpa_method import hpa_cells, hpa_nuclei

__all__ = [
    "CELL_METHODS",
    "DEFAULT_METHOD",
    "DEFAULT_PIXEL_SIZE_UM",
    "NUCLEUS_METHODS",
    "segment_cells",
    "segment_nuclei",
]

DEFAULT_PIXEL_SIZE_UM = 0.08
"""Human Protein Atlas images: 0.08 µm per pixel (63× objective); the proto's 0 means this."""

DEFAULT_METHOD = "flows"
"""The method used when none is named: the flow networks, held-out mnfinder nuclei AP@0.5 0.866
against classical's 0.742 (bench/segmentation_quality.py)."""

Method = TypeVar("Method")


class NucleusMethod(Protocol):
    """A nucleus method: checked float32 nuclear stain → int32 labels 1..N."""

    def __call__(self, nuclei: np.ndarray, *, pixel_size_um: float) -> np.ndarray: ...


class CellMethod(Protocol):
    """A cell method: checked float32 channels → (nucleus labels, cell labels), cell k ⊇ nucleus k."""

    def __call__(self, microtubules: np.ndarray, er: np.ndarray, nuclei: np.ndarray, *,
                 pixel_size_um: float) -> tuple[np.ndarray, np.ndarray]: ...


def _classical_nuclei_and_cells(
    microtubules: np.ndarray, er: np.ndarray, nuclei: np.ndarray, *, pixel_size_um: float
) -> tuple[np.ndarray, np.ndarray]:
    nucleus_labels = classical_nuclei(nuclei, pixel_size_um)
    return nucleus_labels, classical_cells(microtubules + er, nucleus_labels, pixel_size_um)


NUCLEUS_METHODS: dict[str, NucleusMethod] = {
    "classical": classical_nuclei, "flows": segment_nuclei_flows, "hpa": hpa_nuclei,
}
"""Nucleus methods by name; a method is called as ``f(nuclei, pixel_size_um=...)``."""

CELL_METHODS: dict[str, CellMethod] = {
    "classical": _classical_nuclei_and_cells, "flows": segment_cells_flows, "hpa": hpa_cells,
}
"""Cell methods by name; called as ``f(microtubules, er, nuclei, pixel_size_um=...)``."""

_DTYPES = "uint8, uint16 or float"


def segment_nuclei(
    nuclei: ArrayLike,
    *,
    pixel_size_um: float = DEFAULT_PIXEL_SIZE_UM,
    method: str = DEFAULT_METHOD,
) -> np.ndarray:
    """Label the nuclei of a nuclear-stain image.

    Parameters
    ----------
    nuclei : array_like, shape (H, W)
        Nuclear stain (HPA's blue channel, DAPI, Hoechst); uint8, uint16 or float.
    pixel_size_um : float, optional
        Side of a pixel in micrometres (HPA: 0.08). Every size limit scales with it.
    method : str, optional
        A key of ``NUCLEUS_METHODS``.

    Returns
    -------
    ndarray of int32, shape (H, W)
        0 = background, nuclei 1..N. An all-zero image gives all zeros.

    Raises
    ------
    InvalidArgument
        A ValueError naming the argument: not 2-D, an unsupported dtype, a pixel size that
        is not a positive number, an unknown method.

    Examples
    --------
    >>> image = np.zeros((64, 80), np.uint8)
    >>> image[20:36, 20:36] = 200
    >>> int(segment_nuclei(image, pixel_size_um=0.5, method="classical").max())
    1
    """
    find = _method(NUCLEUS_METHODS, method)
    pixels = _channel("nuclei", nuclei)
    return find(pixels, pixel_size_um=_pixel_size(pixel_size_um))


def segment_cells(
    microtubules: ArrayLike,
    er: ArrayLike,
    nuclei: ArrayLike,
    *,
    pixel_size_um: float = DEFAULT_PIXEL_SIZE_UM,
    method: str = DEFAULT_METHOD,
) -> tuple[np.ndarray, np.ndarray]:
    """Label nuclei and the cells around them in an HPA-style image.

    Parameters
    ----------
    microtubules, er, nuclei : array_like, shape (H, W)
        The red (microtubules), yellow (ER) and blue (nuclei) channels; uint8, uint16 or
        float, one shape; integers are scaled to [0, 1] by their dtype's range (floats are
        taken as they are). The classical method's cytoplasm signal is red + yellow.
    pixel_size_um : float, optional
        Side of a pixel in micrometres (HPA: 0.08).
    method : str, optional
        A key of ``CELL_METHODS``.

    Returns
    -------
    nucleus_labels, cell_labels : ndarray of int32, shape (H, W)
        0 = background; cell k contains nucleus k, and every nucleus has a cell (the
        nucleus itself where no cytoplasm surrounds it).

    Raises
    ------
    InvalidArgument
        Naming the argument: not 2-D, shapes that differ, an unsupported dtype, a pixel size
        that is not a positive number, an unknown method.
    """
    find = _method(CELL_METHODS, method)
    red = _channel("microtubules", microtubules)
    yellow = _channel("er", er)
    blue = _channel("nuclei", nuclei)
    for name, channel in (("er", yellow), ("nuclei", blue)):
        if channel.shape != red.shape:
            raise InvalidArgument(f"{name}: shape {channel.shape} differs from microtubules' "
                                  f"{red.shape}; the channels must have one shape")
    return find(red, yellow, blue, pixel_size_um=_pixel_size(pixel_size_um))


def _method(methods: dict[str, Method], name: str) -> Method:
    try:
        return methods[name]
    except (KeyError, TypeError):
        raise InvalidArgument(f"method: unknown segmentation method {echo(str(name))}; "
                              f"choose one of {sorted(methods)}") from None


def _pixel_size(value: float) -> float:
    try:
        size = float(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"pixel_size_um: must be a number, got {echo(str(value))}") from None
    if not math.isfinite(size) or size <= 0:
        raise InvalidArgument("pixel_size_um: must be a positive number of micrometres, got "
                              f"{echo(str(value))}")
    return size


def _channel(name: str, values: ArrayLike) -> np.ndarray:
    """One channel as float32 scaled to [0, 1] by its integer dtype (floats unchanged)."""
    array = np.asarray(values)
    if array.ndim != 2 or 0 in array.shape:
        raise InvalidArgument(f"{name}: must be a non-empty 2-D image, got shape {array.shape}")
    if array.dtype in (np.uint8, np.uint16):
        return array.astype(np.float32) / np.float32(np.iinfo(array.dtype).max)
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise InvalidArgument(f"{name}: holds NaN or infinite values")
        return array.astype(np.float32, copy=False)
    raise InvalidArgument(f"{name}: dtype {array.dtype} is not supported; use {_DTYPES}")
