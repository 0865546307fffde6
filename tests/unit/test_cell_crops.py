"""Per-cell crops: square around the bounding box, resized, scaled and normalised, neighbours blanked."""

from __future__ import annotations

import numpy as np
import pytest

from labsight.cell_crops import cell_crops


def _two_cells(dtype: type = np.uint8) -> tuple[np.ndarray, np.ndarray]:
    labels = np.zeros((40, 60), np.int32)
    labels[5:15, 10:30] = 4   # 10 x 20 box
    labels[15:35, 20:30] = 9  # touches cell 4 from below
    image = np.zeros((40, 60, 4), dtype)
    top = np.iinfo(dtype).max
    image[labels == 4] = (top, 0, top // 2, 0)
    image[labels == 9] = (0, top, 0, top)
    return image, labels


def test_one_crop_per_cell_in_label_order_with_its_box() -> None:
    image, labels = _two_cells()
    crops = cell_crops(image, labels, 20)
    assert crops.pixels.shape == (2, 4, 20, 20) and crops.pixels.dtype == np.float32
    assert crops.cell_ids.tolist() == [4, 9]
    assert crops.boxes.tolist() == [[5, 10, 15, 30], [15, 20, 35, 30]]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_pixels_are_scaled_by_the_dtype_range(dtype: type) -> None:
    image, labels = _two_cells(dtype)
    crops = cell_crops(image, labels, 20)
    # Cell 4's box is 20 wide: its square is exactly the box, so the crop's middle row is all cell.
    middle = crops.pixels[0, :, 10, :]
    assert np.allclose(middle[0], 1.0)
    assert np.allclose(middle[2], (np.iinfo(dtype).max // 2) / np.iinfo(dtype).max, atol=1e-3)
    assert np.allclose(middle[1], 0.0)


def test_other_cells_are_blanked_unless_asked_to_keep_them() -> None:
    image, labels = _two_cells()
    blanked = cell_crops(image, labels, 20)
    kept = cell_crops(image, labels, 20, blank_other_cells=False)
    # Cell 4's square (rows 0..20, cols 10..30) holds the top of cell 9 (green) in rows 15..20.
    assert blanked.pixels[0, 1].max() == 0.0
    assert kept.pixels[0, 1, 16:, 12:18].min() > 0.9


def test_mean_and_std_normalise_each_channel() -> None:
    image, labels = _two_cells()
    plain = cell_crops(image, labels, 16)
    normalised = cell_crops(image, labels, 16, mean=(0.5, 0.0, 0.1, 0.2), std=(0.5, 1.0, 2.0, 0.25))
    expected = (plain.pixels - np.array([0.5, 0.0, 0.1, 0.2])[None, :, None, None]) / np.array(
        [0.5, 1.0, 2.0, 0.25]
    )[None, :, None, None]
    assert np.allclose(normalised.pixels, expected, atol=1e-6)


def test_a_mask_without_cells_gives_no_crops() -> None:
    image, labels = _two_cells()
    crops = cell_crops(image, np.zeros_like(labels), 24)
    assert crops.pixels.shape == (0, 4, 24, 24)
    assert crops.cell_ids.shape == (0,) and crops.boxes.shape == (0, 4)


def test_a_cell_at_the_border_is_padded_with_zeros() -> None:
    labels = np.zeros((20, 20), np.int32)
    labels[0:4, 5:15] = 1  # 4 x 10 box: its 10 x 10 square reaches 3 rows above the image
    image = np.full((20, 20, 4), 200, np.uint8)
    crops = cell_crops(image, labels, 10, blank_other_cells=False)
    assert np.all(crops.pixels[0, :, :3] == 0.0)
    assert np.allclose(crops.pixels[0, :, 3:], 200 / 255)


@pytest.mark.parametrize(("image", "labels", "field"), [
    (np.zeros((10, 10, 3), np.uint8), np.zeros((10, 10), np.int32), "image"),
    (np.zeros((10, 10), np.uint8), np.zeros((10, 10), np.int32), "image"),
    (np.zeros((10, 10, 4), np.float32), np.zeros((10, 10), np.int32), "image"),
    (np.zeros((10, 10, 4), np.uint8), np.zeros((10, 11), np.int32), "cell_labels"),
    (np.zeros((10, 10, 4), np.uint8), np.zeros((10, 10), np.float32), "cell_labels"),
])
def test_bad_inputs_are_refused_naming_the_argument(
    image: np.ndarray, labels: np.ndarray, field: str
) -> None:
    with pytest.raises(ValueError, match=f"^{field}:"):
        cell_crops(image, labels, 8, channels=4)


def test_huge_and_negative_labels_give_the_crops_of_small_ones() -> None:
    image, labels = _two_cells()
    wide = labels.astype(np.int64)
    wide[labels == 9] = 4_000_000_000  # over the pixel count: the boxes come from a relabelled mask
    wide[0, 0] = -3  # negative labels are background
    small, huge = cell_crops(image, labels, 20), cell_crops(image, wide, 20)
    assert huge.cell_ids.tolist() == [4, 4_000_000_000]
    assert huge.boxes.tolist() == small.boxes.tolist()
    assert np.array_equal(huge.pixels, small.pixels)
