"""The cell-field generator: masks and labels agree, seeds repeat, and each class lands where it belongs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.measure import regionprops

from services.classifier.classes import CLASS_NAMES, NEGATIVE, NUM_CLASSES
from services.classifier.generated_cells import (
    BLUE,
    GREEN,
    MITOTIC_SPINDLE,
    NUCLEAR_CLASSES,
    RED,
    SHIFTED,
    STANDARD,
    YELLOW,
    generate_cell_field,
    sample_label_sets,
)


def _only(index: int, cells: int) -> np.ndarray:
    classes = np.zeros((cells, NUM_CLASSES), bool)
    classes[:, index] = True
    return classes


def test_the_same_seed_draws_the_same_field_and_another_seed_another() -> None:
    first, again, other = (generate_cell_field(seed, size=256, cells=4) for seed in (5, 5, 6))
    assert np.array_equal(first.image, again.image)
    assert np.array_equal(first.cell_labels, again.cell_labels)
    assert np.array_equal(first.classes, again.classes)
    assert not np.array_equal(first.image, other.image)


@pytest.mark.parametrize("seed", [0, 1])
def test_masks_and_label_sets_agree(seed: int) -> None:
    field = generate_cell_field(seed)
    assert field.image.shape == (512, 512, 4) and field.image.dtype == np.uint8
    cells = len(field.classes)
    assert 6 <= cells <= 10
    assert set(np.unique(field.cell_labels)) == set(range(cells + 1))
    inside = field.nucleus_labels > 0
    # Every nucleus lies in its own cell, and every cell has one.
    assert np.array_equal(field.nucleus_labels[inside], field.cell_labels[inside])
    assert set(np.unique(field.nucleus_labels)) == set(range(cells + 1))
    counts = field.classes.sum(axis=1)
    assert np.all((counts >= 1) & (counts <= 3))
    assert np.all(counts[field.classes[:, NEGATIVE]] == 1)


def test_label_sets_follow_the_rules_and_cover_every_class() -> None:
    sets = sample_label_sets(np.random.default_rng(0), 3000)
    counts = sets.sum(axis=1)
    assert set(np.unique(counts)) == {1, 2, 3}
    assert np.all(counts[sets[:, NEGATIVE]] == 1)
    spindle = sets[:, MITOTIC_SPINDLE]
    assert not sets[spindle][:, sorted(NUCLEAR_CLASSES)].any()
    per_class = sets.sum(axis=0)
    assert per_class.min() > 3000 / NUM_CLASSES * 0.5


def _green_highs(field, region) -> np.ndarray:  # type: ignore[no-untyped-def]
    """99.5th percentile of smoothed green in each cell's region (so that a few dots count too)."""
    green = ndimage.gaussian_filter(field.image[:, :, GREEN].astype(float), 1.0)
    return np.array([np.percentile(green[region(label)], 99.5) for label in range(1, len(field.classes) + 1)])


@pytest.mark.parametrize(("name", "compartment", "elsewhere"), [
    ("Nucleoplasm", "nucleus", "cytoplasm"),
    ("Nuclear bodies", "nucleus", "cytoplasm"),
    ("Cytosol", "cytoplasm", "nucleus"),
    ("Mitochondria", "cytoplasm", "nucleus"),
    ("Plasma membrane", "rim", "interior"),
    ("Nuclear membrane", "nuclear rim", "cytoplasm"),
    ("Vesicles and punctate cytosolic patterns", "cytoplasm", "nucleus"),
])
def test_green_protein_sits_in_the_class_compartment(name: str, compartment: str, elsewhere: str) -> None:
    field = generate_cell_field(3, size=320, cells=5, classes=_only(CLASS_NAMES.index(name), 5))
    nucleus = field.nucleus_labels
    cells = field.cell_labels
    interior = {label: ndimage.binary_erosion(cells == label, iterations=4) for label in range(1, 6)}
    nuclear = {label: nucleus == label for label in range(1, 6)}
    regions = {
        "nucleus": lambda label: ndimage.binary_erosion(nuclear[label], iterations=3),
        "cytoplasm": lambda label: interior[label] & ~ndimage.binary_dilation(nuclear[label], iterations=3),
        "rim": lambda label: (cells == label) & ~ndimage.binary_erosion(cells == label, iterations=3),
        "interior": lambda label: interior[label] & ~ndimage.binary_dilation(nuclear[label], iterations=3)
        & ndimage.binary_erosion(cells == label, iterations=8),
        "nuclear rim": lambda label: ndimage.binary_dilation(nuclear[label], iterations=2)
        & ~ndimage.binary_erosion(nuclear[label], iterations=2),
    }
    inside, outside = _green_highs(field, regions[compartment]), _green_highs(field, regions[elsewhere])
    assert np.all(inside > 1.5 * outside), (inside, outside)


@pytest.mark.parametrize(("name", "reference"), [("Microtubules", RED), ("Endoplasmic reticulum", YELLOW)])
def test_green_follows_the_reference_channel_of_its_structure(name: str, reference: int) -> None:
    field = generate_cell_field(4, size=384, cells=5, classes=_only(CLASS_NAMES.index(name), 5))
    control = generate_cell_field(4, size=384, cells=5, classes=_only(CLASS_NAMES.index("Cytosol"), 5))

    def correlation(cells) -> float:  # type: ignore[no-untyped-def]
        inside = (cells.cell_labels > 0) & (cells.nucleus_labels == 0)
        # Smoothed a little, so that the camera noise does not hide the shared structure.
        green, other = (
            ndimage.gaussian_filter(cells.image[:, :, c].astype(float), 1.0) for c in (GREEN, reference)
        )
        return float(np.corrcoef(green[inside], other[inside])[0, 1])

    assert correlation(field) > 0.45
    assert correlation(field) > correlation(control) + 0.3


def test_negative_cells_carry_almost_no_green_and_every_cell_a_bright_nucleus() -> None:
    negative = generate_cell_field(7, size=384, cells=5, classes=_only(NEGATIVE, 5))
    stained = generate_cell_field(7, size=384, cells=5, classes=_only(CLASS_NAMES.index("Cytosol"), 5))
    faint = negative.image[:, :, GREEN][negative.cell_labels > 0].mean()
    assert faint < 0.4 * stained.image[:, :, GREEN][stained.cell_labels > 0].mean()
    blue = negative.image[:, :, BLUE].astype(float)
    assert blue[negative.nucleus_labels > 0].mean() > 4 * blue[negative.cell_labels == 0].mean()


def test_a_mitotic_spindle_cell_has_a_metaphase_plate() -> None:
    field = generate_cell_field(8, size=384, cells=4, classes=_only(MITOTIC_SPINDLE, 4))
    plates = regionprops(field.nucleus_labels)
    assert all(p.axis_major_length > 3.5 * p.axis_minor_length for p in plates)


def test_the_shifted_style_draws_more_elongated_cells() -> None:
    def elongation(style) -> float:  # type: ignore[no-untyped-def]
        ratios = [
            p.axis_major_length / p.axis_minor_length
            for seed in range(2)
            for p in regionprops(generate_cell_field(seed, size=384, cells=6, style=style).cell_labels)
        ]
        return float(np.median(ratios))

    assert elongation(SHIFTED) > elongation(STANDARD) + 0.5


def test_bad_arguments_are_refused_naming_them() -> None:
    with pytest.raises(ValueError, match="^cells"):
        generate_cell_field(0, cells=0)
    with pytest.raises(ValueError, match="^size"):
        generate_cell_field(0, size=64)
    with pytest.raises(ValueError, match="^classes"):
        generate_cell_field(0, cells=2, classes=np.zeros((2, NUM_CLASSES), bool))
