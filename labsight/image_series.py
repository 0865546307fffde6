"""The images a TIFF file holds, from its header: what the ``series`` read option chooses among.

An OME-TIFF of a plate or tile scan keeps each position (well, field) as an image of its own,
and tifffile reads each as a series. Whole-slide formats keep thumbnails, labels and macro
pictures as further series: they hold one image. Only tifffile is needed here (the light
client's ``[tiff]`` extra), so ``labsight submit --each-series`` can count images without
numpy's image stack.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["MULTI_IMAGE_KINDS", "axis_length", "image_count", "series_names"]

MULTI_IMAGE_KINDS = ("ome", "imagej", "shaped", "uniform", "generic")
"""tifffile series kinds whose further series are further images (positions), not auxiliary
pictures of one slide."""


def image_count(tif: Any) -> int:
    """How many images an open ``tifffile.TiffFile`` holds (1 for a whole slide and its pictures)."""
    return len(tif.series) if tif.series[0].kind in MULTI_IMAGE_KINDS else 1


def series_names(path: Path) -> list[str]:
    """A name for each image of the TIFF at ``path``, in series order: the OME image names where
    every image has a distinct one, else their indices ('0', '1', ...). One image: ``['']``.
    Raises ValueError (or OSError) where tifffile cannot read the header."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        count = image_count(tif)
        if count == 1:
            return [""]
        names = [str(series.name or "").strip() for series in tif.series[:count]]
    if all(names) and len(set(names)) == count:
        return names
    return [str(index) for index in range(count)]


def axis_length(path: Path, axis: str, series: int = 0) -> int:
    """The length of stack axis ``axis`` (a tifffile axis code such as T or Z, any case) of image
    ``series`` of the TIFF at ``path``. Raises ValueError naming the axes the image has where it
    has no such axis (or OSError where the file cannot be read)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if series >= image_count(tif):
            raise ValueError(f"it holds {image_count(tif)} image(s), not image {series}")
        chosen = tif.series[series]
        axes, shape = chosen.axes, chosen.shape
    letter = axis.upper()
    if letter in ("Y", "X", "C", "S") or letter not in axes:
        raise ValueError(f"its axes are {axes} {list(shape)}; no stack axis {letter}")
    return int(shape[axes.index(letter)])
