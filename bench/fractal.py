"""Time LabSight's gliding box against the strongest fair numpy gliding box, paired round by round.

Run from the repository root: ``python bench/fractal.py`` (a few minutes; ``--help`` for options,
``--big`` adds 2048² random RGB samples of P+Λ+N and percolation, about 30 s to minutes each).

The baseline is plain vectorised numpy that computes each offset's colour distance once and
reuses it for every box side (1,681 distance passes for r = 3..41, then one comparison per
side the offset lies in); its counts must equal LabSight's exactly, or the bench stops. It runs
on one process (numpy's element-wise operations use one thread) and on one process per core,
each taking every n-th offset, their mass maps added (since 2026-12-06; before, LabSight on
every core was compared with numpy on one). LabSight's numba kernels are timed on one
thread against the one process, and on every core against the processes. All sides run the
same number of rounds, in an order that rotates each round; figures are min / median / max.

Each side runs twice in its turn and the second call is timed (since 2026-12-07 ~20:00 UTC;
before, one call): on the sandboxed VMs these benches run on, the first touch of a page not
touched for a while costs hundreds of microseconds (bench/_paired.timed_twice), which a call of
a few milliseconds right after numpy's 0.1 s pays several times over and numpy's own call
hardly notices. The first calls are printed too, in brackets, with their ratios.
"""

from __future__ import annotations

import argparse
import bisect
import multiprocessing
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TypeVar

import numba
import numpy as np
from numba.core.registry import cpu_target

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._paired import load_text, paired_rounds, round_ratios, spread, timed_twice  # noqa: E402
from services.classifier.generated_cells import generate_cell_field  # noqa: E402
from services.features.fractal import gliding_box, percolation  # noqa: E402

SIDES = tuple(range(3, 42, 2))


def random_rgb(size: int, seed: int = 7) -> np.ndarray:
    """Uniform random RGB pixels: few pixels count in a box, the cheapest case for percolation."""
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def checkerboard(size: int, seed: int = 7) -> np.ndarray:
    """An RGB checkerboard of 8-pixel squares plus noise, like the seed's reference image."""
    rs = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    base = np.where(((xx // 8) + (yy // 8)) % 2 == 0, 60, 160)
    return (base[..., None] + rs.randint(0, 16, size=(size, size, 3)) + np.array([0, 10, 20])).astype(
        np.uint8
    )


def cell_field(size: int, seed: int = 7) -> np.ndarray:
    """The red, green and blue planes of a generated fluorescence field of cells (LabSight's
    classifier training generator): smooth cells on a dark background, like a micrograph."""
    field = generate_cell_field(seed, size=size, cells=max(4, (size // 48) ** 2), radius=(12.0, 20.0))
    return np.ascontiguousarray(field.image[..., :3])


IMAGES = {"random RGB": random_rgb, "checkerboard": checkerboard, "cell field": cell_field}


def numpy_mass_counts(image: np.ndarray, sides: tuple[int, ...]) -> list[np.ndarray]:
    """Box counts per mass, per side, in vectorised numpy sharing each offset's colour distance.

    Returns
    -------
    list of ndarray
        For each side r, the number of boxes with mass m = 1..r².
    """
    return mass_counts(numpy_masses(image, sides), sides)


def mass_counts(masses: list[np.ndarray], sides: tuple[int, ...]) -> list[np.ndarray]:
    """For each side r, the number of boxes with mass m = 1..r² in its mass map."""
    return [np.bincount(mass.ravel(), minlength=r * r + 1)[1:] for mass, r in zip(masses, sides, strict=True)]


def numpy_masses(image: np.ndarray, sides: tuple[int, ...], share: int = 0, shares: int = 1
                 ) -> list[np.ndarray]:
    """Each side's mass map (pixels within T(r) of each box centre) over the offsets
    ``share::shares`` of the largest box, in vectorised numpy.

    Every offset (dy, dx) is visited once: its chessboard colour distance max_c |q - c| is
    computed over the centres of the smallest side whose box holds the offset, then each side
    that holds it compares a slice of that same distance map with its threshold T(r) (r for
    uint8, 257 r for uint16) and adds the result to its mass map. The maps of all shares
    add up to the maps of all offsets.
    """
    height, width = image.shape[:2]
    wide = image.dtype == np.uint16
    signed = np.int32 if wide else np.int16  # room for the differences, no wider (memory traffic)
    planes = np.moveaxis(image.reshape(height, width, -1), 2, 0).astype(signed)
    scale = 257 if wide else 1
    halves = [(r - 1) // 2 for r in sides]
    masses = [np.zeros((height - 2 * h, width - 2 * h), np.int16) for h in halves]
    distance = np.empty((height, width), signed)
    channel = np.empty((height, width), signed)
    hit = np.empty((height, width), bool)
    reach = halves[-1]
    offsets = [(dy, dx) for dy in range(-reach, reach + 1) for dx in range(-reach, reach + 1)]
    for dy, dx in offsets[share::shares]:
        first = bisect.bisect_left(halves, max(abs(dy), abs(dx)))
        h0 = halves[first]
        rows, cols = height - 2 * h0, width - 2 * h0
        d, step = distance[:rows, :cols], channel[:rows, :cols]
        for index, plane in enumerate(planes):
            centre = plane[h0 : height - h0, h0 : width - h0]
            near = plane[h0 + dy : height - h0 + dy, h0 + dx : width - h0 + dx]
            np.subtract(near, centre, out=d if index == 0 else step)
            if index == 0:
                np.abs(d, out=d)
            else:
                np.abs(step, out=step)
                np.maximum(d, step, out=d)
        for j in range(first, len(sides)):
            inset = halves[j] - h0
            region = d[inset : rows - inset, inset : cols - inset]
            counted = hit[: region.shape[0], : region.shape[1]]
            np.less_equal(region, sides[j] * scale, out=counted)
            np.add(masses[j], counted, out=masses[j])
    return masses


_POOL_IMAGE: list[np.ndarray] = []
"""The image of a NumpyPool process (set by its initializer)."""


def _keep_image(image: np.ndarray) -> None:
    _POOL_IMAGE[:] = [image]


def _share_masses(share: int, shares: int) -> list[np.ndarray]:
    return numpy_masses(_POOL_IMAGE[0], SIDES, share, shares)


class NumpyPool:
    """The numpy baseline on ``processes`` processes (what a good engineer does with numpy on
    several cores): each computes the mass maps of every ``processes``-th offset of one image,
    and the maps are added here."""

    def __init__(self, image: np.ndarray, processes: int) -> None:
        self.processes = processes
        self.pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_keep_image, initargs=(image,))
        self.counts()  # start the processes and import numpy there, untimed

    def counts(self) -> list[np.ndarray]:
        """Box counts per mass, per side, of the pool's image."""
        parts = list(self.pool.map(_share_masses, range(self.processes), [self.processes] * self.processes))
        return mass_counts([np.sum(maps, axis=0, dtype=np.int16) for maps in zip(*parts, strict=True)], SIDES)

    def close(self) -> None:
        """Stop the processes."""
        self.pool.shutdown()


def check_equal(image: np.ndarray, pooled: NumpyPool) -> None:
    """Stop the bench unless LabSight's P(m, r) and the pooled baseline's counts equal the numpy
    baseline's counts exactly."""
    reference = numpy_mass_counts(image, SIDES)
    if not all(np.array_equal(a, b) for a, b in zip(reference, pooled.counts(), strict=True)):
        raise SystemExit("the numpy baseline on several processes disagrees with it on one")
    boxes = gliding_box(image, SIDES, backend="numba")
    size_y, size_x = image.shape[:2]
    for r, counts in zip(SIDES, reference, strict=True):
        total = (size_y - r + 1) * (size_x - r + 1)
        if counts.sum() != total or not np.array_equal(boxes.probability[r], counts / total):
            raise SystemExit(f"gliding_box disagrees with the numpy baseline at r = {r}")


T = TypeVar("T")


def with_threads(threads: int, run: Callable[[], T]) -> Callable[[], T]:
    """``run`` with numba's parallel kernels on ``threads`` threads for the duration of the call."""

    def call() -> T:
        numba.set_num_threads(threads)
        try:
            return run()
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)

    return call


def bench_image(name: str, image: np.ndarray, rounds: int, cores: int) -> None:
    """Paired rounds of the numpy baseline on 1 and ``cores`` processes and LabSight on 1 and
    ``cores`` threads; print them, each LabSight figure against numpy on as many cores."""
    pooled = NumpyPool(image, cores)
    try:
        check_equal(image, pooled)
        _bench_image(name, image, rounds, cores, pooled)
    finally:
        pooled.close()


def _bench_image(name: str, image: np.ndarray, rounds: int, cores: int, pooled: NumpyPool) -> None:
    calls = {
        "numpy": lambda: numpy_mass_counts(image, SIDES),
        "numpy-all": pooled.counts,
        "labsight-1": with_threads(1, lambda: gliding_box(image, SIDES, backend="numba")),
        "labsight-all": with_threads(cores, lambda: gliding_box(image, SIDES, backend="numba")),
        "percolation-1": with_threads(1, lambda: percolation(image, SIDES, backend="numba")),
        "percolation-all": with_threads(cores, lambda: percolation(image, SIDES, backend="numba")),
    }
    firsts: dict[str, list[float]] = {key: [] for key in calls}
    before = load_text()
    seconds = paired_rounds({key: timed_twice(call, firsts[key]) for key, call in calls.items()}, rounds)
    print(f"{name} {image.shape[0]}x{image.shape[1]} RGB uint8, r = 3..41: counts equal; "
          f"{rounds} rounds, seconds min / median / max of each side's second call in its turn "
          "[its first call, after the other sides ran]")
    print(f"  numpy shared-distance, 1 process:   {spread(seconds['numpy'])} s "
          f"[{spread(firsts['numpy'])}]")
    print(f"  numpy shared-distance, {cores} processes:  {spread(seconds['numpy-all'])} s "
          f"[{spread(firsts['numpy-all'])}]")
    for threads, key, baseline in ((1, "labsight-1", "numpy"), (cores, "labsight-all", "numpy-all")):
        ratios = round_ratios(seconds[baseline], seconds[key])
        cold = round_ratios(firsts[baseline], firsts[key])
        print(f"  LabSight P+Λ+N, numba {threads} thread(s): {spread(seconds[key], '.4f')} s   "
              f"speed-up over numpy on {threads} core(s) {spread(ratios, '.1f')}x "
              f"[{spread(firsts[key], '.4f')} s, {spread(cold, '.1f')}x]")
    for threads, key in ((1, "percolation-1"), (cores, "percolation-all")):
        print(f"  LabSight percolation, {threads} thread(s): {spread(seconds[key], '.3f')} s "
              f"[{spread(firsts[key], '.3f')}] (no baseline)")
    print(f"  before: {before}; after: {load_text()}")


def resident_mib(field: str) -> float:
    """VmRSS (now) or VmHWM (peak since the last reset) of this process, in MiB; Linux only."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def big_run(size: int, samples: int, threads: int, queue: multiprocessing.Queue) -> None:
    """In a fresh process, numba on ``threads`` threads: P+Λ+N and percolation of ``samples``
    random RGB size×size images (one seed each), and each one's resident-memory growth."""
    numba.set_num_threads(threads)
    warm = random_rgb(48)
    gliding_box(warm, backend="numba")
    percolation(warm, backend="numba")
    for sample in range(samples):
        image = random_rgb(size, seed=sample)
        Path("/proc/self/clear_refs").write_text("5")
        rss_before = resident_mib("VmRSS")
        start = time.perf_counter()
        gliding_box(image, SIDES, backend="numba")
        boxes_s = time.perf_counter() - start
        start = time.perf_counter()
        percolation(image, SIDES, backend="numba")
        percolation_s = time.perf_counter() - start
        queue.put((boxes_s, percolation_s, resident_mib("VmHWM") - rss_before, load_text()))


def bench_big(size: int, samples: int, threads: int) -> None:
    """Print the big-image figures measured by :func:`big_run` in a spawned process."""
    context = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue = context.Queue()
    child = context.Process(target=big_run, args=(size, samples, threads, queue))
    child.start()
    boxes, perc = [], []
    print(f"{size}x{size} random RGB, r = 3..41, numba on {threads} thread(s), fresh process, "
          f"{samples} samples (numpy baseline not run at this size):")
    for sample in range(samples):
        boxes_s, percolation_s, growth, load = queue.get()
        boxes.append(boxes_s)
        perc.append(percolation_s)
        print(f"  sample {sample + 1}: P+Λ+N {boxes_s:6.1f} s, percolation {percolation_s:6.1f} s, "
              f"peak memory +{growth:.0f} MiB; {load}")
    child.join()
    print(f"  P+Λ+N       min / median / max: {spread(boxes, '.1f')} s")
    print(f"  percolation min / median / max: {spread(perc, '.1f')} s")


def codegen_target() -> str:
    """The CPU numba compiles for and its vector width (labsight.numba_target)."""
    cpu, features = cpu_target.target_context.codegen().magic_tuple()[1:]
    wide = "+avx512f" in features.split(",")
    width = ("512-bit vectors (LLVM's 256-bit preference off)" if "-prefer-256-bit" in features
             else "LLVM's default vector width for it" if wide else "no AVX-512")
    return f"{cpu}, {width}"


def main() -> None:
    """Print the paired timings of every image, then the big-image samples if asked."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--size", type=int, default=128, help="side of the timed images (default 128)")
    parser.add_argument("--rounds", type=int, default=6, help="paired rounds per image (default 6)")
    parser.add_argument("--big", action="store_true", help="also time 2048² random RGB in a fresh process")
    parser.add_argument("--big-size", type=int, default=2048)
    parser.add_argument("--big-samples", type=int, default=3)
    parser.add_argument("--big-threads", type=int, default=0, help="numba threads of --big (default: all)")
    args = parser.parse_args()
    cores = numba.config.NUMBA_NUM_THREADS
    print(f"numba threads available: {cores}; numpy baseline: 1 process and {cores} processes; "
          f"{load_text()}")
    print("seed's Go gliding box: no timings recorded in /work/shared (SEED_FACTS.md, seeds/); "
          "no anchor quoted")
    warm = random_rgb(48)
    for threads in (1, cores):  # compile (or load the cache) and start the thread pool, untimed
        with_threads(threads, lambda: gliding_box(warm, backend="numba"))()
        with_threads(threads, lambda: percolation(warm, backend="numba"))()
    # On a busy machine a parallel call waits for its slowest thread to get a CPU: the layer says how.
    print(f"numba threading layer: {numba.threading_layer()}")
    print(f"numba target: {codegen_target()}")
    for name, make in IMAGES.items():
        bench_image(name, make(args.size), args.rounds, cores)
    if args.big:
        bench_big(args.big_size, args.big_samples, args.big_threads or cores)
    print(f"end: {load_text()}")


if __name__ == "__main__":
    main()
