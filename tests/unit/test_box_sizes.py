"""Fractal box sizes are parsed by their bounds and checked at submit against the core and the image."""

from __future__ import annotations

import io
import tracemalloc

import numpy as np
import pytest
from PIL import Image as PILImage

from labsight.errors import InvalidArgument, ResourceExhausted
from labsight.fractal_work import PERCOLATION_FACTOR, fractal_cost
from labsight.images import encode_png, image_from_array
from labsight.v1 import gateway_pb2 as pb
from labsight.v1 import tensor_pb2
from services.features import fractal as fractal_core
from services.gateway.pipelines.fractal import (
    MAX_BOX_SIZE,
    FractalPipeline,
    parse_box_sizes,
)
from tests import hostile_images

PIPELINE = FractalPipeline()


def _job(image: tensor_pb2.Image) -> pb.JobInput:
    return pb.JobInput(image=image)


def _png(side: int) -> tensor_pb2.Image:
    return tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=hostile_images.png_zeros(side, side)))


def test_ranges_and_lists_parse_to_odd_ascending_sides() -> None:
    assert parse_box_sizes("3-41") == list(range(3, 42, 2))
    assert parse_box_sizes(" 4-10 ") == [5, 7, 9]
    assert parse_box_sizes("3,5,9") == [3, 5, 9]
    assert parse_box_sizes(f"3-{MAX_BOX_SIZE}")[-1] == MAX_BOX_SIZE


def test_the_largest_side_is_the_fractal_cores() -> None:
    assert MAX_BOX_SIZE == fractal_core.MAX_BOX_SIZE


def test_a_huge_range_is_refused_by_its_bounds_without_listing_it() -> None:
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"a range must lie within 3-255, got '3-10000001'"):
            parse_box_sizes("3-10000001")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


@pytest.mark.parametrize("text", ["3-" + "9" * 400, "3-" + "9" * 5000, "9" * 400, "3,5," + "9" * 5000])
def test_huge_numbers_are_a_value_error_naming_the_text_cut(text: str) -> None:
    with pytest.raises(ValueError) as error:
        parse_box_sizes(text)
    assert len(str(error.value)) < 300


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("3-301", "a range must lie within 3-255"),
        ("1-41", "a range must lie within 3-255"),
        ("3,5,257", r"box sizes must be odd and within 3-255, got '257'"),
        ("4,6", r"box sizes must be odd and within 3-255, got '4, 6'"),
        ("9,5", "ascending without repeats"),
        ("41-3", "no box sizes"),
        ("3-5-7", "expected a range like 3-41"),
        ("3," * 600, "1200 characters"),
    ],
)
def test_bad_box_sizes_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_box_sizes(text)


def test_box_sizes_up_to_the_image_side_are_accepted_and_larger_refused_at_submit() -> None:
    image = image_from_array(np.zeros((41, 50), np.uint8))
    PIPELINE.validate({"box_sizes": "3-41"}, _job(image))
    with pytest.raises(InvalidArgument, match=r"input\.image: 41x50 pixels is smaller than the largest "
                       r"box side 43 \(params\.box_sizes\)"):
        PIPELINE.validate({"box_sizes": "3-43"}, _job(image))


def test_a_301_range_on_a_301_pixel_image_is_refused_at_submit() -> None:
    with pytest.raises(InvalidArgument, match=r"params\.box_sizes: a range must lie within 3-255"):
        PIPELINE.validate({"box_sizes": "3-301"}, _job(_png(301)))


@pytest.mark.parametrize("channels", [2, 4, 5])
def test_images_the_core_refuses_are_refused_at_submit(channels: int) -> None:
    image = image_from_array(np.zeros((64, 64, channels), np.uint8))
    with pytest.raises(InvalidArgument, match=rf"input\.image: {channels} channels; fractal features "
                       r"take grey \(1\) or RGB \(3\)"):
        PIPELINE.validate({}, _job(image))


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_pngs_with_alpha_pass_as_rgb_or_grey_unless_the_alpha_is_chosen_as_a_channel(mode: str) -> None:
    # The alpha is checked to be opaque when the pixels are read (in the worker), not at submit.
    pixels = np.zeros((64, 64, len(mode)), np.uint8)
    buffer = io.BytesIO()
    PILImage.fromarray(pixels, mode=mode).save(buffer, format="PNG")
    image = tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=buffer.getvalue()))
    PIPELINE.validate({}, _job(image))
    every = ",".join(str(i) for i in range(len(mode)))
    with pytest.raises(InvalidArgument, match=r"channels; fractal features take grey \(1\) or RGB \(3\)"):
        PIPELINE.validate({"channels": every}, _job(image))


def test_grey_and_rgb_images_pass() -> None:
    PIPELINE.validate({}, _job(image_from_array(np.zeros((64, 64, 3), np.uint8))))
    PIPELINE.validate({}, _job(image_from_array(np.zeros((64, 64, 1), np.uint16))))
    png = tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=encode_png(np.zeros((64, 64), np.uint8))))
    PIPELINE.validate({"percolation": "true"}, _job(png))


def test_cost_counts_every_box_pixel_and_percolation_on_the_largest_box() -> None:
    sizes = list(range(3, 42, 2))
    assert fractal_cost(100, sizes, False) == 100 * 12340
    assert fractal_cost(100, sizes, True) == 100 * 12340 + 100 * 41 * 41 * PERCOLATION_FACTOR


def test_lab_sized_fractal_jobs_pass_and_costly_ones_need_a_higher_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    PIPELINE.validate({}, _job(_png(2048)))
    jpeg = tensor_pb2.Image(
        encoded=tensor_pb2.EncodedImage(data=hostile_images.jpeg_declaring(4000, 4000))
    )
    PIPELINE.validate({}, _job(jpeg))  # 1.97e11: about 15 s of one core
    with pytest.raises(ResourceExhausted, match=r"a fractal job on 4000x4000 pixels with box sizes 3-81 "
                       r"\(40 sides\) costs 1\.47e\+12 box-pixel comparisons, over the limit of 1e\+12 "
                       r"\(LABSIGHT_MAX_FRACTAL_COST\)"):
        PIPELINE.validate({"box_sizes": "3-81"}, _job(jpeg))
    with pytest.raises(ResourceExhausted, match=r"2048x2048 pixels .* and percolation costs"):
        PIPELINE.validate({"percolation": "true"}, _job(_png(2048)))
    monkeypatch.setenv("LABSIGHT_MAX_FRACTAL_COST", "2e12")
    PIPELINE.validate({"box_sizes": "3-81"}, _job(jpeg))
    PIPELINE.validate({"percolation": "true"}, _job(_png(2048)))
