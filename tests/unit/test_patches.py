"""Patches around spots and labelled cells: position, size, blanking and bounds."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from labsight.patches import cell_patches, spot_patches


def _ramp(height: int = 40, width: int = 60) -> np.ndarray:
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([rows, cols, rows + cols], axis=2).astype(np.uint8)


def test_spot_patches_are_square_crops_centred_on_the_spots() -> None:
    image = _ramp()
    patches = spot_patches(image, np.array([[30.0, 20.0], [10.0, 5.0]]), diameter=6)
    assert patches.pixels.shape == (2, 6, 6, 3) and patches.pixels.dtype == np.uint8
    np.testing.assert_array_equal(patches.pixels[0], image[17:23, 27:33])
    np.testing.assert_array_equal(patches.pixels[1], image[2:8, 7:13])
    np.testing.assert_array_equal(patches.centres, [[30.0, 20.0], [10.0, 5.0]])
    assert patches.labels.tolist() == [0, 1]


def test_spot_patches_are_resized_to_the_output_size() -> None:
    image = np.full((50, 50, 3), 200, np.uint8)
    patches = spot_patches(image, np.array([[25.0, 25.0]]), diameter=10, output_size=32)
    assert patches.pixels.shape == (1, 32, 32, 3)
    assert np.all(patches.pixels == 200)


def test_a_grey_image_gives_single_channel_patches() -> None:
    patches = spot_patches(np.zeros((20, 20), np.uint16), np.array([[10.0, 10.0]]), diameter=4)
    assert patches.pixels.shape == (1, 4, 4, 1) and patches.pixels.dtype == np.uint16


def test_a_spot_centre_outside_the_image_is_refused_naming_the_spot() -> None:
    centres = np.array([[30.0, 20.0], [59.4, 20.0], [60.0, 20.0], [5.0, -0.6]])
    with pytest.raises(ValueError, match=r"spot_centres\[2\]: the centre \(x=60.0, y=20.0\) lies "
                                         r"outside the 40x60 image \(2 spots do\)"):
        spot_patches(_ramp(), centres, diameter=6)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_a_spot_patch_past_the_border_is_padded_and_flagged(mode: str) -> None:
    image = _ramp()
    # Patches of side 6 around (58, 20) cover columns 55..60 and around (2, 1) rows -2..3.
    patches = spot_patches(image, np.array([[30.0, 20.0], [58.0, 20.0], [2.0, 1.0]]), diameter=6,
                           edge=f"pad-{mode}")
    padded = np.pad(image, ((3, 3), (3, 3), (0, 0)), mode=mode)
    np.testing.assert_array_equal(patches.pixels[1], padded[20:26, 58:64])
    np.testing.assert_array_equal(patches.pixels[2], padded[1:7, 2:8])
    np.testing.assert_array_equal(patches.pixels[0], image[17:23, 27:33])
    assert patches.at_edge.tolist() == [False, True, True]
    assert patches.labels.tolist() == [0, 1, 2]


def test_spots_at_the_border_can_be_dropped_and_the_others_keep_their_index() -> None:
    centres = np.array([[58.0, 20.0], [30.0, 20.0], [2.0, 1.0], [10.0, 10.0]])
    patches = spot_patches(_ramp(), centres, diameter=6, edge="drop")
    assert patches.labels.tolist() == [1, 3]
    np.testing.assert_array_equal(patches.centres, centres[[1, 3]])
    assert not patches.at_edge.any()
    with pytest.raises(ValueError, match="spot_edge=drop leaves none"):
        spot_patches(_ramp(), centres[[0, 2]], diameter=6, edge="drop")
    with pytest.raises(ValueError, match="spot_edge: expected one of"):
        spot_patches(_ramp(), centres, diameter=6, edge="wrap")


@pytest.mark.parametrize(
    ("centres", "diameter", "message"),
    [
        (np.zeros((3,)), 5, "spot_centres: expected \\(N, 2\\)"),
        (np.array([[np.nan, 1.0]]), 5, "spot_centres: coordinates must be finite"),
        (np.array([[10.0, 10.0]]), 0.2, "spot_diameter: must be at least 1 pixel"),
    ],
)
def test_malformed_spot_arguments_are_refused(centres: np.ndarray, diameter: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        spot_patches(_ramp(), centres, diameter)


def test_cell_patches_give_one_square_patch_per_label_centred_on_the_cell() -> None:
    image = _ramp()
    labels = np.zeros((40, 60), np.int32)
    labels[5:15, 10:14] = 3  # 10 rows x 4 columns
    labels[20:30, 40:50] = 7
    patches = cell_patches(image, labels, output_size=0)
    assert patches.labels.tolist() == [3, 7]
    assert patches.pixels.shape == (2, 224, 224, 3)
    tight = cell_patches(image, labels, output_size=10)
    np.testing.assert_array_equal(tight.pixels[0], image[5:15, 7:17])
    np.testing.assert_array_equal(tight.pixels[1], image[20:30, 40:50])
    np.testing.assert_allclose(tight.centres, [[11.5, 9.5], [44.5, 24.5]])


def test_cell_patches_of_a_label_subset_match_the_full_cut() -> None:
    image = _ramp()
    labels = np.zeros((40, 60), np.int32)
    labels[5:15, 10:14], labels[20:30, 40:50], labels[30:38, 2:9] = 3, 7, 11
    whole = cell_patches(image, labels, output_size=16)
    subset = cell_patches(image, labels, output_size=16, only_labels=[11, 3])
    assert subset.labels.tolist() == [3, 11]
    np.testing.assert_array_equal(subset.pixels, whole.pixels[[0, 2]])
    np.testing.assert_array_equal(subset.centres, whole.centres[[0, 2]])
    with pytest.raises(ValueError, match=r"cell_label_ids: labels \[5\] are not in the cell mask"):
        cell_patches(image, labels, output_size=16, only_labels=[3, 5])


def test_other_cells_are_blanked_when_asked() -> None:
    image = np.full((20, 20, 3), 9, np.uint8)
    labels = np.zeros((20, 20), np.int32)
    labels[5:15, 5:10] = 1
    labels[5:15, 10:15] = 2
    kept = cell_patches(image, labels, output_size=10, blank_other_cells=False).pixels[0]
    blanked = cell_patches(image, labels, output_size=10, blank_other_cells=True).pixels[0]
    assert np.all(kept == 9)
    assert np.all(blanked[:, 8:] == 0) and np.all(blanked[:, :8] == 9)  # crop covers columns 2..11


def test_a_cell_at_the_border_is_padded_with_zeros() -> None:
    image = np.full((10, 10), 5, np.uint8)
    labels = np.zeros((10, 10), np.int32)
    labels[0:6, 0:2] = 1
    patch = cell_patches(image, labels, output_size=6).pixels[0, :, :, 0]
    assert np.all(patch[:, :2] == 0) and np.all(patch[:, 2:] == 5)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (np.zeros((40, 60), np.int32), "holds no cell"),
        (np.ones((10, 10), np.int32), "does not match the image"),
        (np.ones((40, 60), np.float32), "integer mask"),
    ],
)
def test_bad_cell_masks_are_refused(labels: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=f"cell_labels: .*{message}"):
        cell_patches(_ramp(), labels)


def test_patches_over_the_byte_limit_are_refused_before_they_are_cut() -> None:
    image = _ramp()
    with pytest.raises(ValueError, match=r"spot_centres: 3 patches of 10x10x3 uint8 need 0.0 MiB, "
                                         r"over the 0.0 MiB one answer may carry; ask for fewer spots"):
        spot_patches(image, np.array([[20.0, 20.0]] * 3), 10, max_bytes=899)
    assert len(spot_patches(image, np.array([[20.0, 20.0]] * 3), 10, max_bytes=900).pixels) == 3
    labels = np.zeros((40, 60), np.int32)
    labels[5:15, 10:14], labels[20:30, 40:50] = 3, 7
    with pytest.raises(ValueError, match="cell_labels: 2 patches of 16x16x3 uint8 .* fewer cells"):
        cell_patches(image, labels, output_size=16, max_bytes=2 * 16 * 16 * 3 - 1)


def test_a_mask_with_huge_label_ids_costs_memory_for_its_cells_only() -> None:
    labels = np.zeros((40, 60), np.uint32)
    labels[5:15, 10:14], labels[20:30, 40:50] = 3, 4_000_000_000
    tracemalloc.start()
    try:
        patches = cell_patches(_ramp(), labels, output_size=16)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert patches.labels.tolist() == [3, 4_000_000_000]
    assert peak < 16 * 2**20  # a box list indexed by label id would need 32 GB
