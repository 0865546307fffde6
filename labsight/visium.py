"""A 10x Genomics Space Ranger output folder read as spots: barcodes, positions, scale factors, images."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

POSITION_FILES = ("tissue_positions.csv", "tissue_positions_list.csv")
"""Spot positions: Space Ranger >= 2.0 (with a header row), then 1.x (without)."""

POSITION_COLUMNS = (
    "barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres",
)
"""Columns of both position files, in order."""

SCALEFACTORS_FILE = "scalefactors_json.json"

TISSUE_IMAGES = {"hires": "tissue_hires_image.png", "lowres": "tissue_lowres_image.png"}
"""The downscaled images Space Ranger writes next to the positions, by scanpy's key."""

FULLRES_SUFFIXES = (".tif", ".tiff", ".btf", ".jpg", ".jpeg")
"""Suffixes of the full-resolution image looked for in the folder when none is named."""


@dataclass(frozen=True)
class VisiumSpots:
    """The spots of one Visium capture area, as Space Ranger wrote them.

    Attributes
    ----------
    library_id : str
        Name of the sample (the folder holding ``outs``, else the folder itself).
    barcodes : list of str
        Spot barcodes, in the positions file's order.
    in_tissue : ndarray of bool, shape (N,)
        Spots Space Ranger found under the tissue.
    array_rows, array_cols : ndarray of int64, shape (N,)
        Spot positions on the capture array's grid.
    centres : ndarray of float64, shape (N, 2)
        Spot centres as (x, y) = (pxl_col_in_fullres, pxl_row_in_fullres), in
        full-resolution pixels (scanpy's ``obsm["spatial"]``).
    scalefactors : dict
        ``scalefactors_json.json`` (``spot_diameter_fullres``, ``tissue_hires_scalef``, ...).
    images : dict of str to ndarray
        The ``hires`` and ``lowres`` tissue images that exist, as read from the PNGs.
    fullres_image : Path or None
        The full-resolution image the spots are placed on (not part of ``outs``).
    """

    library_id: str
    barcodes: list[str]
    in_tissue: np.ndarray
    array_rows: np.ndarray
    array_cols: np.ndarray
    centres: np.ndarray
    scalefactors: dict[str, float]
    images: dict[str, np.ndarray] = field(default_factory=dict)
    fullres_image: Path | None = None

    @property
    def spot_diameter(self) -> float:
        """Spot diameter in full-resolution pixels."""
        return float(self.scalefactors["spot_diameter_fullres"])

    def tissue_spots(self) -> VisiumSpots:
        """Only the spots under the tissue."""
        keep = np.flatnonzero(self.in_tissue)
        return VisiumSpots(
            self.library_id, [self.barcodes[i] for i in keep], self.in_tissue[keep],
            self.array_rows[keep], self.array_cols[keep], self.centres[keep],
            self.scalefactors, self.images, self.fullres_image,
        )


def read_spaceranger(folder: Path, fullres_image: Path | None = None) -> VisiumSpots:
    """Read the spots of a Space Ranger output folder.

    Parameters
    ----------
    folder : Path
        Space Ranger's ``outs`` folder (holding ``spatial/``), or the run folder above it.
    fullres_image : Path, optional
        The full-resolution image given to Space Ranger (see ``find_fullres_image``).

    Returns
    -------
    VisiumSpots
        Every spot of the positions file; ``tissue_spots()`` keeps those under the tissue.

    Raises
    ------
    ValueError
        Naming the file that is missing or malformed and what was expected.

    Notes
    -----
    ``tissue_positions.csv`` (Space Ranger >= 2.0) starts with a header row;
    ``tissue_positions_list.csv`` (1.x) has none. Both have the columns of
    ``POSITION_COLUMNS``; the header, when present, decides their order.
    """
    outs = _outs(folder)
    spatial = outs / "spatial"
    if not spatial.is_dir():
        raise ValueError(f"--visium {folder}: no spatial/ folder (expected Space Ranger's outs/)")
    positions = next((spatial / name for name in POSITION_FILES if (spatial / name).is_file()), None)
    if positions is None:
        raise ValueError(f"--visium {folder}: spatial/ holds neither of {list(POSITION_FILES)}")
    barcodes, in_tissue, grid, pixels = _read_positions(positions)
    scalefactors = _read_scalefactors(spatial / SCALEFACTORS_FILE)
    images = {key: _read_png(spatial / name) for key, name in TISSUE_IMAGES.items()
              if (spatial / name).is_file()}
    library_id = outs.parent.name if outs.name == "outs" else outs.name
    return VisiumSpots(
        library_id, barcodes, in_tissue, grid[:, 0], grid[:, 1], pixels[:, ::-1].copy(),
        scalefactors, images, fullres_image,
    )


def find_fullres_image(folder: Path) -> Path | None:
    """The only .tif/.tiff/.btf/.jpg/.jpeg file in ``folder`` or its ``outs``; None for none.

    Space Ranger does not copy the full-resolution image into ``outs``, so this
    finds it only where the user put it next to the output.

    Raises
    ------
    ValueError
        If there are several, naming them.
    """
    found = sorted({path for where in (folder, _outs(folder)) if where.is_dir()
                    for path in where.iterdir()
                    if path.is_file() and path.suffix.lower() in FULLRES_SUFFIXES})
    if len(found) > 1:
        raise ValueError(f"--visium {folder}: several full-resolution image candidates "
                         f"{[path.name for path in found[:5]]}; name one with --image")
    return found[0] if found else None


def _outs(folder: Path) -> Path:
    """Space Ranger's ``outs`` folder: ``folder`` itself, or its ``outs`` sub-folder."""
    if not (folder / "spatial").is_dir() and (folder / "outs").is_dir():
        return folder / "outs"
    return folder


def _read_positions(path: Path) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Barcodes, in-tissue flags, (row, col) grid and (row, col) full-res pixels of a positions file."""
    with path.open(newline="") as handle:
        rows = [row for row in csv.reader(handle) if row]
    if not rows:
        raise ValueError(f"{path}: no spots")
    order = list(range(len(POSITION_COLUMNS)))
    if "barcode" in (name.strip().lower() for name in rows[0]):
        header = [name.strip().lower() for name in rows.pop(0)]
        missing = [name for name in POSITION_COLUMNS if name not in header]
        if missing:
            raise ValueError(f"{path}: header lacks columns {missing}; has {header}")
        order = [header.index(name) for name in POSITION_COLUMNS]
    try:
        barcodes = [row[order[0]].strip() for row in rows]
        numbers = np.array([[float(row[i]) for i in order[1:]] for row in rows], dtype=np.float64)
    except (IndexError, ValueError) as error:
        raise ValueError(f"{path}: expected the columns {list(POSITION_COLUMNS)} on every row "
                         f"({error})") from None
    if not np.all(np.isfinite(numbers)):
        raise ValueError(f"{path}: positions must be finite numbers")
    return barcodes, numbers[:, 0] != 0, numbers[:, 1:3].astype(np.int64), numbers[:, 3:5]


def _read_scalefactors(path: Path) -> dict[str, float]:
    """The scale factors, with ``spot_diameter_fullres`` checked."""
    if not path.is_file():
        raise ValueError(f"{path}: missing (Space Ranger writes the spot diameter there)")
    try:
        factors = json.loads(path.read_text())
        diameter = float(factors["spot_diameter_fullres"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: expected JSON with spot_diameter_fullres ({error!r})") from None
    if not np.isfinite(diameter) or diameter <= 0:
        raise ValueError(f"{path}: spot_diameter_fullres must be > 0, got {diameter}")
    return factors


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image)


def spatial_uns(spots: VisiumSpots) -> dict[str, dict[str, object]]:
    """``uns["spatial"]`` as scanpy's ``read_visium`` lays it out: per library the tissue
    images, the scale factors and metadata (here the full-resolution image's path)."""
    metadata = {"source_image_path": str(spots.fullres_image)} if spots.fullres_image else {}
    return {spots.library_id: {
        "images": dict(spots.images), "scalefactors": dict(spots.scalefactors), "metadata": metadata,
    }}
