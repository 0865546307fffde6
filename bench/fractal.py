"""Time LabSight's gliding box against a plain vectorised numpy re-statement, and its memory on a large image.

Run from the repository root: ``python bench/fractal.py`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.features.fractal import gliding_box, percolation  # noqa: E402

SIDES = tuple(range(3, 42, 2))


def test_image(size: int, seed: int = 7) -> np.ndarray:
    """An RGB checkerboard of 8-pixel squares plus noise, like the seed's reference image."""
    rs = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    base = np.where(((xx // 8) + (yy // 8)) % 2 == 0, 60, 160)
    return (base[..., None] + rs.randint(0, 16, size=(size, size, 3)) + np.array([0, 10, 20])).astype(
        np.uint8
    )


def numpy_mass_counts(image: np.ndarray, sides: tuple[int, ...]) -> list[np.ndarray]:
    """The definition in plain vectorised numpy: per side, one shifted comparison per offset."""
    height, width = image.shape[:2]
    pixels = np.moveaxis(image.reshape(height, width, -1).astype(np.int16), 2, 0)
    counts = []
    for r in sides:
        h = (r - 1) // 2
        centre = pixels[:, h : height - h, h : width - h]
        mass = np.zeros(centre.shape[1:], np.int32)
        for dy in range(-h, h + 1):
            for dx in range(-h, h + 1):
                shifted = pixels[:, h + dy : height - h + dy, h + dx : width - h + dx]
                mass += np.abs(shifted - centre).max(axis=0) <= r
        counts.append(np.bincount(mass.ravel(), minlength=r * r + 1)[1:])
    return counts


def best_of(repeats: int, run: Callable[[], object]) -> float:
    """Fastest wall time of ``repeats`` calls, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def resident_mib(field: str) -> float:
    """VmRSS (now) or VmHWM (peak since the last reset) of this process, in MiB; Linux only."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def large_image_run(size: int, queue: multiprocessing.Queue) -> None:
    """In a fresh process: time both features on a size×size image and measure their peak memory.

    Peak memory is the resident high-water mark, reset after the image is made (Linux's
    /proc/self/clear_refs), less the resident size then; numba's allocations are not traced by
    tracemalloc, so its figure covers numpy's arrays only.
    """
    warm = test_image(48)
    gliding_box(warm)
    percolation(warm)
    image = test_image(size)
    Path("/proc/self/clear_refs").write_text("5")
    rss_before = resident_mib("VmRSS")
    tracemalloc.start()
    start = time.perf_counter()
    gliding_box(image)
    boxes_s = time.perf_counter() - start
    start = time.perf_counter()
    percolation(image)
    percolation_s = time.perf_counter() - start
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    growth = resident_mib("VmHWM") - rss_before
    queue.put((boxes_s, percolation_s, growth, traced_peak / 2**20, image.nbytes / 2**20))


def main() -> None:
    """Print the timings and the speed-up."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=128, help="side of the timed RGB image (default 128)")
    parser.add_argument("--repeats", type=int, default=5, help="runs per timing; the best counts (default 5)")
    parser.add_argument("--large", type=int, default=2048, help="side of the memory-check image; 0 skips it")
    args = parser.parse_args()

    image = test_image(args.size)
    gliding_box(image)
    percolation(image)
    reference = numpy_mass_counts(image, SIDES)
    boxes = gliding_box(image)
    boxes_count = [(args.size - r + 1) ** 2 for r in SIDES]
    for r, n, counts in zip(SIDES, boxes_count, reference, strict=True):
        if not np.array_equal(boxes.probability[r], counts / n):
            raise SystemExit(f"gliding_box disagrees with the numpy re-statement at r = {r}")

    numpy_s = best_of(max(1, args.repeats // 2), lambda: numpy_mass_counts(image, SIDES))
    labsight_s = best_of(args.repeats, lambda: gliding_box(image))
    percolation_s = best_of(args.repeats, lambda: percolation(image))
    print(f"{args.size}x{args.size} RGB, r = 3..41 ({len(SIDES)} sides)")
    print(f"  P + Λ + N, numpy re-statement: {numpy_s:8.3f} s")
    print(f"  P + Λ + N, LabSight:           {labsight_s:8.3f} s   speed-up {numpy_s / labsight_s:6.1f}x")
    print(f"  percolation, LabSight:         {percolation_s:8.3f} s")

    if args.large:
        queue: multiprocessing.Queue = multiprocessing.get_context("spawn").Queue()
        child = multiprocessing.get_context("spawn").Process(target=large_image_run, args=(args.large, queue))
        child.start()
        boxes_s, perc_s, rss_mib, traced_mib, image_mib = queue.get()
        child.join()
        print(f"{args.large}x{args.large} RGB ({image_mib:.0f} MiB), r = 3..41, in a fresh process")
        print(f"  P + Λ + N:   {boxes_s:8.2f} s")
        print(f"  percolation: {perc_s:8.2f} s")
        print(f"  peak memory: +{rss_mib:.0f} MiB resident over the warmed-up process")
        print(f"               {traced_mib:.0f} MiB of numpy arrays traced")


if __name__ == "__main__":
    main()
