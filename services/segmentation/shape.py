"""Shape of labelled objects: the ellipse of their second moments, their perimeter and form factor.

The measures CellProfiler's MeasureObjectSizeShape gives and scikit-image's ``regionprops``
defines, for every object of a compact index mask (objects 1..n, 0 background) at once:

- the ellipse with the same second central moments as the object: with the
  covariance of its pixel coordinates (per pixel, not per pixel area) having
  eigenvalues :math:`\\lambda_1 \\ge \\lambda_2`, its major and minor axes are
  :math:`4\\sqrt{\\lambda_1}` and :math:`4\\sqrt{\\lambda_2}` pixels long, its
  eccentricity is :math:`\\sqrt{1 - \\lambda_2 / \\lambda_1}` (0 a circle, towards 1 a
  line), and its orientation is the angle from the image's x axis to the major axis,
  counter-clockwise as the image is shown (rows down), in (-90, 90] degrees;
- the perimeter as scikit-image's ``perimeter`` with 4-connectivity, and the form factor
  :math:`4\\pi A / P^2` (1 a disc, smaller for elongated or ragged objects; NaN where the
  perimeter is 0).

``regionprops`` computes both object by object on each one's bounding box, which for the
36 cells of a 2048² HPA field costs twice what the rest of the cells table does. Here the
moments come from the objects' runs along the rows (:func:`label_runs`: a few per row and
object, summed in closed form, exactly in integers; the cells table takes its areas,
centroids, boxes and intensity sums from the same runs), and the perimeter from the objects'
border pixels only (found in one pass over the mask); the tests hold both equal to
``regionprops``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Ellipses", "Runs", "form_factors", "label_runs", "moment_ellipses", "perimeters"]

_PERIMETER_WEIGHTS = np.zeros(50)
_PERIMETER_WEIGHTS[[5, 7, 15, 17, 25, 27]] = 1.0
_PERIMETER_WEIGHTS[[21, 33]] = np.sqrt(2)
_PERIMETER_WEIGHTS[[13, 23]] = (1 + np.sqrt(2)) / 2
"""Length a border pixel adds by its code (1 + 2 per border 4-neighbour + 10 per border
diagonal neighbour of its own object): scikit-image's ``perimeter`` weights."""


@dataclass(frozen=True)
class Runs:
    """The runs of equal non-zero values along the rows of a 2-D mask (int64 arrays, one entry
    per run): its value ``owner``, its ``row``, its ``first`` column and the column after its
    last, ``stop``."""

    owner: np.ndarray
    row: np.ndarray
    first: np.ndarray
    stop: np.ndarray

    @property
    def length(self) -> np.ndarray:
        """Pixels in each run."""
        return self.stop - self.first

    @property
    def sum_x(self) -> np.ndarray:
        """Sum of each run's column indices (exact)."""
        return (self.first + self.stop - 1) * self.length // 2


@dataclass(frozen=True)
class Ellipses:
    """The second-moment ellipse of each object, in pixels and degrees (see the module's docstring)."""

    major_axis: np.ndarray
    minor_axis: np.ndarray
    eccentricity: np.ndarray
    orientation_deg: np.ndarray


def moment_ellipses(runs: Runs, count: int) -> Ellipses:
    """The second-moment ellipse of objects 1..``count`` of a compact index mask (0 background)
    from its runs (:func:`label_runs`). Objects without pixels get NaN; a single pixel or a
    line one pixel wide has a minor axis of 0.

    Examples
    --------
    >>> bar = np.zeros((4, 8), np.int32); bar[1:3, 1:7] = 1      # a 2 x 6 bar
    >>> shape = moment_ellipses(label_runs(bar), 1)
    >>> round(float(shape.orientation_deg[0]), 6), round(float(shape.major_axis[0]), 4)
    (0.0, 6.8313)
    """
    owner, row, n, sum_x = runs.owner, runs.row, runs.length, runs.sum_x
    bins = count + 1
    sum_xx = _sum_of_squares(runs.stop - 1) - _sum_of_squares(runs.first - 1)
    moments = [np.bincount(owner, weights=w.astype(np.float64), minlength=bins)[1:]
               for w in (n, sum_x, row * n, sum_xx, row * row * n, row * sum_x)]
    area, sx, sy, sxx, syy, sxy = moments  # integer sums, exact in float64 below 2**53
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_x, mean_y = sx / area, sy / area
        var_x = np.maximum(sxx / area - mean_x**2, 0.0)
        var_y = np.maximum(syy / area - mean_y**2, 0.0)
        cov_xy = sxy / area - mean_x * mean_y
        half_sum = (var_x + var_y) / 2
        root = np.sqrt(((var_x - var_y) / 2) ** 2 + cov_xy**2)
        large, small = half_sum + root, np.maximum(half_sum - root, 0.0)
        eccentricity = np.where(large > 0, np.sqrt(np.clip(1 - small / large, 0.0, 1.0)), 0.0)
        # the major axis points along (cos t, sin t) in (x, y) with y down; shown with y up, its
        # angle from the x axis is -t
        along_rows = 0.5 * np.degrees(np.arctan2(2 * cov_xy, var_x - var_y))
    orientation = -along_rows
    orientation = np.where(orientation <= -90, orientation + 180, orientation)
    present = area > 0
    return Ellipses(np.where(present, 4 * np.sqrt(large), np.nan),
                    np.where(present, 4 * np.sqrt(small), np.nan),
                    np.where(present, eccentricity, np.nan),
                    np.where(present, orientation + 0.0, np.nan))


def perimeters(index: np.ndarray, count: int) -> np.ndarray:
    """scikit-image's 4-connected perimeter (pixels) of objects 1..``count`` of the compact
    index mask ``index`` (2-D, 0 background), as ``regionprops`` gives it object by object; 0
    for an object without pixels.

    An object's border pixels are its pixels with a 4-neighbour of another object, of the
    background or outside the image; each adds the length its code weighs (see
    ``_PERIMETER_WEIGHTS``), counting only border pixels of the same object as neighbours.
    """
    padded = np.pad(index, 1)
    width = padded.shape[1]
    flat = padded.ravel()
    inner = padded[1:-1, 1:-1]
    border = (inner > 0) & ((padded[:-2, 1:-1] != inner) | (padded[2:, 1:-1] != inner)
                            | (padded[1:-1, :-2] != inner) | (padded[1:-1, 2:] != inner))
    rows, cols = np.nonzero(border)
    at = (rows + 1) * width + cols + 1
    is_border = np.zeros(flat.size, bool)
    is_border[at] = True
    own = flat[at]
    code = np.ones(at.size, np.intp)
    for step, weight in ((1, 2), (-1, 2), (width, 2), (-width, 2),
                         (width + 1, 10), (width - 1, 10), (-width + 1, 10), (-width - 1, 10)):
        code += weight * (is_border[at + step] & (flat[at + step] == own))
    return np.bincount(own, weights=_PERIMETER_WEIGHTS[code], minlength=count + 1)[1:]


def form_factors(area: np.ndarray, perimeter: np.ndarray) -> np.ndarray:
    """4π·area / perimeter² per object (areas in pixels, perimeters in pixels); NaN where the
    perimeter is 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(perimeter > 0, 4 * np.pi * area / perimeter**2, np.nan)


def label_runs(index: np.ndarray) -> Runs:
    """The runs of equal positive values along the rows of the 2-D mask ``index`` (a few per
    row and object where objects are solid, against their every pixel)."""
    width = index.shape[1]
    flat = index.ravel()
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.union1d(changes, np.arange(0, flat.size, width, dtype=np.int64))
    stops = np.append(starts[1:], flat.size)
    owner = flat[starts]
    keep = owner > 0
    starts, stops, owner = starts[keep], stops[keep], owner[keep].astype(np.intp)
    row = starts // width
    return Runs(owner, row, starts - row * width, stops - row * width)


def _sum_of_squares(k: np.ndarray) -> np.ndarray:
    """0² + 1² + ... + k² for each k ≥ -1 (0 for k = -1), exactly."""
    return k * (k + 1) * (2 * k + 1) // 6
