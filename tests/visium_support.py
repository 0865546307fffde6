"""A Space Ranger output folder as Space Ranger writes it, for tests: positions, scale factors, images."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

HEADER = "barcode,in_tissue,array_row,array_col,pxl_row_in_fullres,pxl_col_in_fullres"


@dataclass(frozen=True)
class SpaceRangerRun:
    """What a test wrote and expects back."""

    run: Path
    outs: Path
    fullres: Path
    image: np.ndarray
    barcodes: list[str]
    in_tissue: np.ndarray
    centres: np.ndarray
    """(x, y) full-resolution pixels of every spot."""
    scalefactors: dict[str, float]


def write_spaceranger(root: Path, *, header: bool = True, image_in_outs: bool = False,
                      height: int = 480, width: int = 640) -> SpaceRangerRun:
    """A run folder ``root/sample-1`` with ``outs/spatial`` and a full-resolution TIFF.

    Spots lie on Visium's hexagonal grid (odd rows shifted by one column), 12 of
    them, the last three off the tissue; spot ``AAACCGTTCGTCCAGG-1`` is 10 pixels
    from the right border, so its patch reaches past the image. ``header=False``
    writes Space Ranger 1.x's headerless ``tissue_positions_list.csv``.
    """
    rng = np.random.default_rng(11)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    run = root / "sample-1"
    spatial = run / "outs" / "spatial"
    spatial.mkdir(parents=True)
    diameter = 89.47
    scalefactors = {
        "spot_diameter_fullres": diameter, "tissue_hires_scalef": 0.5,
        "fiducial_diameter_fullres": 144.5, "tissue_lowres_scalef": 1 / 7,
    }
    rows = []
    barcodes = [f"AAAC{code}-1" for code in (
        "AAGTATCTCCCA", "ACCGAACTCTCA", "ACGAGTCGTACT", "AGAGCGACTCCT", "AGCTTTCTGGGT",
        "ATAAGCCTACCA", "CACCTTGGTTTG", "CCGGAATCCATC", "CCGTTCGTCCAG", "CGAAGAGGCTTG",
        "CTCGTTTACGAA", "GAATGGATCAGA")]
    barcodes[8] = "AAACCGTTCGTCCAGG-1"
    for index, barcode in enumerate(barcodes):
        array_row, array_col = divmod(index, 4)
        array_col = 2 * array_col + array_row % 2
        pixel_row, pixel_col = 100 + 120 * array_row, 120 + 60 * array_col
        in_tissue = int(index < 9)
        rows.append([barcode, in_tissue, array_row, array_col, pixel_row, pixel_col])
    rows[8][4:6] = [300, width - 10]  # at the right border
    lines = [",".join(map(str, row)) for row in rows]
    name = "tissue_positions.csv" if header else "tissue_positions_list.csv"
    (spatial / name).write_text("\n".join([HEADER, *lines] if header else lines) + "\n")
    (spatial / "scalefactors_json.json").write_text(json.dumps(scalefactors))
    Image.fromarray(image[::2, ::2]).save(spatial / "tissue_hires_image.png")
    Image.fromarray(image[::7, ::7]).save(spatial / "tissue_lowres_image.png")
    fullres = (run / "outs" if image_in_outs else run) / "tissue_fullres.tif"
    tifffile.imwrite(fullres, image, photometric="rgb")
    centres = np.array([[row[5], row[4]] for row in rows], dtype=np.float64)
    return SpaceRangerRun(run, run / "outs", fullres, image, barcodes,
                          np.array([row[1] for row in rows], bool), centres, scalefactors)
