"""Fractal and percolation results become the seed's named ARFF columns, in its order and spelling."""

from __future__ import annotations

import numpy as np
import pytest

from services.features.curve_descriptors import curve_descriptors
from services.features.fractal import gliding_box, percolation
from services.features.fractal_columns import fractal_columns, percolation_columns


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(3).integers(70, 100, (45, 47, 3)).astype(np.uint8)


def test_fractal_columns_in_the_seeds_order(image: np.ndarray) -> None:
    boxes = gliding_box(image)
    columns = fractal_columns(boxes)
    seed = (
        [f"MinkLAC{i}" for i in range(1, 21)]
        + [f"MinkDF{i}" for i in range(1, 21)]
        + ["MinkAreaLAC", "MinkSkewnessLAC", "MinkAreaRatioLAC", "MinkMaxLAC"]
    )
    extras = ["FractalDimension", "FractalDimensionRMin", "FractalDimensionRMax", "FractalDimensionR2"]
    assert list(columns) == seed + extras
    assert list(fractal_columns(boxes, extras=False)) == seed
    assert columns["MinkLAC1"] == boxes.lacunarity[0] and columns["MinkLAC20"] == boxes.lacunarity[19]
    assert columns["MinkDF7"] == boxes.box_count[6]
    lac = curve_descriptors(boxes.box_sizes, boxes.lacunarity)
    assert (columns["MinkAreaLAC"], columns["MinkSkewnessLAC"]) == (lac.area, lac.skewness)
    assert (columns["MinkAreaRatioLAC"], columns["MinkMaxLAC"]) == (lac.area_ratio, lac.maximum)
    assert columns["FractalDimension"] == boxes.fractal_dimension.value
    assert (columns["FractalDimensionRMin"], columns["FractalDimensionRMax"]) == (3.0, 41.0)
    assert all(type(v) is float for v in columns.values())


def test_column_numbers_follow_the_box_sizes_given(image: np.ndarray) -> None:
    columns = fractal_columns(gliding_box(image, [5, 9, 13]), extras=False)
    assert [c for c in columns if c.startswith("MinkLAC")] == ["MinkLAC1", "MinkLAC2", "MinkLAC3"]
    assert len(columns) == 3 + 3 + 4


def test_percolation_columns_in_the_seeds_order_and_spelling(image: np.ndarray) -> None:
    found = percolation(image)
    columns = percolation_columns(found)
    descriptors = [
        f"Mink{kind}{suffix}"
        for suffix in ("Cluster", "Perc", "MaxCluster")
        for kind in ("Area", "Skewness", "AreaRation", "Max")
    ]
    numbered = [f"Mink{letter}{i}" for letter in "pgh" for i in range(1, 21)]
    assert list(columns) == numbered + descriptors
    assert columns["Minkp3"] == found.cluster_count[2]
    assert columns["Minkg3"] == found.largest_cluster_ratio[2]
    assert columns["Minkh3"] == found.percolating_ratio[2]
    for suffix, curve in (
        ("Cluster", found.cluster_count),
        ("Perc", found.percolating_ratio),
        ("MaxCluster", found.largest_cluster_ratio),
    ):
        d = curve_descriptors(found.box_sizes, curve)
        got = [columns[f"Mink{kind}{suffix}"] for kind in ("Area", "Skewness", "AreaRation", "Max")]
        np.testing.assert_array_equal(got, [d.area, d.skewness, d.area_ratio, d.maximum])
