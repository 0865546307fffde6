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
watershed; nuclei only, so it does less than the cell methods) at the classical
method's working scale: the blue channel shrunk as ``classical_nuclei`` shrinks it
(``NucleusSettings.working_diameter_px``, area average), segmented there with the nucleus
radius in working pixels, and its labels enlarged back to the input size, all timed.
Every round runs every contender once, through ``bench/_paired.py``'s ``paired_rounds``
(the order rotating from round to round); printed: min/median/max seconds and megapixels
per second, each method's seconds over the baseline's round by round (min/median/max; the
methods also grow cells), the load average, and one JSON line. Until 2026-12-06 the
contenders ran in one fixed order each round and the baseline at full resolution while the
classical method worked shrunk, so at 0.08 µm their times were not comparable. The flow
networks run in ONNX Runtime with one thread and one instance; the ``hpa`` method only where
its networks are installed. Target: classical ≤ 10 s for 2048² on one core.
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
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from segmentation_quality import otsu_watershed  # noqa: E402

from bench._paired import paired_rounds, round_ratios, spread, timed  # noqa: E402
from services.segmentation.cells import CELL_METHODS, segment_cells  # noqa: E402
from services.segmentation.classical import NucleusSettings, _resample, _shrink  # noqa: E402
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


BASELINE = "otsu+watershed (nuclei)"


def working_scale(pixel_size_um: float) -> float:
    """The factor ``classical_nuclei`` shrinks an image by (1: not shrunk) at that pixel size,
    with its default settings."""
    settings = NucleusSettings()
    return min(1.0, settings.working_diameter_px / (settings.diameter_um / pixel_size_um))


def baseline_at_working_scale(nuclei: np.ndarray, pixel_size_um: float) -> np.ndarray:
    """Otsu + watershed nucleus labels at the classical method's working scale, at input size."""
    scale = working_scale(pixel_size_um)
    pixels = np.asarray(nuclei, dtype=np.float32)
    if scale < 1.0:
        pixels = _shrink(pixels, scale)
    labels = otsu_watershed(pixels, NUCLEUS_UM / pixel_size_um * scale / 2)
    return _resample(labels, nuclei.shape) if scale < 1.0 else labels


def contenders(image: np.ndarray, pixel_size_um: float) -> dict[str, Callable[[], int]]:
    """Each method's call on the image, returning the number of cells it found."""
    red, blue, yellow = image[..., 0], image[..., 2], image[..., 3]

    def cells(method: str) -> Callable[[], int]:
        return lambda: int(segment_cells(red, yellow, blue, pixel_size_um=pixel_size_um,
                                         method=method)[1].max())

    found = {name: cells(name) for name in CELL_METHODS if name != "hpa" or hpa_available()}
    found[BASELINE] = lambda: int(baseline_at_working_scale(blue, pixel_size_um).max())
    return found


def baseline_ratios(times: dict[str, list[float]]) -> dict[str, list[float]]:
    """Each method's seconds over the baseline's, round by round."""
    return {name: round_ratios(seconds, times[BASELINE])
            for name, seconds in times.items() if name != BASELINE}


def print_ratios(ratios: dict[str, list[float]], pixel_size_um: float) -> None:
    """Print each method's min / median / max of its seconds over the baseline's."""
    for name, values in ratios.items():
        print(f"{pixel_size_um:5.2f} µm  {name:26s} seconds / baseline's, min / median / max "
              f"{spread(values, '.2f')} (it also grows cells; the baseline only nuclei)", flush=True)


def main() -> None:
    """Time every contender in paired rounds at each pixel size; print the table and a JSON line."""
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
        times = paired_rounds({name: timed(call) for name, call in calls.items()}, args.rounds)
        scale = working_scale(pixel_size_um)
        print(f"{pixel_size_um:5.2f} µm  working scale {scale:.3f} (classical nuclei and the "
              f"baseline), {args.rounds} paired rounds in rotating order", flush=True)
        ratios = baseline_ratios(times)
        for name, seconds in times.items():
            median = statistics.median(seconds)
            row = {"method": name, "pixel_size_um": pixel_size_um, "side": args.side,
                   "working_scale": scale if name in (BASELINE, "classical") else None,
                   "objects": counts[name], "min_s": min(seconds), "median_s": median,
                   "max_s": max(seconds), "megapixels_per_s": pixels / median / 1e6,
                   "seconds_over_baseline": ratios.get(name)}
            results.append(row)
            print(f"{pixel_size_um:5.2f} µm  {name:26s} {counts[name]:5d} objects  "
                  f"min {min(seconds):6.2f}  median {median:6.2f}  max {max(seconds):6.2f} s  "
                  f"{row['megapixels_per_s']:6.2f} Mpx/s", flush=True)
        print_ratios(ratios, pixel_size_um)
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
    print(json.dumps({"rounds": args.rounds, "load_average": load, "results": results}))


if __name__ == "__main__":
    main()
