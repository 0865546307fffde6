"""How much work a fractal request is, counted the same way by the gateway and the features service."""

from __future__ import annotations

from collections.abc import Sequence

PERCOLATION_FACTOR = 200
"""Cost of percolation per pixel and per pixel of the largest box, in box-pixel comparisons:
each passes through a union-find (measured: ~11 ns against ~0.05 ns per gliding-box comparison)."""


def fractal_cost(pixels: int, sizes: Sequence[int], percolation: bool) -> float:
    """Box-pixel comparisons of a fractal job on ``pixels`` pixels with box sides ``sizes``
    (ascending).

    The gliding box compares each centre with every pixel of each of its
    boxes; percolation then runs a union-find over the pixels of the largest box.
    """
    cost = float(pixels) * sum(int(r) ** 2 for r in sizes)
    if percolation:
        cost += float(pixels) * int(sizes[-1]) ** 2 * PERCOLATION_FACTOR
    return cost


BATCH_MAX_COST = 2e8
"""Most box-pixel comparisons of one image in a ComputeFractalBatch call (about 10 ms of one
core; a 64² RGB image with sides 3-41 is 4.7e7): only small images, whose per-call costs
outweigh their work, travel in batches, and the gateway groups only jobs under it."""

BATCH_MAX_IMAGES = 64
"""Most images in one ComputeFractalBatch call."""
