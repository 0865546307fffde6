"""Intensity scaling of image pixels: the one mapping every pipeline applies before its algorithm.

Every algorithm of LabSight reads intensities relative to the range of the
image's dtype: the fractal threshold is r/255 of it (r for uint8, 257·r for
uint16), CNN inputs are pixels / dtype maximum. Most scientific cameras write
12- or 14-bit data into 16-bit files, which then occupy a sixteenth or a
quarter of that range; the ``intensity`` choice says which values are the
image's black and white, and :func:`scale_intensity` stretches them linearly
onto the dtype's whole range (same dtype in and out):

==========================  ==========================================================
``full-range`` (default)    0 .. dtype maximum: pixels unchanged
``bit-depth:B``             0 .. 2^B - 1 (B from 1 to the dtype's bits)
``bit-depth``               as ``bit-depth:B`` with B from the file's metadata
                            (TIFF BitsPerSample, OME SignificantBits), else the data
``percentile:LO-HI``        the LO-th .. HI-th percentile of the image's values
``minmax``                  the image's smallest .. largest value
``range:LO-HI``             LO .. HI, the same values for every image (e.g. range:100-3000,
                            range:-0.5-2.5 for floating-point data)
==========================  ==========================================================

Files of other dtypes (floating point, signed or 32-bit integers, 1-bit) are
read as uint16 by the same choices (:mod:`labsight.pixel_types`).

Values outside the range are clipped. ``bit-depth:B`` maps x to
round(x · M / (2^B - 1)) with M the dtype maximum, in integer arithmetic, so
a 12-bit image holding 16 · v for an 8-bit image v gives, in uint16 with
threshold 257·r, exactly the fractal numbers of v (tests/unit/test_intensity.py
checks every pair of values and box sides up to 255).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DEFAULT_INTENSITY",
    "IntensityScaling",
    "LOW_RANGE_FRACTION",
    "ScaledPixels",
    "check_bit_depth",
    "low_range_warning",
    "parse_intensity",
    "scale_intensity",
]

DEFAULT_INTENSITY = "full-range"

LOW_RANGE_FRACTION = 16
"""Data whose values span less than 1/16 of its dtype's range gets a warning."""

_BIT_DEPTH = re.compile(r"bit-depth(?::(\d{1,2}))?")
_PERCENTILE = re.compile(r"percentile:(\d+(?:\.\d*)?)-(\d+(?:\.\d*)?)")
_NUMBER = r"(-?(?:\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?)"
_RANGE = re.compile(rf"range:{_NUMBER}-{_NUMBER}")


@dataclass(frozen=True)
class IntensityScaling:
    """A parsed ``intensity`` choice.

    Attributes
    ----------
    kind : {"full-range", "bit-depth", "percentile", "range"}
        ``minmax`` is ``percentile`` 0-100.
    bits : int or None
        For ``bit-depth``: the bit depth, or None to take it from the metadata or the data.
    low, high : float
        For ``percentile``: the percentiles that become black and white; for ``range``,
        the values.
    text : str
        The choice as written (normalised), for provenance.
    """

    kind: str
    bits: int | None = None
    low: float = 0.0
    high: float = 100.0
    text: str = DEFAULT_INTENSITY


@dataclass(frozen=True)
class ScaledPixels:
    """Pixels after :func:`scale_intensity` and what was done to them.

    Attributes
    ----------
    pixels : ndarray
        Same shape and dtype as the input.
    black, white : float
        The input values mapped to 0 and to the dtype maximum.
    clipped : int
        Number of values outside [black, white] that were clipped.
    """

    pixels: np.ndarray
    black: float
    white: float
    clipped: int


def parse_intensity(text: str) -> IntensityScaling:
    """``full-range``, ``bit-depth[:B]``, ``percentile:LO-HI``, ``minmax`` or ``range:LO-HI``;
    ValueError otherwise.

    Examples
    --------
    >>> parse_intensity("bit-depth:12").bits
    12
    """
    cleaned = text.strip().lower() or DEFAULT_INTENSITY
    if cleaned == "full-range":
        return IntensityScaling("full-range")
    if cleaned == "minmax":
        return IntensityScaling("percentile", low=0.0, high=100.0, text="minmax")
    match = _BIT_DEPTH.fullmatch(cleaned)
    if match:
        bits = int(match.group(1)) if match.group(1) else None
        if bits is not None and not 1 <= bits <= 16:
            raise ValueError(f"bit depth must be 1 to 16, got {bits}")
        return IntensityScaling("bit-depth", bits=bits, text=cleaned)
    match = _PERCENTILE.fullmatch(cleaned)
    if match:
        low, high = float(match.group(1)), float(match.group(2))
        if not 0 <= low < high <= 100:
            raise ValueError(f"percentiles must satisfy 0 <= LO < HI <= 100, got {low}-{high}")
        return IntensityScaling("percentile", low=low, high=high, text=cleaned)
    match = _RANGE.fullmatch(cleaned)
    if match:
        low, high = float(match.group(1)), float(match.group(2))
        if not (np.isfinite(low) and np.isfinite(high) and low < high):
            raise ValueError(f"range:LO-HI needs finite LO < HI, got {low:g}-{high:g}")
        return IntensityScaling("range", low=low, high=high, text=f"range:{low:g}-{high:g}")
    shown = text if len(text) <= 100 else f"{text[:100]!r}… ({len(text)} characters)"
    raise ValueError(
        f"expected full-range, bit-depth:B (e.g. bit-depth:12), bit-depth (from the file), "
        f"percentile:LO-HI (e.g. percentile:0.1-99.9), minmax or range:LO-HI (e.g. range:100-3000), "
        f"got {shown!r}"
    )


def scale_intensity(
    pixels: np.ndarray, scaling: IntensityScaling, metadata_bits: int | None = None
) -> ScaledPixels:
    """Stretch the intensity range chosen by ``scaling`` onto the whole range of the dtype.

    Parameters
    ----------
    pixels : ndarray of uint8 or uint16
        Any shape; all channels share one range.
    scaling : IntensityScaling
        From :func:`parse_intensity`.
    metadata_bits : int, optional
        Significant bits the file declares, used by ``bit-depth`` without a number.

    Returns
    -------
    ScaledPixels

    Raises
    ------
    ValueError
        A bit depth above the dtype's bits.
    """
    top = int(np.iinfo(pixels.dtype).max)
    if scaling.kind == "full-range" or pixels.size == 0:
        return ScaledPixels(pixels, 0.0, float(top), 0)
    # Every mapping goes through a table of all top + 1 values and a histogram, so memory
    # stays one output image whatever the image size (no float copy of the pixels).
    counts = np.bincount(pixels.ravel(), minlength=top + 1)
    values = np.arange(top + 1, dtype=np.int64)
    if scaling.kind == "bit-depth":
        bits = scaling.bits or metadata_bits or data_bit_depth(pixels)
        check_bit_depth(bits, pixels.dtype)
        black, white = 0.0, float((1 << bits) - 1)
        # round(x * top / white), half up, exact in integers.
        limit = int(white)
        table = (np.minimum(values, limit) * (2 * top) + limit) // (2 * limit)
    else:
        black, white = (
            (scaling.low, scaling.high) if scaling.kind == "range"
            else (_percentile(counts, q) for q in (scaling.low, scaling.high))
        )
        if white <= black:  # one value only: nothing to stretch
            table = np.zeros_like(values)
        else:
            table = np.rint(np.clip((values - black) / (white - black), 0.0, 1.0) * top)
    clipped = int(counts[(values < black) | (values > white)].sum())
    return ScaledPixels(table.astype(pixels.dtype)[pixels], black, white, clipped)


def _percentile(counts: np.ndarray, q: float) -> float:
    """The q-th percentile of the values whose histogram is ``counts``, as numpy.percentile
    (linear interpolation between the two nearest values in sorted order)."""
    cumulative = np.cumsum(counts)
    position = q / 100 * (int(cumulative[-1]) - 1)
    below = int(np.floor(position))
    low, high = (int(np.searchsorted(cumulative, k, side="right"))
                 for k in (below, min(below + 1, int(cumulative[-1]) - 1)))
    return low + (high - low) * (position - below)


def check_bit_depth(bits: int | None, dtype: np.dtype) -> None:
    """ValueError when ``bits`` (a ``bit-depth:B`` choice) exceed what ``dtype`` holds."""
    if bits is not None and bits > np.dtype(dtype).itemsize * 8:
        raise ValueError(f"bit-depth:{bits} exceeds the image's {np.dtype(dtype)} samples")


def data_bit_depth(pixels: np.ndarray) -> int:
    """Fewest bits that hold the largest value of ``pixels`` (at least 1)."""
    return max(1, int(pixels.max()).bit_length()) if pixels.size else 1


def low_range_warning(pixels: np.ndarray, field: str, stated_bits: int | None = None) -> str | None:
    """A warning when ``pixels`` span less than 1/LOW_RANGE_FRACTION of their dtype's range.

    Algorithms read intensities relative to the dtype's range, so such data
    (12-bit camera values in a 16-bit file, a dim 8-bit image) gives numbers
    that are not comparable to full-range data. The warning names the values,
    the dtype and the ``intensity`` choices that fix it: ``bit-depth`` where the
    file states fewer significant bits than its dtype holds (``stated_bits``, from
    OME SignificantBits or BitsPerSample) and the values fit them.
    """
    if pixels.size == 0:
        return None
    top = int(np.iinfo(pixels.dtype).max)
    low, high = int(pixels.min()), int(pixels.max())
    if high - low >= (top + 1) // LOW_RANGE_FRACTION:
        return None
    bits = data_bit_depth(pixels)
    fixes = "params.intensity=percentile:0.1-99.9 or minmax"
    dtype_bits = pixels.dtype.itemsize * 8
    if stated_bits is not None and bits <= stated_bits < dtype_bits:
        fixes = (f"params.intensity=bit-depth (the file states {stated_bits} significant bits), "
                 "else percentile:0.1-99.9 or minmax")
    elif low < high and bits < dtype_bits:
        fixes = (f"params.intensity=bit-depth:{bits} if this is {bits}-bit data, else "
                 "percentile:0.1-99.9 or minmax")
    return (
        f"{field}: pixel values span {low}-{high}, under 1/{LOW_RANGE_FRACTION} of the "
        f"{pixels.dtype} range 0-{top}; results assume intensities relative to that range "
        f"(fractal thresholds, CNN inputs): set {fixes}"
    )
