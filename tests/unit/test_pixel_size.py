"""The pixel size microscope files state, read from files tifffile writes as OME, ImageJ and
plain TIFF software does, and how a given size, a stated one and the default are chosen."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from labsight.images import image_from_file, read_image, stated_pixel_size
from labsight.pixel_size import PixelSize, choose_pixel_size, first_stated, tiff_pixel_size, um_per_unit

PLANES = np.arange(2 * 32 * 48, dtype=np.uint16).reshape(2, 32, 48)
"""Two channels of 32 x 48 pixels."""


def _stated(path: Path) -> PixelSize | None:
    with tifffile.TiffFile(path) as tif:
        return tiff_pixel_size(tif)


def _ome(path: Path, **sizes: object) -> Path:
    tifffile.imwrite(path, PLANES, ome=True, metadata={"axes": "CYX", **sizes})
    return path


def _imagej(path: Path, unit: str | None, per_unit: tuple[float, float]) -> Path:
    metadata = {"axes": "CYX"} if unit is None else {"axes": "CYX", "unit": unit}
    tifffile.imwrite(path, PLANES, imagej=True, metadata=metadata, resolution=per_unit)
    return path


def test_ome_physical_sizes_in_micrometres_by_default_and_in_their_stated_units(tmp_path: Path) -> None:
    size = _stated(_ome(tmp_path / "a.ome.tif", PhysicalSizeX=0.1625, PhysicalSizeY=0.1625))
    assert size == PixelSize(0.1625, "OME PhysicalSizeX/Y", 0.1625, 0.1625)
    size = _stated(_ome(tmp_path / "b.ome.tif", PhysicalSizeX=325, PhysicalSizeXUnit="nm",
                        PhysicalSizeY=325, PhysicalSizeYUnit="nm"))
    assert size is not None and math.isclose(size.um, 0.325)


def test_imagej_calibration_in_each_way_imagej_names_the_micrometre(tmp_path: Path) -> None:
    for unit in ("micron", "um", "\\u00B5m"):  # ImageJ descriptions are ASCII
        size = _stated(_imagej(tmp_path / "a.tif", unit, (1 / 0.16, 1 / 0.16)))
        assert size is not None and math.isclose(size.um, 0.16), unit
        assert size.source == "ImageJ calibration" and size.square
    size = _stated(_imagej(tmp_path / "nm.tif", "nm", (1 / 650, 1 / 650)))
    assert size is not None and math.isclose(size.um, 0.65)


def test_pixels_that_are_not_square_give_their_geometric_mean(tmp_path: Path) -> None:
    size = _stated(_imagej(tmp_path / "a.tif", "micron", (1 / 0.1, 1 / 0.4)))
    assert size is not None and not size.square
    assert math.isclose(size.x_um, 0.1) and math.isclose(size.y_um, 0.4) and math.isclose(size.um, 0.2)
    assert "0.1 x 0.4 µm (geometric mean 0.2)" in size.describe()


def test_a_plain_tiff_resolution_counts_in_centimetres_never_in_inches(tmp_path: Path) -> None:
    centimetres = tmp_path / "cm.tif"
    tifffile.imwrite(centimetres, PLANES[0], resolution=(20000, 20000), resolutionunit="CENTIMETER")
    size = _stated(centimetres)
    assert size is not None and math.isclose(size.um, 0.5) and size.source == "TIFF resolution"
    inches = tmp_path / "inch.tif"
    tifffile.imwrite(inches, PLANES[0], resolution=(72, 72), resolutionunit="INCH")
    assert _stated(inches) is None  # a writer's screen dots per inch, not a calibration
    scanner = tmp_path / "ndpi-like.tif"  # a slide scanner's 0.23 µm pixels, per cm
    tifffile.imwrite(scanner, PLANES[0], resolution=(43478, 43478), resolutionunit="CENTIMETER")
    size = _stated(scanner)
    assert size is not None and math.isclose(size.um, 0.23, rel_tol=1e-4)
    for per_cm in (28.35, 37.8, 118.11, 236.22):  # an editor's 72, 96, 300, 600 dpi, per cm
        edited = tmp_path / "edited.tif"
        tifffile.imwrite(edited, PLANES[0], resolution=(per_cm, per_cm), resolutionunit="CENTIMETER")
        assert _stated(edited) is None, per_cm


def test_files_that_state_nothing_usable_give_none(tmp_path: Path) -> None:
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, PLANES)  # tifffile's resolution 1/1 with no unit
    assert _stated(plain) is None
    assert _stated(_imagej(tmp_path / "uncalibrated.tif", None, (1, 1))) is None
    assert _stated(_imagej(tmp_path / "pixel.tif", "pixel", (1, 1))) is None
    assert _stated(_ome(tmp_path / "none.ome.tif")) is None
    assert _stated(_ome(tmp_path / "x-only.ome.tif", PhysicalSizeX=0.2)) is None
    assert _stated(_ome(tmp_path / "unknown-unit.ome.tif", PhysicalSizeX=0.2, PhysicalSizeXUnit="parsec",
                        PhysicalSizeY=0.2)) is None
    assert _stated(_imagej(tmp_path / "huge.tif", "m", (1e-3, 1e-3))) is None  # a metre a pixel
    assert um_per_unit("inch") is None and um_per_unit(" Micron ") == 1.0


def test_the_reading_and_the_header_alone_give_the_same_size(tmp_path: Path) -> None:
    path = _ome(tmp_path / "a.ome.tif", PhysicalSizeX=0.25, PhysicalSizeY=0.25)
    image = image_from_file(str(path))
    reading = read_image(image)
    assert reading.pixel_size == stated_pixel_size(image) == _stated(path)
    assert reading.provenance["image_pixel_size"] == "0.25 µm (OME PhysicalSizeX/Y)"
    png = tmp_path / "a.png"
    Image.fromarray(PLANES[0].astype(np.uint8)).save(png)
    assert read_image(image_from_file(str(png))).pixel_size is None
    assert "image_pixel_size" not in read_image(image_from_file(str(png))).provenance


def test_a_given_size_wins_and_is_warned_about_where_the_file_says_otherwise() -> None:
    stated = PixelSize(0.16, "OME PhysicalSizeX/Y", 0.16, 0.16)
    chosen = choose_pixel_size(0.08, stated, 0.08, "params.pixel_size_um")
    assert (chosen.um, chosen.source) == (0.08, "params.pixel_size_um")
    assert chosen.warnings == ("params.pixel_size_um=0.08 but the image file states 0.16 µm (OME "
                               "PhysicalSizeX/Y); sizes and areas use 0.08 µm",)
    assert choose_pixel_size(0.161, stated, 0.08, "p").warnings == ()  # within 2 %
    assert choose_pixel_size(None, stated, 0.08, "p") == choose_pixel_size(None, stated, 0.5, "p")
    assert choose_pixel_size(None, stated, 0.08, "p").source == "file: OME PhysicalSizeX/Y"
    assert choose_pixel_size(None, None, 0.08, "p") == choose_pixel_size(None, None, 0.08, "q")
    assert choose_pixel_size(None, None, 0.08, "p").um == 0.08
    oblong = choose_pixel_size(None, PixelSize(0.2, "ImageJ calibration", 0.1, 0.4), 0.08, "p")
    assert oblong.um == 0.2 and "not square" in oblong.warnings[0]


def test_channel_files_that_disagree_keep_the_first_and_say_so() -> None:
    a, b = PixelSize(0.1, "OME PhysicalSizeX/Y", 0.1, 0.1), PixelSize(0.2, "ImageJ calibration", 0.2, 0.2)
    assert first_stated([("red", None), ("green", None)]) == (None, [])
    assert first_stated([("red", None), ("green", a), ("blue", a)]) == (a, [])
    size, warnings = first_stated([("red", a), ("green", b)])
    assert size == a and warnings == [
        "green states pixels of 0.2 µm (ImageJ calibration), red 0.1 µm (OME PhysicalSizeX/Y); "
        "the first is used"]


@pytest.mark.parametrize("unit", ["µm", "um"])
def test_ome_units_spelled_either_way(tmp_path: Path, unit: str) -> None:
    size = _stated(_ome(tmp_path / "a.ome.tif", PhysicalSizeX=0.5, PhysicalSizeXUnit=unit,
                        PhysicalSizeY=0.5, PhysicalSizeYUnit=unit))
    assert size is not None and size.um == 0.5


def test_an_aperio_slide_states_its_microns_per_pixel(tmp_path: Path) -> None:
    path = tmp_path / "slide.svs"
    description = ("Aperio Image Library v12.0.15 \r\n46000x32914 [0,100 46000x32714] (240x240) "
                   "JPEG/RGB Q=70|AppMag = 20|MPP = 0.4990|Left = 25.0")
    tifffile.imwrite(path, np.zeros((64, 64, 3), np.uint8), photometric="rgb", tile=(16, 16),
                     description=description, metadata=None)
    assert _stated(path) == PixelSize(0.499, "Aperio MPP", 0.499, 0.499)
