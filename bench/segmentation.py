"""Cell segmentation speed: pixels per second of each method on a 2048×2048 4-channel image.

Run from the repository root:

    python bench/segmentation.py [--side 2048] [--rounds 5]

A generated HPA-like image (red microtubules, green, blue nuclei, yellow ER;
uint16; nuclei about 12 µm across, cells about 30 µm) is segmented by
``segment_cells`` with each method of ``CELL_METHODS``, on one thread, at
two pixel sizes: HPA's 0.08 µm (the classical method works at a shrunk scale
where a nucleus spans ~32 px) and 0.4 µm (nuclei ~30 px: no shrinking, every
pixel processed). Beside it, in the same process, the plain scikit-image
baseline of ``bench/segmentation_quality.py`` (Gaussian, Otsu, distance
watershed, nuclei only, full resolution). Each round runs every contender
once, back to back; printed: min/median/max seconds and megapixels per
second, the load average, and one JSON line. The flow networks run in ONNX Runtime with
one thread and one instance; the ``hpa`` method only where its networks are installed.
Target: classical ≤ 10 s for 2048² on one core.
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")
os.environ.setdefault("LABSIGHT_ORT_THREADS", "1")  # the flow networks on one core too
os.environ.setdefault("LABSIGHT_MODEL_INSTANCES", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from segmentation_quality import otsu_watershed  # noqa: E402

from services.segmentation.cells import CELL_METHODS, segment_cells  # noqa: E402
from services.segmentation.hpa_method import hpa_available  # noqa: E402

cv2.setNumThreads(1)

PIXEL_SIZES_UM = (0.08, 0.4)
NUCLEUS_UM = 12.0
CELL_UM = 30.0


def hpa_like_image(side: int, pixel_size_um: float, seed: int = 0) -> np.ndarray:
    """(side, side, 4) uint16 channels red, green, blue, yellow of packed cells."""
    rng = np.random.default_rng(seed)
    nucleus_px = NUCLEUS_UM / pixel_size_um
    cell_px = CELL_UM / pixel_size_um
    blue = np.zeros((side, side), np.float32)
    cytoplasm = np.zeros((side, side), np.float32)
    step = cell_px * 0.9
    for r in np.arange(step / 2, side, step):
        for c in np.arange(step / 2, side, step):
            centre = (int(c + rng.normal(0, step / 8)), int(r + rng.normal(0, step / 8)))
            half = nucleus_px / 2 * rng.uniform(0.8, 1.1)
            axes = (max(1, int(half)), max(1, int(half * rng.uniform(0.7, 1.0))))
            angle = float(rng.uniform(0, 180))
            cell_axes = (max(1, int(cell_px / 2)), max(1, int(cell_px / 2 * 0.8)))
            cv2.ellipse(cytoplasm, centre, cell_axes, angle, 0, 360, float(rng.uniform(0.3, 0.7)), -1)
            cv2.ellipse(blue, centre, axes, angle, 0, 360, float(rng.uniform(0.4, 1.0)), -1)
    sigma = max(0.5, 0.3 / pixel_size_um)
    channels = []
    for signal in (cytoplasm, cytoplasm * 0.5, blue, cytoplasm * 0.8):
        blurred = cv2.GaussianBlur(signal, (0, 0), sigma) + rng.normal(0.03, 0.01, signal.shape)
        channels.append(np.clip(blurred, 0, 1))
    return np.round(np.stack(channels, axis=-1) * 65535).astype(np.uint16)


def contenders(image: np.ndarray, pixel_size_um: float) -> dict[str, Callable[[], int]]:
    """Each method's call on the image, returning the number of cells it found."""
    red, blue, yellow = image[..., 0], image[..., 2], image[..., 3]

    def cells(method: str) -> Callable[[], int]:
        return lambda: int(segment_cells(red, yellow, blue, pixel_size_um=pixel_size_um,
                                         method=method)[1].max())

    found = {name: cells(name) for name in CELL_METHODS if name != "hpa" or hpa_available()}
    radius_px = NUCLEUS_UM / pixel_size_um / 2
    found["otsu+watershed (nuclei)"] = lambda: int(otsu_watershed(blue, radius_px).max())
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    pixels = args.side * args.side
    results = []
    for pixel_size_um in PIXEL_SIZES_UM:
        image = hpa_like_image(args.side, pixel_size_um)
        calls = contenders(image, pixel_size_um)
        counts = {name: call() for name, call in calls.items()}  # warm-up, untimed
        times: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(args.rounds):
            for name, call in calls.items():
                started = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - started)
        for name, seconds in times.items():
            median = statistics.median(seconds)
            row = {"method": name, "pixel_size_um": pixel_size_um, "side": args.side,
                   "objects": counts[name], "min_s": min(seconds), "median_s": median,
                   "max_s": max(seconds), "megapixels_per_s": pixels / median / 1e6}
            results.append(row)
            print(f"{pixel_size_um:5.2f} µm  {name:26s} {counts[name]:5d} objects  "
                  f"min {min(seconds):6.2f}  median {median:6.2f}  max {max(seconds):6.2f} s  "
                  f"{row['megapixels_per_s']:6.2f} Mpx/s", flush=True)
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
    print(json.dumps({"rounds": args.rounds, "load_average": load, "results": results}))


if __name__ == "__main__":
    main()
