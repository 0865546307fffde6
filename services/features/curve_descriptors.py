"""The seed's four descriptors of a feature curve y(r): area, skewness, area ratio and maximum."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "CurveDescriptors", "curve_area", "curve_area_ratio", "curve_descriptors", "curve_descriptors_of_rows",
    "curve_skewness",
]


@dataclass(frozen=True)
class CurveDescriptors:
    """Area, skewness, area ratio and maximum of one curve (see :func:`curve_descriptors`)."""

    area: float
    skewness: float
    area_ratio: float
    maximum: float


def curve_area(x: ArrayLike, y: ArrayLike) -> float:
    """Area under the curve by the seed's trapezoid rule.

    Parameters
    ----------
    x, y : array_like, shape (n,)
        Abscissae (the box sides r, evenly spaced) and the curve's values.

    Returns
    -------
    float

    Notes
    -----
    .. math:: A = \\frac{x_{n-1} - x_0}{2n} \\sum_{i=0}^{n-2} (y_i + y_{i+1})

    The step is (b - a) / n, not (b - a) / (n - 1) as in the true trapezoid rule, so for
    20 points A is 0.95 times the true area; the seed's columns depend on it. A curve
    of one point has area 0.
    """
    xs, ys = _curve(x, y)
    return _area(xs, ys)


def curve_skewness(y: ArrayLike) -> float:
    """Population skewness of the curve's values, 0 for a constant curve.

    Notes
    -----
    .. math:: g = \\frac{\\overline{(y - \\bar y)^3}}{\\left(\\overline{(y - \\bar y)^2}\\right)^{3/2}}
    """
    ys = _values("y", y)
    if np.all(ys == ys[0]):
        return 0.0
    deviation = ys - ys.mean()
    return float(np.mean(deviation**3) / np.mean(deviation**2) ** 1.5)


def curve_area_ratio(x: ArrayLike, y: ArrayLike) -> float:
    """Area of the first ⌊n/2⌋ points over the area of the rest, each by :func:`curve_area`.

    Returns NaN when the second area is 0 (a flat zero tail, or fewer than 4 points), rather
    than an infinity that tabular formats cannot carry.
    """
    xs, ys = _curve(x, y)
    half = len(xs) // 2
    rest = _area(xs[half:], ys[half:])
    if rest == 0.0:
        return float("nan")
    return _area(xs[:half], ys[:half]) / rest


def curve_descriptors(x: ArrayLike, y: ArrayLike) -> CurveDescriptors:
    """All four descriptors of the curve y over x.

    Parameters
    ----------
    x, y : array_like, shape (n,)
        Abscissae and values, n ≥ 1, finite.

    Returns
    -------
    CurveDescriptors
        :func:`curve_area`, :func:`curve_skewness`, :func:`curve_area_ratio` and max(y).

    Raises
    ------
    ValueError
        If x or y is not 1-D, empty or non-finite, or their lengths differ.

    Examples
    --------
    >>> curve_descriptors([3, 5, 7, 9], [1.0, 1.0, 1.0, 1.0])
    CurveDescriptors(area=4.5, skewness=0.0, area_ratio=1.0, maximum=1.0)
    """
    xs, ys = _curve(x, y)
    return CurveDescriptors(
        area=_area(xs, ys),
        skewness=curve_skewness(ys),
        area_ratio=curve_area_ratio(xs, ys),
        maximum=float(ys.max()),
    )


def curve_descriptors_of_rows(x: ArrayLike, curves: ArrayLike) -> np.ndarray:
    """:func:`curve_descriptors` of every row of ``curves`` over x, in whole-matrix steps.

    Parameters
    ----------
    x : array_like, shape (n,)
        Abscissae, n ≥ 1, finite.
    curves : array_like, shape (N, n)
        One curve per row, finite.

    Returns
    -------
    ndarray of float64, shape (N, 4)
        Columns area, skewness, area ratio and maximum; row t equals
        ``curve_descriptors(x, curves[t])`` number for number (every sum runs along a row,
        in the order numpy sums one curve).

    Raises
    ------
    ValueError
        As :func:`curve_descriptors`, or if ``curves`` is not 2-D with n columns.

    Examples
    --------
    >>> curve_descriptors_of_rows([3, 5, 7, 9], [[1.0, 1.0, 1.0, 1.0]])
    array([[4.5, 0. , 1. , 1. ]])
    """
    xs = _values("x", x)
    ys = np.asarray(curves, dtype=np.float64)
    if ys.ndim != 2 or ys.shape[1] != len(xs):
        raise ValueError(f"curves must be 2-D with {len(xs)} columns (one per x), got shape {ys.shape}")
    if not np.all(np.isfinite(ys)):
        raise ValueError(f"curves must be finite, got {ys.tolist()}")
    found = np.empty((len(ys), 4))
    found[:, 0] = _areas(xs, ys)
    deviation = ys - ys.mean(axis=1, keepdims=True)
    # The 3/2 power one value at a time, as curve_skewness takes it: numpy's whole-array power
    # (SIMD) can differ from the scalar one in the last bit.
    spread = np.array([square ** 1.5 for square in np.mean(deviation**2, axis=1)])
    with np.errstate(divide="ignore", invalid="ignore"):  # constant rows: set to 0 below
        found[:, 1] = np.mean(deviation**3, axis=1) / spread
        found[np.all(ys == ys[:, :1], axis=1), 1] = 0.0
        half = len(xs) // 2
        rest = _areas(xs[half:], ys[:, half:])
        found[:, 2] = np.where(rest == 0.0, np.nan, _areas(xs[:half], ys[:, :half]) / rest)
    found[:, 3] = ys.max(axis=1)
    return found


def _values(name: str, values: ArrayLike) -> np.ndarray:
    """values as a float64 array, checked to be 1-D, non-empty and finite."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or len(array) == 0:
        raise ValueError(f"{name} must be 1-D and non-empty, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite, got {array.tolist()}")
    return array


def _curve(x: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """x and y as checked float64 arrays of one length."""
    xs, ys = _values("x", x), _values("y", y)
    if len(xs) != len(ys):
        raise ValueError(f"x and y must have one length, got {len(xs)} and {len(ys)}")
    return xs, ys


def _area(xs: np.ndarray, ys: np.ndarray) -> float:
    """The seed's trapezoid area of checked arrays; 0 for fewer than two points."""
    return float(_areas(xs, ys[np.newaxis])[0])


def _areas(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """The seed's trapezoid area of each row of ``ys`` over ``xs``; 0 for fewer than two points."""
    if len(xs) < 2:
        return np.zeros(len(ys))
    return (xs[-1] - xs[0]) / (2 * len(xs)) * np.sum(ys[:, :-1] + ys[:, 1:], axis=1)
