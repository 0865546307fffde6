"""Shape measures over whole masks equal scikit-image's regionprops object by object."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.measure import regionprops_table
from skimage.segmentation import expand_labels

from services.segmentation.shape import form_factors, label_runs, moment_ellipses, perimeters


def _touching_cells(seed: int, shape: tuple[int, int] = (97, 131)) -> np.ndarray:
    """Touching irregular objects reaching the image's edges, with holes, a two-piece object,
    single pixels and one-pixel lines; labels 1..n."""
    rng = np.random.default_rng(seed)
    seeds = np.zeros(shape, np.int32)
    points = rng.integers(0, shape, (25, 2))
    seeds[points[:, 0], points[:, 1]] = np.arange(1, 26)
    labels = expand_labels(seeds, 9)
    labels[rng.random(shape) < 0.03] = 0  # pinholes and ragged borders
    labels[5, 3:40] = 26  # a line one pixel wide
    labels[:, 120] = 27  # a column spanning the image
    labels[90, 10] = labels[92, 100] = 28  # one object in two single pixels
    return labels


@pytest.mark.parametrize("seed", range(6))
def test_perimeters_and_ellipses_equal_regionprops(seed: int) -> None:
    labels = _touching_cells(seed)
    count = int(labels.max())
    truth = regionprops_table(labels, properties=(
        "label", "perimeter", "major_axis_length", "minor_axis_length", "eccentricity", "area"))
    present = truth["label"] - 1
    found = perimeters(labels, count)
    np.testing.assert_allclose(found[present], truth["perimeter"], rtol=1e-12, atol=1e-12)
    shape = moment_ellipses(label_runs(labels), count)
    np.testing.assert_allclose(shape.major_axis[present], truth["major_axis_length"], rtol=1e-9)
    np.testing.assert_allclose(shape.minor_axis[present], truth["minor_axis_length"], atol=1e-6)
    np.testing.assert_allclose(shape.eccentricity[present], truth["eccentricity"], atol=1e-6)
    assert truth["perimeter"][-1] == 0  # two single pixels have no length of border
    with np.errstate(divide="ignore"):
        expected = np.where(truth["perimeter"] > 0,
                            4 * np.pi * truth["area"] / truth["perimeter"] ** 2, np.nan)
    np.testing.assert_allclose(form_factors(truth["area"], found[present]), expected)


def test_absent_objects_and_empty_masks() -> None:
    labels = np.zeros((6, 7), np.int32)
    labels[2:4, 2:5] = 2  # object 1 has no pixel
    shape = moment_ellipses(label_runs(labels), 3)
    assert np.isnan(shape.major_axis[0]) and np.isnan(shape.orientation_deg[2])
    assert shape.orientation_deg[1] == 0.0
    assert perimeters(labels, 3).tolist() == [0.0, perimeters(labels == 2, 1)[0], 0.0]
    assert perimeters(np.zeros((4, 4), np.int32), 0).shape == (0,)
    assert moment_ellipses(label_runs(np.zeros((4, 4), np.int32)), 0).eccentricity.shape == (0,)
    assert np.isnan(form_factors(np.array([1.0]), np.array([0.0]))[0])
