"""Named feature columns of gliding-box results, in the seed's ARFF order and spelling;
what each column means is in ``labsight/columns.py`` (``labsight columns fractal``)."""

from __future__ import annotations

import numpy as np

from labsight.columns import BOX_COUNT, CLUSTER_COUNT, LACUNARITY, LARGEST_CLUSTER, PERCOLATING
from services.features.curve_descriptors import curve_descriptors, curve_descriptors_of_rows
from services.features.fractal import GlidingBoxResult, PercolationResult
from services.features.fractal_stack import GlidingBoxStack

__all__ = ["fractal_columns", "percolation_columns", "stack_fractal_columns"]


def fractal_columns(result: GlidingBoxResult, *, extras: bool = True) -> dict[str, float]:
    """The seed's fractal columns of one image, then LabSight's dimension fit.

    Parameters
    ----------
    result : GlidingBoxResult
        Output of :func:`services.features.fractal.gliding_box`.
    extras : bool, optional
        Append ``FractalDimension``, ``FractalDimensionRMin``, ``FractalDimensionRMax`` and
        ``FractalDimensionR2`` after the seed's columns. Pass False for exactly the seed's
        columns, as a Weka model trained on its files expects.

    Returns
    -------
    dict of str to float
        In order: ``MinkLAC1..n`` (Λ for the i-th box side), ``MinkDF1..n`` (N(r)), then
        ``MinkAreaLAC``, ``MinkSkewnessLAC``, ``MinkAreaRatioLAC``, ``MinkMaxLAC``, the curve
        descriptors of Λ over r. Column i belongs to ``result.box_sizes[i - 1]``, so with the
        default sides MinkLAC1 is r = 3 and MinkLAC20 is r = 41.
    """
    columns = _numbered(LACUNARITY, result.lacunarity) | _numbered(BOX_COUNT, result.box_count)
    columns |= _descriptors(result.box_sizes, result.lacunarity, "LAC", "Ratio")
    if extras:
        fit = result.fractal_dimension
        columns |= {
            "FractalDimension": fit.value,
            "FractalDimensionRMin": float(fit.r_min),
            "FractalDimensionRMax": float(fit.r_max),
            "FractalDimensionR2": fit.r_squared,
        }
    return columns


def stack_fractal_columns(stack: GlidingBoxStack) -> tuple[list[str], np.ndarray]:
    """:func:`fractal_columns` (with the extras) of every tile of a stack, as column names and an
    (N, columns) float64 matrix, row t the values ``fractal_columns(stack.tile(t))`` gives.

    Every column is computed for all tiles at once (tile by tile, the curve descriptors alone
    cost 0.06 ms per 64² tile, a sixth of its gliding box; a dict of 48 columns per tile as
    much again).
    """
    names = list(fractal_columns(stack.tile(0)))
    count, sides = stack.lacunarity.shape
    values = np.empty((count, len(names)), np.float64)
    values[:, :sides] = stack.lacunarity
    values[:, sides : 2 * sides] = stack.box_count
    values[:, 2 * sides : 2 * sides + 4] = curve_descriptors_of_rows(stack.box_sizes, stack.lacunarity)
    values[:, 2 * sides + 4] = stack.fractal_dimension
    values[:, 2 * sides + 5] = float(stack.box_sizes[0])
    values[:, 2 * sides + 6] = float(stack.box_sizes[-1])
    values[:, 2 * sides + 7] = stack.r_squared
    return names, values


def percolation_columns(result: PercolationResult) -> dict[str, float]:
    """The seed's percolation columns of one image.

    Parameters
    ----------
    result : PercolationResult
        Output of :func:`services.features.fractal.percolation`.

    Returns
    -------
    dict of str to float
        In order: ``Minkp1..n`` (mean cluster count), ``Minkg1..n`` (mean largest-cluster
        ratio), ``Minkh1..n`` (percolating share), then the curve descriptors, over r, of the
        cluster count (``MinkAreaCluster``, ``MinkSkewnessCluster``, ``MinkAreaRationCluster``,
        ``MinkMaxCluster``), of the percolating share (``...Perc``) and of the largest-cluster
        ratio (``...MaxCluster``). "Ration" is the seed's spelling, kept so its Weka files match.
    """
    columns = (
        _numbered(CLUSTER_COUNT, result.cluster_count)
        | _numbered(LARGEST_CLUSTER, result.largest_cluster_ratio)
        | _numbered(PERCOLATING, result.percolating_ratio)
    )
    for suffix, curve in (
        ("Cluster", result.cluster_count),
        ("Perc", result.percolating_ratio),
        ("MaxCluster", result.largest_cluster_ratio),
    ):
        columns |= _descriptors(result.box_sizes, curve, suffix, "Ration")
    return columns


def _numbered(prefix: str, values: np.ndarray) -> dict[str, float]:
    """{prefix1: values[0], prefix2: values[1], ...}."""
    return {f"{prefix}{i}": float(v) for i, v in enumerate(values, start=1)}


def _descriptors(sizes: np.ndarray, curve: np.ndarray, suffix: str, ratio_word: str) -> dict[str, float]:
    """MinkArea, MinkSkewness, MinkArea<ratio_word> and MinkMax columns + suffix, of curve over r."""
    found = curve_descriptors(sizes, curve)
    return {
        f"MinkArea{suffix}": found.area,
        f"MinkSkewness{suffix}": found.skewness,
        f"MinkArea{ratio_word}{suffix}": found.area_ratio,
        f"MinkMax{suffix}": found.maximum,
    }
