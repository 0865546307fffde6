"""Nucleus segmentation quality on mnfinder's annotated DAPI images, per method and split.

Run from the repository root (mnfinder installed, see requirements/test-data.txt):

    python bench/segmentation_quality.py [--split training validation test] [--limit N]

Every method of ``services.segmentation.cells.NUCLEUS_METHODS`` and a plain
scikit-image baseline (a Gaussian of 2 pixels, Otsu's threshold, local
maxima of the distance transform at least a nucleus radius apart, watershed;
no hole filling, no size limits; without the Gaussian its ragged masks split
into fragments and it scores 0.22 on training) segment each image. The images carry no pixel
size: all are given the one that makes the training nuclei's median diameter
the classical method's typical diameter (found on the training split only;
the test split is never tuned on). Printed per method and split: pooled AP at
IoU 0.5/0.7/0.9 (every nucleus counts the same), the mean over images of
AP@0.5 (the DSB-2018 way), F1, mean matched IoU, splits and merges, seconds.

Then whole cells (``--cells``, on by default): ``segment_cells`` by each method
of ``CELL_METHODS`` on scellseg's annotated images that have a nucleus channel
(green cytoplasm as the microtubules, no ER, red nuclei), per folder. Those
images carry no pixel size either and have no training split: each folder is
given the one that makes its median cell 30 µm across, the only thing fitted
to them (nothing was tuned on them). Then generated nuclei with known truth
(``GENERATED_SCENES``: touching twins, uneven light, noise, 8- and 16-bit). Then one JSON line.

``--figure PATH`` also draws, for the README, crops of three test images with
the true outlines (green) and the default method's (magenta): a dense
U2OS field, HFF nuclei, and MCC13 where it fails (its haze is taken in).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import threshold_otsu
from skimage.segmentation import watershed

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from labsight.segmentation_metrics import pool_scores, score_segmentation  # noqa: E402
from services.segmentation.cells import (  # noqa: E402
    CELL_METHODS,
    DEFAULT_METHOD,
    NUCLEUS_METHODS,
    segment_cells,
    segment_nuclei,
)
from services.segmentation.classical import NucleusSettings  # noqa: E402
from services.segmentation.hpa_method import hpa_available  # noqa: E402
from tests.segmentation_data import (  # noqa: E402
    CELL_FOLDERS,
    SPLITS,
    load_cell_folder,
    load_split,
    training_pixel_size_um,
)

BASELINE = "otsu+watershed"
CELL_DIAMETER_UM = 30.0
HEADER = (f"{'method':16s} {'split':14s} {'images':>6s} {'objects':>7s} {'AP50':>6s} {'AP70':>6s} "
          f"{'AP90':>6s} {'img AP50':>8s} {'F1':>6s} {'mIoU':>6s} {'split':>5s} {'merge':>5s} "
          f"{'s':>6s}")
BASELINE_SIGMA_PX = 2.0


def otsu_watershed(image: np.ndarray, radius_px: float) -> np.ndarray:
    """The plain baseline: Gaussian, Otsu, distance-transform maxima ``radius_px`` apart, watershed."""
    pixels = ndi.gaussian_filter(np.asarray(image, dtype=np.float32), BASELINE_SIGMA_PX)
    if float(pixels.max()) <= float(pixels.min()):
        return np.zeros(pixels.shape, np.int32)
    mask = pixels > threshold_otsu(pixels)
    distance = ndi.distance_transform_edt(mask)
    components, _ = ndi.label(mask)
    peaks = peak_local_max(distance, min_distance=max(1, round(radius_px)), labels=components,
                           exclude_border=False)
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-distance, markers, mask=mask).astype(np.int32)


def methods(pixel_size_um: float) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Every nucleus method at that pixel size, and the baseline at the same nucleus radius."""
    found: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        name: (lambda image, name=name: segment_nuclei(image, pixel_size_um=pixel_size_um,
                                                        method=name))
        for name in NUCLEUS_METHODS if name != "hpa" or hpa_available()
    }
    radius_px = NucleusSettings().diameter_um / pixel_size_um / 2
    found[BASELINE] = lambda image: otsu_watershed(image, radius_px)
    return found


def score_rows(name: str, split: str, pairs: list[tuple[np.ndarray, np.ndarray]],
               seconds: float) -> dict:
    """Print one table row of (prediction, truth) pairs and return it as a dict."""
    scores = [score_segmentation(pred, truth) for pred, truth in pairs]
    pooled = pool_scores(scores)
    per_image = float(np.mean([s.average_precision(0.5) for s in scores]))
    row = {"method": name, "split": split, "images": len(pairs), **pooled.as_dict(),
           "image_ap50": per_image, "seconds": seconds}
    print(f"{name:16s} {split:14s} {len(pairs):6d} {pooled.n_true:7d} {row['ap50']:6.3f} "
          f"{row['ap70']:6.3f} {row['ap90']:6.3f} {per_image:8.3f} {row['f1']:6.3f} "
          f"{row['mean_iou']:6.3f} {row['splits']:5d} {row['merges']:5d} {seconds:6.1f}", flush=True)
    return row


def nucleus_rows(splits: list[str], limit: int | None) -> tuple[float, list[dict]]:
    pixel_size_um = training_pixel_size_um(NucleusSettings().diameter_um)
    print(f"nuclei (mnfinder): pixel size {pixel_size_um:.4f} µm (median training nucleus "
          f"{NucleusSettings().diameter_um:g} µm across)")
    print(HEADER)
    rows = []
    for split in splits:
        data = list(load_split(split, limit))
        for name, segment in methods(pixel_size_um).items():
            started = time.perf_counter()
            predicted = [segment(item.image) for item in data]
            seconds = time.perf_counter() - started
            rows.append(score_rows(name, split, [(p, item.labels) for p, item in
                                                 zip(predicted, data, strict=True)], seconds))
    return pixel_size_um, rows


def cell_rows() -> list[dict]:
    print("cells (scellseg contrast_data, green cytoplasm + red nuclei):")
    print(HEADER)
    rows = []
    for folder in CELL_FOLDERS:
        data = load_cell_folder(folder)
        if not data:
            continue
        areas = np.concatenate([np.bincount(item.labels.ravel())[1:] for item in data])
        diameter_px = float(np.median(2 * np.sqrt(areas[areas > 0] / np.pi)))
        pixel_size_um = CELL_DIAMETER_UM / diameter_px
        for name in CELL_METHODS:
            if name == "hpa" and not hpa_available():
                continue
            started = time.perf_counter()
            predicted = [segment_cells(item.cytoplasm, np.zeros_like(item.cytoplasm), item.nuclei,
                                       pixel_size_um=pixel_size_um, method=name)[1]
                         for item in data]
            seconds = time.perf_counter() - started
            row = score_rows(name, folder, [(p, item.labels) for p, item in
                                            zip(predicted, data, strict=True)], seconds)
            rows.append({**row, "pixel_size_um": pixel_size_um})
    return rows


FIGURE_CROPS = (
    ("2022-10-14_U2OS/4", "U2OS H2B 20x", (200, 456), (300, 556)),
    ("2023-05-31_misc/HFF-revt-01_s19", "HFF DAPI 40x", (128, 384), (128, 384)),
    ("2023-05-31_misc/MCC13_rfpcyto_w1cDAPI_s45", "MCC13 DAPI 40x", (128, 384), (128, 384)),
)
"""(image name, title, rows, columns) of each figure panel: test images, chosen to show the
successes and the failure, not to flatter."""


GENERATED_SCENES = (
    (1, {}, np.uint8), (2, {}, np.uint16), (3, {"uneven": 0.7, "noise": 0.06}, np.uint16),
    (7, {}, np.uint8), (8, {"uneven": 0.5}, np.uint16), (9, {"noise": 0.08}, np.uint8),
)
"""(seed, scene options, dtype) of the generated 300x300 nucleus images with known truth: touching
twins, uneven brightness, noise, 8- and 16-bit (the generator of the classical method's tests)."""


def generated_rows() -> list[dict]:
    """Every nucleus method on the generated scenes of ``GENERATED_SCENES``, pooled."""
    from tests.unit.test_classical_segmentation import PIXEL_UM, _as, _scene

    scenes = []
    for seed, options, dtype in GENERATED_SCENES:
        stain, truth, _ = _scene((300, 300), seed, **options)
        scenes.append((_as(dtype, stain), truth))
    rows = []
    for name, segment in methods(PIXEL_UM).items():
        started = time.perf_counter()
        predicted = [segment(image) for image, _ in scenes]
        seconds = time.perf_counter() - started
        rows.append(score_rows(name, "generated", [(p, truth) for p, (_, truth) in
                                                   zip(predicted, scenes, strict=True)], seconds))
    return rows


def draw_figure(path: Path, pixel_size_um: float) -> None:
    """Write the panels of ``FIGURE_CROPS`` side by side as one PNG."""
    from PIL import Image, ImageDraw
    from skimage.segmentation import find_boundaries

    wanted = {name: (title, rows, cols) for name, title, rows, cols in FIGURE_CROPS}
    panels = []
    for item in load_split("test"):
        if item.name not in wanted:
            continue
        predicted = segment_nuclei(item.image, pixel_size_um=pixel_size_um)
        ap50 = score_segmentation(predicted, item.labels, [0.5]).average_precision(0.5)
        title, (r0, r1), (c0, c1) = wanted[item.name]
        grey = item.image[r0:r1, c0:c1].astype(np.float64)
        low, high = np.percentile(grey, [1, 99.5])
        grey = np.clip((grey - low) / max(high - low, 1e-9), 0, 1) * 255
        rgb = np.repeat(grey[..., None], 3, axis=-1).astype(np.uint8)
        rgb[find_boundaries(item.labels[r0:r1, c0:c1], mode="inner")] = (0, 230, 0)
        rgb[find_boundaries(predicted[r0:r1, c0:c1], mode="inner")] = (255, 0, 255)
        panel = Image.fromarray(rgb)
        ImageDraw.Draw(panel).text((4, 4), f"{title}: {DEFAULT_METHOD} AP50 {ap50:.2f} (whole image)",
                                   fill=(255, 255, 0))
        panels.append(panel)
    canvas = Image.new("RGB", (sum(p.width for p in panels) + 4 * (len(panels) - 1),
                               max(p.height for p in panels)), (255, 255, 255))
    left = 0
    for panel in panels:
        canvas.paste(panel, (left, 0))
        left += panel.width + 4
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    print(f"figure: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", nargs="+", choices=list(SPLITS), default=list(SPLITS))
    parser.add_argument("--limit", type=int, default=None, help="first N images of each split")
    parser.add_argument("--no-cells", dest="cells", action="store_false",
                        help="skip the whole-cell images")
    parser.add_argument("--figure", type=Path, default=None, metavar="PNG",
                        help="also draw test crops with true and predicted outlines")
    args = parser.parse_args()
    pixel_size_um, nuclei = nucleus_rows(args.split, args.limit)
    if args.figure is not None:
        draw_figure(args.figure, pixel_size_um)
    cells = cell_rows() if args.cells else []
    generated = generated_rows()
    print(json.dumps({"pixel_size_um": pixel_size_um, "nuclei": nuclei, "cells": cells,
                      "generated": generated}))


if __name__ == "__main__":
    main()
