"""The physical pixel size a microscope file states: OME, ImageJ calibration, Aperio, TIFF resolution.

Microscope software records how many micrometres a pixel spans, and every size
limit of the cell segmentation depends on it. These places hold it, read in this
order (the first that states a size wins):

- OME-XML: ``PhysicalSizeX`` / ``PhysicalSizeY`` of the read image's ``Pixels``,
  in ``PhysicalSizeXUnit`` (µm when absent, as the OME schema says);
- ImageJ: the ``unit`` of the description (``micron``, ``um``, ``nm``, ...) and
  the TIFF ``XResolution`` / ``YResolution`` tags, pixels per unit;
- an Aperio SVS whole slide: ``MPP`` (microns per pixel) in its description;
- a plain TIFF whose ``ResolutionUnit`` is the centimetre (pixels per cm).

Resolutions per inch are ignored: writers put their screen or print dots per inch
there (72, 96, 300), never a microscope's calibration. Image editors may write those
same dots per centimetre (28.35 for 72 dpi), so a plain TIFF's resolution counts only
up to :data:`PLAIN_TIFF_MAX_UM`. A size outside :data:`PLAUSIBLE_UM` is ignored too,
and so is one that does not parse.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from xml.etree import ElementTree

import tifffile

__all__ = [
    "PLAIN_TIFF_MAX_UM", "PLAUSIBLE_UM", "PixelSize", "PixelSizeChoice", "choose_pixel_size", "first_stated",
    "tiff_pixel_size", "um_per_unit",
]

PLAUSIBLE_UM = (1e-4, 1e4)
"""Pixel sizes (µm) taken as a calibration: from an electron micrograph's tenth of a nanometre
to a centimetre; anything else is a writer's default, not a measurement."""

PLAIN_TIFF_MAX_UM = 20.0
"""Largest pixel size (µm) taken from a plain TIFF's resolution in pixels per cm: a slide
scanner's or microscope camera's pixels are well under it (0.1-10 µm), while an image editor's
dots per inch written as per cm (72 dpi: 353 µm; 600 dpi: 42 µm) are over it."""

_UNIT_UM = {
    "pm": 1e-6, "Å": 1e-4, "å": 1e-4, "angstrom": 1e-4, "nm": 1e-3, "nanometer": 1e-3,
    "nanometre": 1e-3, "µm": 1.0, "μm": 1.0, "um": 1.0, "micron": 1.0, "microns": 1.0,
    "micrometer": 1.0, "micrometre": 1.0, "\\u00b5m": 1.0, "mm": 1e3, "millimeter": 1e3,
    "millimetre": 1e3, "cm": 1e4, "centimeter": 1e4, "centimetre": 1e4, "m": 1e6,
    "meter": 1e6, "metre": 1e6,
}
"""Micrometres per length unit, by the names OME and ImageJ write (lower case)."""

_ANISOTROPY = 0.01
"""Relative difference of the X and Y sizes above which the pixels count as not square."""

_RESOLUTION_UNIT_CM = 3
"""TIFF ResolutionUnit CENTIMETER."""

_APERIO_MPP = re.compile(r"\|\s*MPP\s*=\s*([0-9.eE+-]+)")
"""The microns-per-pixel field of an Aperio SVS description."""

_DISAGREEMENT = 0.02
"""Relative difference between a given and a stated pixel size worth a warning."""


@dataclass(frozen=True)
class PixelSize:
    """A pixel's physical size as a file states it.

    Attributes
    ----------
    um : float
        Micrometres per pixel; for pixels that are not square, the geometric mean of
        the X and Y sizes (the side of a square pixel of the same area).
    source : str
        Where it was found, for messages and provenance (``OME PhysicalSizeX/Y``,
        ``ImageJ calibration``, ``TIFF resolution``).
    x_um, y_um : float
        The X and Y sizes as stated.
    """

    um: float
    source: str
    x_um: float
    y_um: float

    @property
    def square(self) -> bool:
        """Whether the X and Y sizes agree within 1 %."""
        return abs(self.x_um - self.y_um) <= _ANISOTROPY * max(self.x_um, self.y_um)

    def describe(self) -> str:
        """'0.16 µm (OME PhysicalSizeX/Y)', or with both sizes where they differ."""
        sizes = f"{self.um:.4g} µm" if self.square else \
            f"{self.x_um:.4g} x {self.y_um:.4g} µm (geometric mean {self.um:.4g})"
        return f"{sizes} ({self.source})"


@dataclass(frozen=True)
class PixelSizeChoice:
    """The pixel size a computation uses and why (:func:`choose_pixel_size`).

    Attributes
    ----------
    um : float
        Micrometres per pixel.
    source : str
        Where it came from, for provenance: the parameter's name, ``file: ...`` or
        ``default``.
    warnings : tuple of str
        What a result computed with it should carry (a given size the file contradicts,
        pixels that are not square).
    """

    um: float
    source: str
    warnings: tuple[str, ...] = ()


def choose_pixel_size(given: float | None, stated: PixelSize | None, default: float,
                      given_name: str) -> PixelSizeChoice:
    """The size given (named ``given_name`` in messages), else the one the file states, else
    ``default``; a given size more than 2 % from the stated one is used and warned about, and so
    are stated pixels that are not square (their geometric mean is used)."""
    if given is not None:
        warnings = ()
        if stated is not None and abs(given - stated.um) > _DISAGREEMENT * stated.um:
            warnings = (f"{given_name}={given:g} but the image file states {stated.describe()}; "
                        f"sizes and areas use {given:g} µm",)
        return PixelSizeChoice(given, given_name, warnings)
    if stated is None:
        return PixelSizeChoice(default, "default")
    warnings = () if stated.square else (
        f"the image file's pixels are not square ({stated.describe()}); sizes and areas use "
        f"{stated.um:.4g} µm, the side of a square pixel of the same area",)
    return PixelSizeChoice(stated.um, f"file: {stated.source}", warnings)


def first_stated(sizes: list[tuple[str, PixelSize | None]]) -> tuple[PixelSize | None, list[str]]:
    """The first pixel size stated among images read together (named by their fields), and a
    warning for each later one more than 2 % from it."""
    stated = [(field, size) for field, size in sizes if size is not None]
    if not stated:
        return None, []
    (first_field, first), warnings = stated[0], []
    for field, size in stated[1:]:
        if abs(size.um - first.um) > _DISAGREEMENT * first.um:
            warnings.append(f"{field} states pixels of {size.describe()}, {first_field} "
                            f"{first.describe()}; the first is used")
    return first, warnings


def um_per_unit(unit: str) -> float | None:
    """Micrometres in one ``unit`` as OME or ImageJ name it (``micron``, ``um``, ``nm``, ``mm``,
    ...); None for a unit that is not a length (``pixel``, ``inch`` is left out on purpose)."""
    return _UNIT_UM.get(unit.strip().lower())


def tiff_pixel_size(tif: tifffile.TiffFile, series_index: int = 0) -> PixelSize | None:
    """The pixel size a TIFF states for its image ``series_index`` (see the module's docstring for
    where and in what order), or None where it states none that is usable."""
    if tif.is_ome and tif.ome_metadata:
        found = _ome_pixel_size(tif.ome_metadata, series_index)
        if found is not None:
            return found
    page = tif.series[series_index].keyframe if series_index < len(tif.series) else tif.pages.first
    if tif.is_imagej and tif.imagej_metadata:
        unit = um_per_unit(str(tif.imagej_metadata.get("unit", "")))
        if unit is not None:
            return _from_resolution(page, unit, "ImageJ calibration")
    if tif.is_svs:
        found = _aperio_pixel_size(str(tif.pages.first.description))
        if found is not None:
            return found
    if _tag_value(page, "ResolutionUnit") == _RESOLUTION_UNIT_CM:
        found = _from_resolution(page, _UNIT_UM["cm"], "TIFF resolution")
        if found is not None and max(found.x_um, found.y_um) <= PLAIN_TIFF_MAX_UM:
            return found
    return None


def _ome_pixel_size(xml: str, index: int) -> PixelSize | None:
    try:
        images = ElementTree.fromstring(xml).findall("{*}Image")
    except ElementTree.ParseError:
        return None
    pixels = images[index].find("{*}Pixels") if index < len(images) else None
    if pixels is None:
        return None
    sizes = []
    for axis in "XY":
        text = pixels.get(f"PhysicalSize{axis}")
        unit = um_per_unit(pixels.get(f"PhysicalSize{axis}Unit", "µm"))
        size = _number(text) if text is not None else None
        if size is None or unit is None:
            return None
        sizes.append(size * unit)
    return _checked(sizes[0], sizes[1], "OME PhysicalSizeX/Y")


def _aperio_pixel_size(description: str) -> PixelSize | None:
    """``MPP = 0.2527`` among the ``|``-separated fields of an Aperio SVS description."""
    match = _APERIO_MPP.search(description)
    size = _number(match.group(1)) if match else None
    return None if size is None else _checked(size, size, "Aperio MPP")


def _from_resolution(page: tifffile.TiffPage, um_per: float, source: str) -> PixelSize | None:
    """Sizes from XResolution / YResolution, pixels per unit of ``um_per`` micrometres."""
    sizes = []
    for tag in ("XResolution", "YResolution"):
        value = _tag_value(page, tag)
        try:
            per_unit = value[0] / value[1] if isinstance(value, tuple) else float(value)
        except (TypeError, ValueError, ZeroDivisionError, IndexError):
            return None
        if not math.isfinite(per_unit) or per_unit <= 0:
            return None
        sizes.append(um_per / per_unit)
    return _checked(sizes[0], sizes[1], source)


def _checked(x_um: float, y_um: float, source: str) -> PixelSize | None:
    low, high = PLAUSIBLE_UM
    if not all(math.isfinite(size) and low <= size <= high for size in (x_um, y_um)):
        return None
    return PixelSize(math.sqrt(x_um * y_um), source, x_um, y_um)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _tag_value(page: tifffile.TiffPage, name: str) -> object:
    tag = page.tags.get(name)
    return None if tag is None else tag.value
