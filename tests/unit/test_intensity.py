"""Intensity scaling: what each choice maps to black and white, exactness, and the low-range warning."""

from __future__ import annotations

import numpy as np
import pytest

from labsight.intensity import low_range_warning, parse_intensity, scale_intensity
from labsight.models import Preprocessing
from services.features.deep import preprocess
from services.features.fractal import gliding_box


@pytest.mark.parametrize(
    ("text", "kind", "bits", "low", "high"),
    [
        ("", "full-range", None, 0.0, 100.0),
        ("full-range", "full-range", None, 0.0, 100.0),
        ("bit-depth:12", "bit-depth", 12, 0.0, 100.0),
        ("BIT-DEPTH", "bit-depth", None, 0.0, 100.0),
        ("percentile:0.1-99.9", "percentile", None, 0.1, 99.9),
        ("minmax", "percentile", None, 0.0, 100.0),
    ],
)
def test_intensity_choices_parse(text: str, kind: str, bits: int | None, low: float, high: float) -> None:
    scaling = parse_intensity(text)
    assert (scaling.kind, scaling.bits, scaling.low, scaling.high) == (kind, bits, low, high)


@pytest.mark.parametrize(
    "text", ["gamma", "bit-depth:0", "bit-depth:17", "percentile:99-1", "percentile:0-101", "bit-depth:x"]
)
def test_bad_intensity_choices_say_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match=r"expected|must"):
        parse_intensity(text)


def test_full_range_leaves_pixels_unchanged() -> None:
    pixels = np.arange(0, 4096, 16, dtype=np.uint16)
    scaled = scale_intensity(pixels, parse_intensity("full-range"))
    assert scaled.pixels is pixels and (scaled.black, scaled.white) == (0.0, 65535.0)


def test_bit_depth_maps_its_range_onto_the_dtype_range_rounding_half_up() -> None:
    pixels = np.array([0, 1, 2048, 4095, 5000], np.uint16)
    scaled = scale_intensity(pixels, parse_intensity("bit-depth:12"))
    expected = np.floor(np.minimum(pixels.astype(np.int64), 4095) * 65535 / 4095 + 0.5).astype(np.uint16)
    np.testing.assert_array_equal(scaled.pixels, expected)
    assert scaled.pixels[-2] == 65535 and scaled.clipped == 1 and scaled.white == 4095


def test_bit_depth_without_a_number_takes_the_metadata_else_the_data() -> None:
    pixels = np.array([0, 1000], np.uint16)
    from_metadata = scale_intensity(pixels, parse_intensity("bit-depth"), metadata_bits=12)
    from_data = scale_intensity(pixels, parse_intensity("bit-depth"))
    assert from_metadata.white == 4095 and from_data.white == 1023


def test_bit_depth_beyond_the_dtype_is_refused() -> None:
    with pytest.raises(ValueError, match="bit-depth:12 exceeds the image's uint8 samples"):
        scale_intensity(np.zeros(4, np.uint8), parse_intensity("bit-depth:12"))


def test_percentiles_become_black_and_white() -> None:
    pixels = np.arange(1001, dtype=np.uint16) + 100  # 100 .. 1100
    scaled = scale_intensity(pixels, parse_intensity("percentile:10-90"))
    assert (scaled.black, scaled.white) == (200.0, 1000.0)
    assert scaled.pixels[100] == 0 and scaled.pixels[900] == 65535 and scaled.pixels[500] == 32768
    assert scaled.clipped == 200
    minmax = scale_intensity(pixels, parse_intensity("minmax"))
    assert minmax.pixels.min() == 0 and minmax.pixels.max() == 65535


def test_a_constant_image_stretched_by_percentiles_is_black() -> None:
    scaled = scale_intensity(np.full((4, 4), 7, np.uint8), parse_intensity("minmax"))
    assert not scaled.pixels.any()


def test_bit_depth_12_keeps_every_fractal_threshold_decision_of_the_8_bit_values() -> None:
    """For 12-bit data holding 16·v, |a' - b'| <= 257·r after bit-depth:12 exactly when
    |a - b| <= r for the 8-bit values a, b: every pair of values, every box side up to 255."""
    values = np.arange(256)
    mapped = scale_intensity((values * 16).astype(np.uint16), parse_intensity("bit-depth:12"))
    wide = mapped.pixels.astype(np.int64)
    differences_8 = np.abs(values[:, None] - values[None, :])
    differences_16 = np.abs(wide[:, None] - wide[None, :])
    for r in range(1, 256):
        np.testing.assert_array_equal(differences_16 <= 257 * r, differences_8 <= r, err_msg=f"r={r}")


def test_bit_depth_12_gives_the_fractal_numbers_of_the_8_bit_original() -> None:
    original = np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)
    twelve_bit = original.astype(np.uint16) * 16
    scaled = scale_intensity(twelve_bit, parse_intensity("bit-depth:12")).pixels
    expected, got = gliding_box(original), gliding_box(scaled)
    np.testing.assert_array_equal(got.lacunarity, expected.lacunarity)
    np.testing.assert_array_equal(got.box_count, expected.box_count)
    assert got.fractal_dimension == expected.fractal_dimension
    # Read at full range the same data is nearly uniform to the 257·r threshold.
    assert gliding_box(twelve_bit).fractal_dimension.value != expected.fractal_dimension.value


@pytest.mark.parametrize(
    ("pixels", "warned"),
    [
        (np.array([0, 4095], np.uint16), True),    # 12-bit data: 4096 of 65536 values
        (np.array([0, 4096], np.uint16), False),
        (np.array([100, 115], np.uint8), True),
        (np.array([0, 255], np.uint8), False),
    ],
)
def test_data_under_a_sixteenth_of_its_range_is_warned_about(pixels: np.ndarray, warned: bool) -> None:
    warning = low_range_warning(pixels, "input.image")
    assert (warning is not None) == warned
    if warning:
        assert warning.startswith(f"input.image: pixel values span {pixels.min()}-{pixels.max()}")
        assert "params.intensity=" in warning


def test_warning_proposes_the_bit_depth_the_data_fits() -> None:
    warning = low_range_warning(np.array([3, 4000], np.uint16), "input.image")
    assert warning is not None and "params.intensity=bit-depth:12" in warning


def test_warning_proposes_the_bit_depth_the_file_states_where_the_data_fits_it() -> None:
    data = np.array([3, 1000], np.uint16)  # fits 10 bits; the camera's file says 12
    warning = low_range_warning(data, "input.image", stated_bits=12)
    assert warning is not None and ("params.intensity=bit-depth (the file states 12 significant "
                                    "bits), else") in warning
    for stated in (16, 8, None):  # the dtype's own bits, fewer than the data has, none
        warning = low_range_warning(data, "input.image", stated_bits=stated)
        assert warning is not None and "params.intensity=bit-depth:10 if this is 10-bit data" in warning


@pytest.mark.parametrize("q", [0.0, 0.1, 2.5, 50.0, 99.9, 100.0])
def test_percentiles_from_the_histogram_equal_numpys(q: float) -> None:
    pixels = np.random.default_rng(5).gamma(2.0, 300.0, (37, 41)).astype(np.uint16)
    low = scale_intensity(pixels, parse_intensity(f"percentile:{min(q, 99.0)}-100"))
    high = scale_intensity(pixels, parse_intensity(f"percentile:0-{max(q, 1.0)}"))
    assert low.black == pytest.approx(np.percentile(pixels, min(q, 99.0)), abs=1e-9)
    assert high.white == pytest.approx(np.percentile(pixels, max(q, 1.0)), abs=1e-9)


def test_bit_depth_12_gives_cnn_inputs_within_half_a_percent_of_the_8_bit_originals() -> None:
    """Deep features see pixels / dtype maximum: 16·v read as bit-depth:12 is v·65535·16/4095
    (v/255.94 of the range) against v/255, so every model input differs by under 0.4 %."""
    original = np.random.default_rng(6).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    twelve_bit = scale_intensity(original.astype(np.uint16) * 16, parse_intensity("bit-depth:12")).pixels
    identity = Preprocessing(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    expected = preprocess([original], (32, 32), identity)
    got = preprocess([twelve_bit], (32, 32), identity)
    np.testing.assert_allclose(got, expected, rtol=0.004, atol=1e-6)
    at_full_range = preprocess([original.astype(np.uint16) * 16], (32, 32), identity)
    assert at_full_range.max() < 1 / 16  # at full range the model sees a nearly black image


def test_a_fixed_range_maps_the_same_values_for_every_image() -> None:
    pixels = np.array([0, 100, 1550, 3000, 4000], np.uint16)
    scaled = scale_intensity(pixels, parse_intensity("range:100-3000"))
    np.testing.assert_array_equal(scaled.pixels, [0, 0, 32768, 65535, 65535])
    assert (scaled.black, scaled.white, scaled.clipped) == (100, 3000, 2)
    assert parse_intensity("range:-0.5-2.5").low == -0.5
    with pytest.raises(ValueError, match="range:LO-HI needs finite LO < HI, got 3-3"):
        parse_intensity("range:3-3")
