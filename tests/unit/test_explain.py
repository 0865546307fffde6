"""Grad-CAM maps and their four renderings, LIME explanations repeating under a seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from services.classifier.explain import (
    cam_layer,
    crop_rgb,
    grad_cam,
    lime_explanation,
    render_cam,
    render_lime,
    superpixels,
)

SIDE = 32


class _Spotter(nn.Module):
    """Class 0 scores the green in a crop, class 1 its red (one channel of the last layer each)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 2, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, 1] = 1.0
            self.conv.weight[1, 0] = 1.0

    def logits(self, crops: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(crops)).mean(dim=(2, 3)) * 8 - 1

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(crops))


def _crop(rng: np.random.Generator) -> np.ndarray:
    """Blue everywhere, a green spot top left, a red spot bottom right."""
    crop = np.zeros((4, SIDE, SIDE), np.float32)
    crop[2] = 0.3
    crop[1, 6:12, 4:10] = 1.0
    crop[0, 20:26, 22:28] = 1.0
    return crop + rng.uniform(0, 0.05, crop.shape).astype(np.float32)


@pytest.fixture
def model() -> _Spotter:
    torch.manual_seed(0)
    return _Spotter().eval()


def test_grad_cam_maps_lie_in_0_1_and_light_where_the_class_rests(model: _Spotter) -> None:
    crops = np.stack([_crop(np.random.default_rng(i)) for i in range(2)])
    maps = grad_cam(model, crops, [0, 1], layer=cam_layer(model))
    assert maps.shape == (2, SIDE, SIDE) and maps.dtype == np.float32
    assert maps.min() >= 0 and np.allclose(maps.max(axis=(1, 2)), 1)
    assert maps[0, 6:12, 4:10].mean() > 5 * maps[0, 20:26, 22:28].mean()  # the green spot
    assert maps[1, 20:26, 22:28].mean() > 5 * maps[1, 6:12, 4:10].mean()  # the red spot
    assert np.allclose(grad_cam(model, crops, [0, 1], batch_size=1), maps, atol=1e-6)


def test_grad_cam_refuses_a_class_outside_the_model(model: _Spotter) -> None:
    crops = _crop(np.random.default_rng(0))[None]
    with pytest.raises(ValueError, match="^classes:"):
        grad_cam(model, crops, [2])
    with pytest.raises(ValueError, match="^classes:"):
        grad_cam(model, crops, [0, 1])
    assert grad_cam(model, crops[:0], []).shape == (0, SIDE, SIDE)


def test_the_four_renderings(model: _Spotter) -> None:
    crop = _crop(np.random.default_rng(1))
    picture = crop_rgb(crop)
    assert picture.shape == (SIDE, SIDE, 3) and picture.dtype == np.uint8
    cam = grad_cam(model, crop[None], [0])[0]
    shown = render_cam(cam, picture)
    assert np.array_equal(shown.grey, np.rint(cam * 255).astype(np.uint8))
    hot, cold = np.unravel_index(cam.argmax(), cam.shape), np.unravel_index(cam.argmin(), cam.shape)
    assert shown.colour[hot][0] > shown.colour[hot][2] and shown.colour[cold][2] > shown.colour[cold][0]
    assert np.abs(shown.overlay.astype(int) - (shown.colour.astype(int) + picture) / 2).max() <= 1
    assert shown.multiply[cold].max() <= 1 and cam[cold] < 0.01
    assert np.abs(shown.multiply[hot].astype(int) - picture[hot]).max() <= 1
    assert [name for name, _ in shown.items()] == ["grey", "colour", "overlay", "multiply"]
    with pytest.raises(ValueError, match="^picture:"):
        render_cam(cam, picture[:-1])


def test_lime_repeats_with_its_seed_and_finds_the_spot(
    model: _Spotter, capfd: pytest.CaptureFixture[str]
) -> None:
    crop = _crop(np.random.default_rng(2))
    calls: list[int] = []

    def predict(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        with torch.inference_mode():
            return model(torch.from_numpy(batch)).numpy()

    first = lime_explanation(crop, predict, 1, samples=200, segments=20, seed=7)
    assert capfd.readouterr().err == ""  # no progress bar per cell on a terminal or in a log
    again = lime_explanation(crop, predict, 1, samples=200, segments=20, seed=7)
    assert np.array_equal(first.weights, again.weights) and np.array_equal(first.mask, again.mask)
    assert max(calls) > 1 and sum(calls) == 2 * (200 + 1)  # batched perturbations + the crop itself
    assert first.mask[22, 24] and not first.mask[8, 6]  # the red spot explains class 1
    assert first.saliency.max() == 1 and first.saliency.min() >= 0
    assert np.array_equal(np.unique(first.segments), np.arange(first.weights.size))
    other = lime_explanation(crop, predict, 1, samples=200, segments=20, seed=8)
    assert not np.array_equal(other.weights, first.weights)
    shown = render_lime(crop_rgb(crop), first)
    assert shown.shape == (SIDE, SIDE, 3)
    assert np.all(shown[~first.mask] <= crop_rgb(crop)[~first.mask] // 4 + 1)
    with pytest.raises(ValueError, match="^class_index:"):
        lime_explanation(crop, predict, 5, samples=10)


def test_superpixels_are_deterministic() -> None:
    crop = _crop(np.random.default_rng(3))
    assert np.array_equal(superpixels(crop, 20), superpixels(crop, 20))
