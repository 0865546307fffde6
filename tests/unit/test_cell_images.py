"""The four channels of a cells image from one file or four (labsight/cell_images.py)."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
import tifffile
from PIL import Image

from labsight import cell_images
from labsight.cell_images import cell_image_info, check_answer_size, read_cell_image
from labsight.errors import InvalidArgument
from labsight.images import encode_png, image_from_array
from labsight.v1 import tensor_pb2

PIXELS = np.random.default_rng(3).integers(0, 255, (12, 10, 4), dtype=np.uint8)


def _encoded(data: bytes) -> tensor_pb2.Image:
    return tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=data))


def _tiff(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, pixels)
    return buffer.getvalue()


def _rgba_png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGBA").save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("data", [_tiff, _rgba_png], ids=["tifffile-hw4", "rgba-png"])
def test_a_4th_sample_marked_alpha_is_read_as_yellow(data: Callable[[np.ndarray], bytes]) -> None:
    image = _encoded(data(PIXELS))
    assert cell_image_info([("image", image)]).shape == (12, 10, 4)
    assert image.read.channels == "0,1,2,3"  # later readings (worker, service) agree
    pixels = read_cell_image([("image", image)])
    assert np.array_equal(pixels, PIXELS)


def test_an_rgb_image_is_not_widened() -> None:
    image = _encoded(_tiff(PIXELS[..., :3]))
    with pytest.raises(InvalidArgument, match="image: 3 channel"):
        cell_image_info([("image", image)])
    assert image.read.channels == ""


def test_four_grey_images_are_stacked_in_channel_order() -> None:
    parts = [(f"c[{i}]", _encoded(encode_png(PIXELS[..., i]))) for i in range(4)]
    info = cell_image_info(parts)
    assert (info.shape, info.dtype) == ((12, 10, 4), np.dtype(np.uint8))
    pixels = read_cell_image(parts)
    assert np.array_equal(pixels, PIXELS)


def test_a_colour_channel_image_is_refused_naming_it() -> None:
    parts = [(f"c[{i}]", image_from_array(PIXELS[..., i])) for i in range(3)]
    parts.append(("c[3]", image_from_array(PIXELS[..., :3])))
    with pytest.raises(InvalidArgument, match=r"c\[3\]: 3 channels; the yellow channel must be"):
        cell_image_info(parts)


def test_masks_that_would_not_fit_an_answer_are_refused() -> None:
    info = cell_image_info([("image", image_from_array(PIXELS))])
    check_answer_size(info, "image", 12 * 10 * 8)
    with pytest.raises(InvalidArgument, match="image: 12x10 pixels give label masks of 960 bytes"):
        check_answer_size(info, "image", 959)


def test_reading_checks_the_answer_size_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    parts = [("image", image_from_array(PIXELS))]
    assert np.array_equal(read_cell_image(parts, max_answer_bytes=12 * 10 * 8), PIXELS)
    monkeypatch.setattr(cell_images, "read_image", lambda *args, **options: pytest.fail("decoded"))
    with pytest.raises(InvalidArgument, match="image: 12x10 pixels give label masks of 960 bytes"):
        read_cell_image(parts, max_answer_bytes=959)
