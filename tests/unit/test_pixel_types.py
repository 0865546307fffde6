"""Floating-point, signed, 32-bit and 1-bit pixels map onto uint16 (uint8) by the intensity choice."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from labsight.intensity import parse_intensity, scale_intensity
from labsight.pixel_types import conversion_bytes, delivered_dtype, readable_dtype, to_native

ALL_UINT16 = np.arange(65536, dtype=np.uint16)


def test_floats_of_0_to_1_give_back_every_uint16_value_exactly() -> None:
    as_float = (ALL_UINT16 / np.float32(65535)).astype(np.float32)
    converted = to_native(as_float, parse_intensity("full-range"))
    np.testing.assert_array_equal(converted.scaled.pixels, ALL_UINT16)
    assert (converted.scaled.black, converted.scaled.white, converted.scaled.clipped) == (0, 1, 0)


@pytest.mark.parametrize("bits", [8, 12, 15])
def test_signed_data_at_a_bit_depth_maps_as_the_same_unsigned_data(bits: int) -> None:
    values = np.arange(1 << bits, dtype=np.uint16)
    expected = scale_intensity(values, parse_intensity(f"bit-depth:{bits}")).pixels
    got = to_native(values.astype(np.int16), parse_intensity(f"bit-depth:{bits}")).scaled.pixels
    np.testing.assert_array_equal(got, expected)


def test_full_range_refuses_data_outside_the_dtypes_range_naming_the_values() -> None:
    with pytest.raises(ValueError, match=r"float32 pixels span -0.5 to 3, outside the 0-1 .* range:LO-HI"):
        to_native(np.array([-0.5, 0.2, 3.0], np.float32), parse_intensity("full-range"))
    with pytest.raises(ValueError, match=r"int16 pixels span -7 to 9, outside the 0-32767"):
        to_native(np.array([-7, 9], np.int16), parse_intensity("full-range"))


def test_minmax_percentile_and_range_take_finite_values_and_nan_reads_as_black() -> None:
    pixels = np.array([np.nan, -np.inf, 10.0, 20.0, 30.0, np.inf], np.float64)
    minmax = to_native(pixels, parse_intensity("minmax"))
    assert (minmax.scaled.black, minmax.scaled.white, minmax.not_a_number) == (10, 30, 1)
    np.testing.assert_array_equal(minmax.scaled.pixels, [0, 0, 0, 32768, 65535, 65535])
    ranged = to_native(pixels, parse_intensity("range:15-25"))
    np.testing.assert_array_equal(ranged.scaled.pixels, [0, 0, 0, 32768, 65535, 65535])
    assert ranged.scaled.clipped == 4  # -inf, 10, 30, inf
    assert to_native(pixels, parse_intensity("percentile:0-50")).scaled.white == 20


def test_bit_depth_of_floats_and_over_a_signed_dtypes_bits_are_refused() -> None:
    with pytest.raises(ValueError, match="bit-depth:12 needs integer pixels; float32"):
        to_native(np.zeros(3, np.float32), parse_intensity("bit-depth:12"))
    with pytest.raises(ValueError, match="bit-depth:16 exceeds the image's int16"):
        to_native(np.zeros(3, np.int16), parse_intensity("bit-depth:16"))


def test_one_bit_reads_as_0_and_255_and_one_value_as_black() -> None:
    np.testing.assert_array_equal(
        to_native(np.array([True, False]), parse_intensity("full-range")).scaled.pixels, [255, 0]
    )
    flat = to_native(np.full(4, 7, np.int32), parse_intensity("minmax"))
    np.testing.assert_array_equal(flat.scaled.pixels, np.zeros(4, np.uint16))


def test_a_32_bit_count_image_read_full_range_is_warned_of_in_its_own_values() -> None:
    converted = to_native(np.array([3, 70_000], np.uint32), parse_intensity("full-range"))
    warning = converted.low_range_warning("image", parse_intensity("full-range"))
    assert warning is not None and warning.startswith("image: values span 3-70000, under 1/16")
    assert to_native(np.array([3, 70_000], np.uint32), parse_intensity("minmax")).low_range_warning(
        "image", parse_intensity("minmax")) is None


def test_dtypes_read_delivered_and_the_memory_counted() -> None:
    assert readable_dtype(np.dtype(np.float32)) and not readable_dtype(np.dtype(np.complex64))
    assert delivered_dtype(np.dtype(np.float64)) == np.uint16
    assert delivered_dtype(np.dtype(np.bool_)) == np.uint8
    assert delivered_dtype(np.dtype(np.uint8)) == np.uint8
    assert conversion_bytes((10, 10), np.dtype(np.float32)) == 100 * (4 + 2 + 2)
    assert conversion_bytes((10, 10), np.dtype(np.int16)) == 100 * (8 + 2 + 2)
    assert conversion_bytes((10, 10), np.dtype(np.uint16)) == 0


def test_data_spanning_more_than_float64s_largest_value_maps_without_overflow() -> None:
    extreme = np.array([-1e308, 0.0, 1e308, np.inf, -np.inf])
    with np.errstate(all="raise"):
        converted = to_native(extreme, parse_intensity("minmax"))
    np.testing.assert_array_equal(converted.scaled.pixels, [0, 32768, 65535, 65535, 0])
    with pytest.raises(ValueError, match="range:LO-HI needs finite LO < HI, got 0-inf"):
        parse_intensity("range:0-1e999")


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "int16", "uint32"])
@pytest.mark.parametrize("intensity", ["full-range", "minmax", "range:0-500"])
def test_the_mapping_takes_no_more_memory_than_counted_against_the_image_limit(
    dtype: str, intensity: str,
) -> None:
    pixels = (np.random.default_rng(6).random((300, 400)) * (1 if intensity == "full-range" else 1000))
    pixels = pixels.astype(dtype)
    tracemalloc.start()
    try:
        to_native(pixels, parse_intensity(intensity))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= conversion_bytes(pixels.shape, pixels.dtype)
