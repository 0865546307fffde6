"""A TIFF read by regions gives the patches the decoded image gives, whatever its storage."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tifffile

from labsight.patches import spot_patches
from labsight.regions import ContiguousPixels, readable_by_regions, tiff_regions

PIXELS = np.random.default_rng(0).integers(0, 256, (300, 257, 3), dtype=np.uint8)
CENTRES = np.array([[5.0, 5.0], [250.0, 290.0], [100.4, 100.6], [256.0, 0.0]])
LAYOUTS = {
    "one uncompressed strip": {},
    "uncompressed strips": {"rowsperstrip": 7},
    "uncompressed tiles": {"tile": (64, 64)},
    "zlib strips": {"compression": "zlib"},
    "zlib tiles": {"tile": (64, 64), "compression": "zlib"},
    "lzw tiles": {"tile": (64, 64), "compression": "lzw"},
    "zstd strips": {"compression": "zstd", "rowsperstrip": 16},
}


def _tiff(pixels: np.ndarray, **options: object) -> io.BytesIO:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, pixels, **options)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("edge", ["pad-constant", "pad-reflect", "pad-edge", "drop"])
def test_patches_cut_by_regions_equal_those_of_the_decoded_image(layout: str, edge: str) -> None:
    with tiff_regions(_tiff(PIXELS, **LAYOUTS[layout])) as image:
        assert image.shape == PIXELS.shape
        got = spot_patches(image, CENTRES, 40, edge=edge)
    expected = spot_patches(PIXELS, CENTRES, 40, edge=edge)
    np.testing.assert_array_equal(got.pixels, expected.pixels)
    np.testing.assert_array_equal(got.at_edge, expected.at_edge)


@pytest.mark.parametrize("ome", [True, False])
def test_a_pyramid_is_read_at_full_resolution(ome: bool) -> None:
    # as slide scanners, QuPath and bfconvert write whole slides: tiled levels in SubIFDs
    buffer = io.BytesIO()
    with tifffile.TiffWriter(buffer, ome=ome) as tif:
        tif.write(PIXELS, subifds=2, tile=(64, 64), compression="lzw", photometric="rgb")
        for level in (2, 4):
            tif.write(PIXELS[::level, ::level], subfiletype=1, tile=(64, 64), compression="lzw",
                      photometric="rgb")
    buffer.seek(0)
    assert readable_by_regions(buffer)
    with tiff_regions(buffer) as image:
        assert image.shape == PIXELS.shape
        got = spot_patches(image, CENTRES, 40, edge="pad-reflect")
    np.testing.assert_array_equal(got.pixels, spot_patches(PIXELS, CENTRES, 40, edge="pad-reflect").pixels)


def test_a_single_block_is_read_by_the_rows_a_crop_spans() -> None:
    with tiff_regions(_tiff(PIXELS)) as image:
        assert isinstance(image._array, ContiguousPixels)
        np.testing.assert_array_equal(image[10:50, 200:300], PIXELS[10:50, 200:257])


def test_big_endian_grey_reads_as_its_values() -> None:
    grey = PIXELS[:, :, 0].astype(np.uint16) * 257
    with tiff_regions(_tiff(grey, byteorder=">")) as image:
        assert image.shape == (300, 257, 1)
        np.testing.assert_array_equal(image[3:9, 100:120][:, :, 0], grey[3:9, 100:120])


def test_a_stack_cannot_be_read_by_regions() -> None:
    with pytest.raises(ValueError, match="cannot be read by regions"), \
            tiff_regions(_tiff(np.zeros((3, 20, 20), np.uint8), photometric="minisblack")):
        pass


def test_a_cut_single_block_is_refused_when_opened() -> None:
    whole = _tiff(PIXELS).getvalue()
    with pytest.raises(ValueError, match=r"truncated: .* end at byte 231,\d+, the file has 115,\d+ bytes"), \
            tiff_regions(io.BytesIO(whole[: len(whole) // 2])):
        pass


@pytest.mark.parametrize("layout", ["uncompressed tiles", "zlib tiles"])
def test_a_region_of_cut_tiles_raises_value_error(layout: str) -> None:
    whole = _tiff(PIXELS, **LAYOUTS[layout]).getvalue()
    with tiff_regions(io.BytesIO(whole[: len(whole) // 2])) as image:
        np.testing.assert_array_equal(image[0:10, 0:10], PIXELS[0:10, 0:10])  # before the cut
        with pytest.raises(ValueError, match="tile|do not decode"):
            image[250:290, 200:250]


def test_only_one_plane_of_uint8_or_uint16_is_read_by_regions() -> None:
    assert readable_by_regions(_tiff(PIXELS))
    grey16 = _tiff(PIXELS[:, :, 0].astype(np.uint16))
    grey16.seek(100)  # where the stream stands does not matter, and it is left at the start
    assert readable_by_regions(grey16) and grey16.tell() == 0
    floats = _tiff(PIXELS[:, :, 0].astype(np.float32))
    assert not readable_by_regions(floats)  # mapped onto uint16 from the whole image instead
    assert not readable_by_regions(_tiff(np.zeros((3, 20, 20), np.uint8), photometric="minisblack"))
    assert not readable_by_regions(io.BytesIO(b"II*\x00 not a TIFF"))
    with pytest.raises(ValueError, match="a TIFF of float32 samples cannot be read by regions"), \
            tiff_regions(floats):
        pass
