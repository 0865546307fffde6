"""The seed's curve descriptors: its (b−a)/(2n) trapezoid, skewness 0 when flat, half-area ratio, maximum."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.features.curve_descriptors import (
    CurveDescriptors,
    curve_area,
    curve_area_ratio,
    curve_descriptors,
    curve_descriptors_of_rows,
    curve_skewness,
)

SIDES = np.arange(3, 42, 2)


def test_area_uses_the_seeds_step_of_range_over_n() -> None:
    # A constant curve of 20 points over r = 3..41: true area 38, the seed's 0.95 x 38.
    assert curve_area(SIDES, np.ones(20)) == pytest.approx(0.95 * 38, abs=1e-12)


def test_area_by_hand() -> None:
    # (9 - 3) / (2 * 4) * ((1 + 2) + (2 + 4) + (4 + 3)) = 0.75 * 16
    assert curve_area([3, 5, 7, 9], [1, 2, 4, 3]) == 12.0


def test_single_point_has_zero_area() -> None:
    assert curve_area([3], [5.0]) == 0.0


def test_skewness_is_zero_for_a_constant_curve() -> None:
    assert curve_skewness(np.full(20, 0.1)) == 0.0


def test_skewness_by_hand() -> None:
    y = np.array([0.0, 0.0, 0.0, 4.0])
    # mean 1, deviations (-1, -1, -1, 3): m3 = (−3 + 27) / 4 = 6, m2 = 12 / 4 = 3
    assert curve_skewness(y) == pytest.approx(6 / 3**1.5, abs=1e-15)
    assert curve_skewness(-y) == pytest.approx(-6 / 3**1.5, abs=1e-15)


def test_area_ratio_splits_at_half_rounded_down() -> None:
    x, y = [3, 5, 7, 9, 11], [1.0, 3.0, 2.0, 2.0, 6.0]
    first = (5 - 3) / (2 * 2) * (1 + 3)
    rest = (11 - 7) / (2 * 3) * ((2 + 2) + (2 + 6))
    assert curve_area_ratio(x, y) == pytest.approx(first / rest, abs=1e-15)


def test_area_ratio_is_nan_over_a_zero_tail() -> None:
    assert math.isnan(curve_area_ratio([3, 5, 7, 9], [1.0, 2.0, 0.0, 0.0]))


def test_descriptors_bundle_all_four() -> None:
    x, y = SIDES, np.linspace(0.0, 1.0, 20) ** 2
    assert curve_descriptors(x, y) == CurveDescriptors(
        area=curve_area(x, y), skewness=curve_skewness(y), area_ratio=curve_area_ratio(x, y), maximum=1.0
    )


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        ([], [], "x must be 1-D and non-empty"),
        ([[3, 5]], [1, 2], "x must be 1-D"),
        ([3, 5], [1.0], "x and y must have one length"),
        ([3, 5], [1.0, float("nan")], "y must be finite"),
    ],
)
def test_bad_curves_are_refused(x: list, y: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        curve_descriptors(x, y)


@pytest.mark.parametrize("x", [SIDES, np.arange(3, 12, 2), [3.0], [3.0, 5.0], [3.0, 5.0, 9.0]])
def test_each_row_equals_the_descriptors_of_that_curve_alone_number_for_number(x: object) -> None:
    n = len(np.atleast_1d(np.asarray(x)))
    rng = np.random.default_rng(7)
    curves = np.vstack([
        rng.random((40, n)) * 10.0 ** rng.integers(-3, 4, (40, 1)),  # many scales
        np.full((1, n), 2.5),  # constant: skewness 0
        np.hstack([rng.random((1, n - n // 2)), np.zeros((1, n // 2))]),  # zero tail: ratio NaN
        np.zeros((1, n)),
    ])
    rows = curve_descriptors_of_rows(x, curves)
    for curve, row in zip(curves, rows, strict=True):
        alone = curve_descriptors(x, curve)
        np.testing.assert_array_equal(row, [alone.area, alone.skewness, alone.area_ratio, alone.maximum])


@pytest.mark.parametrize(
    ("curves", "message"),
    [
        ([1.0, 2.0], "2-D with 2 columns"),
        ([[1.0, 2.0, 3.0]], "2-D with 2 columns"),
        ([[1.0, float("inf")]], "curves must be finite"),
    ],
)
def test_bad_rows_are_refused(curves: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        curve_descriptors_of_rows([3, 5], curves)
