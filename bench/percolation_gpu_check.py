"""GPU check of percolation: the torch path on CUDA against the numba CPU path, same numbers, timed.

Run from the repository root on a machine with a CUDA GPU, PyTorch and numba (about a minute):

    python bench/percolation_gpu_check.py [--size 2048] [--runs 2]

A random RGB image (seed 2048) of ``--size``² pixels, box sides r = 3, 5, ..., 41. The CPU side
runs first (numba, every core; its compile is excluded by a warm-up on a small image), then the
torch path on CUDA ``--runs`` times after a warm-up; each figure is wall-clock seconds with the
GPU synchronised. The results must be equal element for element, as the issue asks; the script
exits 1 if they are not, or if no GPU is visible.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.features.fractal import percolation  # noqa: E402


def main() -> int:
    """Time both paths, print the figures and whether the results are equal; 0 when they are."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    import numba
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device visible: nothing to check")
        return 1
    print(f"GPU {torch.cuda.get_device_name(0)}, torch {torch.__version__}, numba {numba.__version__} "
          f"with {numba.get_num_threads()} threads, load {os.getloadavg()}")
    image = np.random.default_rng(2048).integers(0, 256, (args.size, args.size, 3)).astype(np.uint8)
    warm = image[:64, :64]
    percolation(warm, backend="numba")
    start = time.perf_counter()
    cpu = percolation(image, backend="numba")
    print(f"numba CPU {args.size}²: {time.perf_counter() - start:.2f} s")
    small = percolation(warm, backend="torch")
    torch.cuda.synchronize()
    same = _equal(small, percolation(warm, backend="numba"))
    for run in range(args.runs):
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        gpu = percolation(image, backend="torch")
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated() / 2**30
        print(f"torch CUDA {args.size}² run {run + 1}: {seconds:.2f} s, peak {peak:.1f} GiB")
        same = same and _equal(gpu, cpu)
    print("equal to the CPU result" if same else "DIFFERENT from the CPU result")
    if not same:
        for name in ("cluster_count", "largest_cluster_ratio", "percolating_ratio"):
            print(name, getattr(cpu, name)[:5], getattr(gpu, name)[:5])
    return 0 if same else 1


def _equal(a: object, b: object) -> bool:
    """Whether two PercolationResults hold identical numbers."""
    return all(
        np.array_equal(getattr(a, name), getattr(b, name))
        for name in ("box_sizes", "cluster_count", "largest_cluster_ratio", "percolating_ratio")
    )


if __name__ == "__main__":
    sys.exit(main())
