"""The cells table against scikit-image's regionprops_table measuring the same, paired.

Run from the repository root:

    python bench/cells_table.py [--side 2048] [--rounds 5]

A generated HPA-like field (``bench/segmentation.py``'s generator, uint16, 4 channels) is
segmented once with the classical method at two pixel sizes: HPA's 0.08 µm (a few dozen large
cells) and 0.4 µm (about 900 small ones). Then, every round, in rotating order
(``bench/_paired.py``):

- LabSight: ``measure_cells`` (services/segmentation/measure.py), the whole table: areas in
  px and µm², centroid, bounding box, the shapes of the cell and its nucleus (perimeter, form
  factor, second-moment axes, eccentricity, the cell's orientation), and per channel the mean,
  sum and standard deviation over the cell and the mean over its nucleus and over the rest
  of the cell;
- the baseline, what a good engineer would write with the field's library:
  ``skimage.measure.regionprops_table`` on the cell labels with the channels as intensity
  image (label, area, centroid, bbox, perimeter, major and minor axis, eccentricity,
  orientation, intensity mean and std), and on the nucleus labels (area, perimeter, axes,
  eccentricity, intensity mean), the sums from mean × area and the means outside the nucleus
  from the sums. It gives the same numbers (the
  unit tests hold ``measure_cells``' shapes equal to it); both run on one thread.

Printed: min/median/max seconds of each side, the baseline's over LabSight's round by round,
the load average, and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import numpy as np  # noqa: E402
from skimage.measure import regionprops_table  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from segmentation import hpa_like_image  # noqa: E402

from bench._paired import load_text, paired_rounds, round_ratios, spread, timed  # noqa: E402
from services.segmentation.cells import segment_cells  # noqa: E402
from services.segmentation.measure import measure_cells  # noqa: E402

CELL_PROPERTIES = ("label", "area", "centroid", "bbox", "perimeter", "major_axis_length",
                   "minor_axis_length", "eccentricity", "orientation", "intensity_mean",
                   "intensity_std")
NUCLEUS_PROPERTIES = ("label", "area", "perimeter", "major_axis_length", "minor_axis_length",
                      "eccentricity", "intensity_mean")


def regionprops_tables(nuclei: np.ndarray, cells: np.ndarray, channels: np.ndarray) -> int:
    """The baseline: both regionprops tables and the sums; the number of cells."""
    table = regionprops_table(cells, intensity_image=channels, properties=CELL_PROPERTIES)
    inside = regionprops_table(np.where(cells > 0, nuclei, 0), intensity_image=channels,
                               properties=NUCLEUS_PROPERTIES)
    # each cell's nucleus row (cells without one: none), for the mean outside the nucleus
    row = np.searchsorted(inside["label"], table["label"]).clip(max=max(len(inside["label"]) - 1, 0))
    has = inside["label"][row] == table["label"] if len(inside["label"]) else np.zeros(0, bool)
    nucleus_area = np.where(has, inside["area"][row], 0) if len(inside["label"]) else 0
    for channel in range(channels.shape[2]):
        sums = table[f"intensity_mean-{channel}"] * table["area"]
        nucleus_sums = (np.where(has, inside[f"intensity_mean-{channel}"][row] * nucleus_area, 0)
                        if len(inside["label"]) else 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            _ = (sums - nucleus_sums) / (table["area"] - nucleus_area)
    return len(table["label"])


def compare(side: int, pixel_size: float, rounds: int) -> dict[str, object]:
    """Segment the field at ``pixel_size`` once, then time both sides; print and return them."""
    image = hpa_like_image(side, pixel_size)
    nuclei, cells = segment_cells(image[..., 0], image[..., 3], image[..., 2],
                                  pixel_size_um=pixel_size, method="classical")
    count = len(measure_cells(nuclei, cells, image, pixel_size_um=pixel_size).labels)
    assert regionprops_tables(nuclei, cells, image) == count
    times = paired_rounds({
        "labsight": timed(lambda: measure_cells(nuclei, cells, image, pixel_size_um=pixel_size)),
        "regionprops": timed(lambda: regionprops_tables(nuclei, cells, image)),
    }, rounds)
    ratios = round_ratios(times["regionprops"], times["labsight"])
    print(f"{side}² at {pixel_size} µm, {count} cells: measure_cells "
          f"{spread(times['labsight'], '.3f', 's')}, regionprops_table "
          f"{spread(times['regionprops'], '.3f', 's')}; regionprops / LabSight "
          f"{spread(ratios, '.2f', '×')} ({load_text()})", flush=True)
    return {"cells": count, "labsight_s": times["labsight"], "regionprops_s": times["regionprops"],
            "median_ratio": statistics.median(ratios)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    summary: dict[str, object] = {"side": args.side}
    for pixel_size in (0.08, 0.4):
        summary[str(pixel_size)] = compare(args.side, pixel_size, args.rounds)
    summary["load"] = load_text()
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
