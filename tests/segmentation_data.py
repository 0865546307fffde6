"""mnfinder's annotated DAPI images as (image, nucleus labels) pairs, by split.

mnfinder (installed with --no-deps, so it is never imported: its ``__init__``
needs TensorFlow) ships grey nucleus images (``images/NAME.tif``, the raw 8- or
16-bit pixels) with instance masks (``nucleus_masks/NAME.png``: RGBA, one colour
per nucleus, alpha 0 = background) under ``training-data``, ``validation-data``
and ``test-data``. Tune on ``training`` only; ``test`` is held out.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from labsight.evaluate_cli import colour_labels

SPLITS = {"training": "training-data", "validation": "validation-data", "test": "test-data"}


@dataclass(frozen=True)
class AnnotatedImage:
    """One annotated image: ``name`` is ``dataset/stem``."""

    name: str
    image: np.ndarray
    labels: np.ndarray


def data_root() -> Path | None:
    """mnfinder's package folder, or None when it is not installed."""
    spec = importlib.util.find_spec("mnfinder")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def mask_paths(split: str) -> list[Path]:
    """The nucleus mask files of a split, sorted; empty when mnfinder is missing."""
    root = data_root()
    if root is None:
        return []
    return sorted((root / SPLITS[split]).glob("*/nucleus_masks/*.png"))


def load_split(split: str, limit: int | None = None) -> Iterator[AnnotatedImage]:
    """The split's annotated images, in name order (the first ``limit`` when given)."""
    for mask_path in mask_paths(split)[:limit]:
        folder = mask_path.parent.parent
        image = tifffile.imread(folder / "images" / f"{mask_path.stem}.tif")
        if image.ndim == 3:
            image = image[..., 0] if image.shape[-1] <= 4 else image[0]
        labels = colour_labels(np.asarray(Image.open(mask_path).convert("RGBA")))
        yield AnnotatedImage(f"{folder.name}/{mask_path.stem}", image, labels)


def training_pixel_size_um(diameter_um: float) -> float:
    """The one pixel size that makes the training nuclei's median diameter ``diameter_um``.

    mnfinder's images come from 20× and 40× objectives on several cameras and carry no
    calibration; the segmentation methods take sizes in µm, so the images are given this
    pixel size, found on the training split only (equivalent diameters 2·sqrt(area/π)).
    """
    areas = np.concatenate([np.bincount(item.labels.ravel())[1:] for item in load_split("training")])
    areas = areas[areas > 0]
    if areas.size == 0:
        raise LookupError("mnfinder's training images are not installed")
    return diameter_um / float(np.median(2.0 * np.sqrt(areas / np.pi)))


CELL_FOLDERS = ("Kc167", "macrophagocyte", "neurocyte", "style2")
"""scellseg's ``assets/contrast_data`` folders whose images have a nucleus channel."""


@dataclass(frozen=True)
class AnnotatedCells:
    """One image with cell instance masks: cytoplasm and nucleus channels, cell labels."""

    name: str
    cytoplasm: np.ndarray
    nuclei: np.ndarray
    labels: np.ndarray


def load_cell_folder(folder: str) -> list[AnnotatedCells]:
    """scellseg's annotated cell images of one folder (Cellpose's convention: green cytoplasm,
    red nuclei; ``NNN_img.png`` with ``NNN_masks.png`` 16-bit labels); empty when absent.

    scellseg is never imported (its ``__init__`` needs TensorFlow and PyQt5).
    """
    spec = importlib.util.find_spec("scellseg")
    if spec is None or not spec.submodule_search_locations:
        return []
    root = Path(next(iter(spec.submodule_search_locations))) / "assets" / "contrast_data" / folder
    found = []
    for mask_path in sorted(root.glob("*_masks.png")):
        image = np.asarray(Image.open(mask_path.with_name(mask_path.name.replace("_masks", "_img"))))
        labels = np.asarray(Image.open(mask_path)).astype(np.int32)
        found.append(AnnotatedCells(f"{folder}/{mask_path.stem[:-6]}", image[..., 1], image[..., 0],
                                    labels))
    return found
