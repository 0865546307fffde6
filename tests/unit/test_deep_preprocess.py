"""Model-input preprocessing is (x / dtype max - mean) / std, channels first, grey made RGB."""

from __future__ import annotations

import numpy as np
import pytest

from labsight.models import Preprocessing
from services.features.deep import preprocess

NORMALISE = Preprocessing(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def _expected(image: np.ndarray) -> np.ndarray:
    scaled = image.astype(np.float64) / np.iinfo(image.dtype).max
    mean, std = np.array(NORMALISE.mean), np.array(NORMALISE.std)
    return ((scaled - mean) / std).transpose(2, 0, 1)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_rgb_images_are_scaled_normalised_and_channels_first(dtype: type) -> None:
    rng = np.random.default_rng(3)
    images = [rng.integers(0, np.iinfo(dtype).max, (8, 6, 3), dtype=dtype) for _ in range(2)]
    batch = preprocess(images, (8, 6), NORMALISE)
    assert batch.shape == (2, 3, 8, 6) and batch.dtype == np.float32
    for index, image in enumerate(images):
        np.testing.assert_allclose(batch[index], _expected(image), rtol=1e-5, atol=1e-5)


def test_grey_images_are_repeated_into_three_channels() -> None:
    grey = np.arange(48, dtype=np.uint8).reshape(8, 6)
    batch = preprocess([grey], (8, 6), NORMALISE)
    np.testing.assert_allclose(batch[0], _expected(np.repeat(grey[:, :, None], 3, axis=2)),
                               rtol=1e-5, atol=1e-5)


def test_images_of_another_size_are_resized_to_the_model_input() -> None:
    flat = np.full((20, 30, 3), 128, np.uint8)
    batch = preprocess([flat], (8, 6), NORMALISE)
    assert batch.shape == (1, 3, 8, 6)
    np.testing.assert_allclose(batch[0], _expected(np.full((8, 6, 3), 128, np.uint8)), atol=1e-4)
