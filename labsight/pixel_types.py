"""Pixels of the dtypes labs write beyond uint8 and uint16, read as uint16 by the intensity choice.

Deconvolution, ratio and background-subtracted images are saved as 32-bit
floating point (ImageJ's "32-bit"), some cameras write signed 16-bit, counting
detectors 32-bit integers, and masks 1 bit per pixel. Every algorithm of
LabSight reads uint8 or uint16, so these are mapped linearly onto uint16
(1-bit onto uint8 0 and 255) by the ``intensity`` choice
(:mod:`labsight.intensity`), whose range means for them:

==========================  ==========================================================
``full-range`` (default)    0 .. 1 for floating point (scikit-image's convention),
                            0 .. the dtype maximum for integers; data outside it is
                            refused, since clipping it would mislead
``bit-depth[:B]``           0 .. 2^B - 1 (integers only)
``percentile:LO-HI``        percentiles of the finite values
``minmax``                  smallest .. largest finite value
``range:LO-HI``             LO .. HI
==========================  ==========================================================

Values outside the range are clipped and rounded half up, as for uint8 and uint16, so
signed 16-bit data at ``bit-depth:B`` gives what the same values in uint16 give; NaN reads
as black and is counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from labsight.intensity import LOW_RANGE_FRACTION, IntensityScaling, ScaledPixels

NATIVE_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))
"""What the algorithms read: these pass through unconverted."""

CONVERTED_DTYPES = tuple(np.dtype(name) for name in (
    "bool", "int8", "int16", "int32", "uint32", "float16", "float32", "float64"
))
"""What is read as uint16 (bool: uint8)."""

_TOP = float(np.iinfo(np.uint16).max)


@dataclass(frozen=True)
class ConvertedPixels:
    """Pixels mapped onto uint16 (or uint8 from 1-bit) and what the mapping did.

    Attributes
    ----------
    scaled : ScaledPixels
        The pixels, the values mapped to black and white, how many were clipped.
    not_a_number : int
        NaN values, read as black.
    low, high : float
        The smallest and largest finite value before the mapping (0 and 0 if none).
    """

    scaled: ScaledPixels
    not_a_number: int = 0
    low: float = 0.0
    high: float = 0.0

    def low_range_warning(self, field: str, scaling: IntensityScaling) -> str | None:
        """A warning when the values span under 1/LOW_RANGE_FRACTION of what became black to
        white (a 32-bit count image read full-range, say), naming the values as the file has them."""
        black, white = self.scaled.black, self.scaled.white
        if white <= black or (self.high - self.low) * LOW_RANGE_FRACTION >= white - black:
            return None
        return (
            f"{field}: values span {self.low:g}-{self.high:g}, under 1/{LOW_RANGE_FRACTION} of the "
            f"{black:g}-{white:g} that intensity={scaling.text} reads as black to white: set "
            "params.intensity=minmax, percentile:0.1-99.9 or range:LO-HI"
        )


def readable_dtype(dtype: np.dtype) -> bool:
    """Whether pixels of ``dtype`` can be read (natively or converted)."""
    return np.dtype(dtype) in NATIVE_DTYPES or np.dtype(dtype) in CONVERTED_DTYPES


def delivered_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype pixels of ``dtype`` are read as: itself if native, uint8 for 1-bit, else uint16."""
    dtype = np.dtype(dtype)
    if dtype in NATIVE_DTYPES:
        return dtype
    return np.dtype(np.uint8) if dtype == np.bool_ else np.dtype(np.uint16)


def conversion_bytes(shape: tuple[int, ...], dtype: np.dtype) -> int:
    """Memory :func:`to_native` takes at most beyond the pixels it is given: a working copy
    (float32 or float64, see :func:`_work_dtype`), the uint16 result, two masks of a byte per
    pixel, and for percentiles a copy of the finite values (sorted in place by numpy)."""
    dtype = np.dtype(dtype)
    if dtype in NATIVE_DTYPES:
        return 0
    pixels = int(np.prod(shape))
    if dtype == np.bool_:
        return pixels
    return pixels * max(_work_dtype(dtype).itemsize + 2 + 2, dtype.itemsize + 2)


def _work_dtype(dtype: np.dtype) -> np.dtype:
    """The float dtype :func:`to_native` computes in for pixels of ``dtype``: float32 for float16
    and float32 data, float64 for integers (float32 would round some of 12-bit data's values
    other than :func:`labsight.intensity.scale_intensity` does)."""
    return np.dtype(np.float32 if dtype in (np.float16, np.float32) else np.float64)


def check_scaling(dtype: np.dtype, scaling: IntensityScaling) -> None:
    """ValueError when ``scaling`` cannot map pixels of ``dtype`` (bit depths of floating point)."""
    dtype = np.dtype(dtype)
    if scaling.kind == "bit-depth" and dtype.kind == "f":
        raise ValueError(
            f"{scaling.text} needs integer pixels; {dtype} pixels take full-range (0 to 1), "
            "minmax, percentile:LO-HI or range:LO-HI"
        )
    if scaling.kind == "bit-depth" and scaling.bits and dtype.kind in "iu" \
            and scaling.bits > dtype.itemsize * 8 - (dtype.kind == "i"):
        raise ValueError(f"{scaling.text} exceeds the image's {dtype} samples")


def to_native(
    pixels: np.ndarray, scaling: IntensityScaling, metadata_bits: int | None = None
) -> ConvertedPixels:
    """Map pixels of a :data:`CONVERTED_DTYPES` dtype onto uint16 (1-bit onto uint8 0/255).

    The range ``scaling`` chooses (see the module's table) becomes 0 .. 65535,
    linearly, rounded to the nearest integer; values outside it are clipped.

    Raises
    ------
    ValueError
        ``full-range`` of data outside the dtype's range (floats outside 0-1,
        negative integers), or a choice :func:`check_scaling` refuses.

    Examples
    --------
    >>> from labsight.intensity import parse_intensity
    >>> to_native(np.array([0.0, 0.5, 1.0], np.float32), parse_intensity("full-range")).scaled.pixels
    array([    0, 32768, 65535], dtype=uint16)
    """
    if pixels.dtype == np.bool_:
        return ConvertedPixels(ScaledPixels(pixels.astype(np.uint8) * np.uint8(255), 0.0, 1.0, 0),
                               low=float(pixels.min(initial=False)), high=float(pixels.max(initial=False)))
    check_scaling(pixels.dtype, scaling)
    # Masks and reductions, no copy of the values (but for percentiles): a big image stays
    # within conversion_bytes.
    finite = np.isfinite(pixels) if pixels.dtype.kind == "f" else None
    not_a_number = int(np.count_nonzero(np.isnan(pixels))) if finite is not None else 0
    any_finite = bool(finite.any()) if finite is not None else pixels.size > 0
    low = high = 0.0
    if any_finite and finite is None:
        low, high = float(pixels.min()), float(pixels.max())
    elif any_finite:
        low = float(np.min(pixels, where=finite, initial=np.inf))
        high = float(np.max(pixels, where=finite, initial=-np.inf))
    black, white = _range(pixels, finite, scaling, metadata_bits, high)
    if any_finite and scaling.kind == "full-range" and (low < black or high > white):
        raise ValueError(
            f"{pixels.dtype} pixels span {low:g} to {high:g}, outside the {black:g}-{white:g} "
            "that full-range reads them as: choose minmax, percentile:LO-HI (e.g. "
            "percentile:0.1-99.9) or range:LO-HI for the values that are black and white"
        )
    clipped = int(np.count_nonzero((pixels < black) | (pixels > white)))  # NaN is neither
    work = _work_dtype(pixels.dtype).type
    if white <= black:  # one value only: nothing to stretch
        out = np.zeros(pixels.shape, np.uint16)
    else:
        # In halves, so that float64 data spanning more than its largest value does not overflow.
        half_span = white / 2 - black / 2
        stretched = pixels.astype(work)  # the one working copy; every step below is in place
        with np.errstate(over="ignore", invalid="ignore"):  # ±inf and values far out are clipped
            stretched *= work(0.5)
            stretched -= work(black / 2)
            stretched *= work(_TOP / half_span)
        np.clip(stretched, 0, _TOP, out=stretched)
        stretched += work(0.5)
        np.floor(stretched, out=stretched)  # half up, as labsight.intensity rounds
        if not_a_number:  # only float input has NaN; ±inf was clipped above
            stretched[np.isnan(stretched)] = 0
        out = stretched.astype(np.uint16)
    return ConvertedPixels(ScaledPixels(out, black, white, clipped), not_a_number, low, high)


def _range(pixels: np.ndarray, finite: np.ndarray | None, scaling: IntensityScaling,
           metadata_bits: int | None, high: float) -> tuple[float, float]:
    """The values ``scaling`` maps to black and white for ``pixels`` (``finite``: their mask of
    finite values, None for integers; ``high``: their largest finite value)."""
    if scaling.kind == "full-range":
        return 0.0, 1.0 if pixels.dtype.kind == "f" else float(np.iinfo(pixels.dtype).max)
    if scaling.kind == "bit-depth":  # integers only (check_scaling)
        bits = scaling.bits or metadata_bits or max(1, int(max(high, 0)).bit_length())
        return 0.0, float((1 << bits) - 1)
    if scaling.kind == "range":
        return scaling.low, scaling.high
    values = pixels[finite] if finite is not None else pixels.reshape(-1)
    if values.size == 0:
        return 0.0, 0.0
    low, high = np.percentile(values, [scaling.low, scaling.high],
                              overwrite_input=finite is not None)  # values: a copy already
    return float(low), float(high)
