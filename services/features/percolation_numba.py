"""Numba kernels of percolation: per box side, the cluster counts, largest clusters and percolating boxes.

For a row of box centres every offset of the largest box is compared once with whole rows of
centres, in loops LLVM vectorises; an offset whose colour distance passes the largest threshold sets
its bit in a per-centre bit set. Each centre then visits only those cells (a random RGB image has a
few percent of them), finds the first box side each counts in, and adds them to a union-find in that
order, reading the cluster statistics of every side on the way.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from numba.cpython.unsafe.numbers import trailing_zeros

from labsight.numba_target import use_full_vector_width

use_full_vector_width()  # before the first kernel compiles

__all__ = ["CellTables", "cluster_sums", "workspace"]


class CellTables:
    """The cells of the largest box ordered by ring (chessboard distance from the centre).

    The box of half side h is then the first (2h + 1)² cells. Arrays over the cells: ``dy``,
    ``dx`` the offset, ``flat`` the offset in a flat (H, W, C) image of this width and channels,
    ``entry`` the first box side whose box holds it (``ring_index`` of its ring) and ``grid`` its
    index in a (2 half_max + 3)² grid with a one-cell border.
    """

    def __init__(self, half_max: int, ring_index: np.ndarray, width: int, channels: int) -> None:
        span = 2 * half_max + 1
        dy, dx = np.divmod(np.arange(span * span), span)
        dy, dx = dy - half_max, dx - half_max
        ring = np.maximum(np.abs(dy), np.abs(dx))
        order = np.argsort(ring, kind="stable")
        self.dy = dy[order].astype(np.int64)
        self.dx = dx[order].astype(np.int64)
        self.flat = (self.dy * width + self.dx) * channels
        self.entry = ring_index[ring[order]].astype(np.int64)
        self.grid = ((self.dy + half_max + 1) * (span + 2) + self.dx + half_max + 1).astype(np.int32)


def workspace(tasks: int, half_max: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Bit sets of one row of centres (8 cells a byte) and their summary words (a bit per byte), for
    each of ``tasks`` parallel tasks of :func:`cluster_sums`."""
    span = 2 * half_max + 1
    cell_bytes = (span * span + 7) // 8
    return (
        np.empty((tasks, cell_bytes, width), np.uint8),
        np.empty((tasks, (cell_bytes + 63) // 64, width), np.uint64),
    )


@njit(cache=True)
def _row_bits(img, y, half, threshold, off_dy, off_dx, bits, summary, cast):  # pragma: no cover - compiled
    """bits[o >> 3, x] bit o & 7: whether cell o of the box of half side ``half`` centred on (y, x)
    is within colour distance ``threshold`` of the centre, for a planar (C, H, W) image of 1 or 3
    channels; cells outside the image stay 0. summary[k >> 6, x] bit k & 63: whether bits[k, x] is
    not 0, so that a centre reads only the bytes that hold cells.

    ``cast`` is the image's integer type: distances and ``threshold`` stay in it, which lets LLVM
    keep 8- or 16-bit vector lanes.
    """
    width = img.shape[2]
    cells = (2 * half + 1) * (2 * half + 1)
    bits[: (cells + 7) >> 3, :] = 0
    zero = np.uint8(0)
    for o in range(cells):
        dy, dx = off_dy[o], off_dx[o]
        x0, x1 = max(0, -dx), min(width, width - dx)
        bit = np.uint8(1 << (o & 7))
        row = bits[o >> 3, x0:x1]
        n0, c0 = img[0, y + dy, x0 + dx : x1 + dx], img[0, y, x0:x1]
        if img.shape[0] == 1:
            for i in range(x1 - x0):
                d = cast(max(n0[i], c0[i]) - min(n0[i], c0[i]))
                row[i] |= bit if d <= threshold else zero
        else:
            n1, c1 = img[1, y + dy, x0 + dx : x1 + dx], img[1, y, x0:x1]
            n2, c2 = img[2, y + dy, x0 + dx : x1 + dx], img[2, y, x0:x1]
            for i in range(x1 - x0):
                d0 = cast(max(n0[i], c0[i]) - min(n0[i], c0[i]))
                d1 = cast(max(n1[i], c1[i]) - min(n1[i], c1[i]))
                d2 = cast(max(n2[i], c2[i]) - min(n2[i], c2[i]))
                row[i] |= bit if max(d0, max(d1, d2)) <= threshold else zero
    summary[:, :] = 0
    none = np.uint64(0)
    for k in range((cells + 7) >> 3):
        flag = np.uint64(1) << np.uint64(k & 63)
        byte, word = bits[k], summary[k >> 6]
        for i in range(width):
            word[i] |= flag if byte[i] != 0 else none


@njit(cache=True, inline="always")
def _find(parent, a):  # pragma: no cover - compiled
    """Root of a's set, halving the path on the way."""
    while parent[a] != a:
        parent[a] = parent[parent[a]]
        a = parent[a]
    return a


@njit(cache=True)
def _add_centre_clusters(
    img, pixels, y, x, bits, summary, fits, halves, colour_index, min_mass, off_flat, off_entry, off_grid,
    scratch, parent, size, clusters, largest, percolating,
):  # pragma: no cover - compiled
    """Add the cluster count, largest cluster and percolation of each box centred on (y, x) whose
    side is one of the first ``fits`` sides to the totals; ``pixels`` is the image as a flat (H, W, C)
    array, in which cell o lies ``off_flat[o]`` after its centre.

    The cells whose bit is set join a union-find over the padded grid (``parent`` all -1 on entry and
    on return) in order of entry index, the first side they count in; once those of index j are in,
    its sets are exactly the 4-connected clusters of the box of side j, since clusters only merge as
    cells are added.
    """
    n = halves.shape[0]
    stride = 2 * halves[-1] + 3
    cap = colour_index.shape[0] - 1
    half = halves[fits - 1]
    cells = (2 * half + 1) * (2 * half + 1)
    cell, level, order, start = scratch[0], scratch[1], scratch[2], scratch[3]
    for j in range(n + 1):
        start[j] = 0
    count = 0
    last = (cells - 1) >> 3
    one = np.uint64(1)
    channels = img.shape[0]
    here = (y * img.shape[2] + x) * channels
    for q in range((last >> 6) + 1):
        word = summary[q, x]
        if q == last >> 6 and (last & 63) < 63:
            word &= (one << np.uint64((last & 63) + 1)) - one
        while word != 0:
            k = (q << 6) + np.int64(trailing_zeros(word))
            word &= word - one
            byte = np.int64(bits[k, x])
            if k == last:
                byte &= (1 << (cells - (k << 3))) - 1
            while byte != 0:
                o = (k << 3) + trailing_zeros(byte)
                byte &= byte - 1
                there = here + off_flat[o]
                d = abs(np.int64(pixels[there]) - np.int64(pixels[here]))
                if channels == 3:
                    d = max(d, abs(np.int64(pixels[there + 1]) - np.int64(pixels[here + 1])))
                    d = max(d, abs(np.int64(pixels[there + 2]) - np.int64(pixels[here + 2])))
                e = max(off_entry[o], colour_index[min(d, cap)])
                if e < fits:
                    cell[count] = off_grid[o]
                    level[count] = e
                    count += 1
                    start[e + 1] += 1
    # Counting sort by entry index: bucket j ends up as order[start[j-1]:start[j]].
    for j in range(n - 1):
        start[j + 1] += start[j]
    for t in range(count):
        e = level[t]
        order[start[e]] = cell[t]
        start[e] += 1
    components = 0
    biggest = 0
    begin = 0
    for j in range(fits):
        for t in range(begin, start[j]):
            p = order[t]
            # p joins its first present neighbour's set directly, then merges any other sets it touches.
            root = -1
            for q in (p - 1, p + 1, p - stride, p + stride):
                if parent[q] >= 0:
                    other = _find(parent, q)
                    if root < 0:
                        root = other
                        parent[p] = root
                        size[root] += 1
                    elif other != root:
                        if size[other] > size[root]:
                            root, other = other, root
                        parent[other] = root
                        size[root] += size[other]
                        components -= 1
            if root < 0:
                root = p
                parent[p] = p
                size[p] = 1
                components += 1
            biggest = max(biggest, size[root])
        begin = start[j]
        clusters[j] += components
        largest[j] += biggest
        if start[j] >= min_mass[j]:
            percolating[j] += 1
    for t in range(count):
        parent[cell[t]] = -1


@njit(cache=True, parallel=True)
def cluster_sums(
    img, pixels, halves, thresholds, colour_index, min_mass, off_dy, off_dx, off_flat, off_entry, off_grid,
    bit_sets, summaries, cast, y_start, y_stop,
):  # pragma: no cover - compiled
    """Per box side (half sides ``halves``): total cluster count, total largest-cluster size and
    number of percolating boxes of the boxes centred on rows y_start ≤ y < y_stop of a planar
    (C, H, W) image of C = 1 or 3 channels and type ``cast`` (np.uint8 or np.uint16, ``thresholds``
    the same), ``pixels`` the same image as a flat (H, W, C) array; one parallel task per ``bit_sets[i]``,
    ``summaries[i]`` (see :func:`workspace`)."""
    height, width = img.shape[1], img.shape[2]
    n = halves.shape[0]
    half_min, half_max = halves[0], halves[-1]
    stride = 2 * half_max + 3
    chunks = bit_sets.shape[0]
    totals = np.zeros((chunks, 3, n), np.int64)
    rows = y_stop - y_start
    for chunk in prange(chunks):
        bits, summary = bit_sets[chunk], summaries[chunk]
        scratch = np.empty((4, stride * stride), np.int32)
        parent = np.full(stride * stride, -1, np.int32)
        size = np.empty(stride * stride, np.int32)
        for y in range(y_start + rows * chunk // chunks, y_start + rows * (chunk + 1) // chunks):
            half_y = min(y, height - 1 - y, half_max)
            sides = np.searchsorted(halves, half_y, side="right")
            _row_bits(img, y, halves[sides - 1], thresholds[sides - 1], off_dy, off_dx, bits, summary, cast)
            for x in range(half_min, width - half_min):
                fits = np.searchsorted(halves, min(x, width - 1 - x, half_y), side="right")
                _add_centre_clusters(
                    img, pixels, y, x, bits, summary, fits, halves, colour_index, min_mass, off_flat,
                    off_entry, off_grid, scratch, parent, size, totals[chunk, 0], totals[chunk, 1],
                    totals[chunk, 2],
                )
    summed = totals.sum(axis=0)
    return summed[0], summed[1], summed[2]
