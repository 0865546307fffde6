"""The gliding box of a stack of same-size small images (tiles) at once: one compiled pass over
the stack, a tile per parallel task, and the results of every tile computed together.

A 64² RGB tile's gliding box costs about 0.45 ms of one core; called tile by tile, the setup
of each call (padding, working arrays, a parallel launch) and its Python result add a third to
that. Here those are paid once per stack, and each tile's numbers equal what
:func:`services.features.fractal.gliding_box` gives for it alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from numba import get_num_threads, get_thread_id, njit, parallel_chunksize, prange

from services.features.fractal import (
    _LANES,
    _MAX_PIECE,
    DEFAULT_BOX_SIZES,
    FractalDimension,
    GlidingBoxResult,
    _count_run,
    _entry_boxes,
    _EntryTables,
    _fit_dimension,
    _frozen,
    _MassLayout,
    _ring_offsets,
    _run_buffers,
    _validate,
)

__all__ = ["GlidingBoxStack", "gliding_box_stack", "warm_up"]


@dataclass(frozen=True)
class GlidingBoxStack:
    """Mass statistics of the gliding box of N tiles, one row per tile.

    Attributes
    ----------
    box_sizes : ndarray of int64, shape (n,)
        The box sides r, increasing.
    probability : dict of int to ndarray of float64, shape (N, r²)
        ``probability[r][t, m - 1]`` is P(m, r) of tile t.
    lacunarity : ndarray of float64, shape (N, n)
        Λ(r) of each tile and box side.
    box_count : ndarray of float64, shape (N, n)
        N(r) of each tile and box side.
    fractal_dimension : ndarray of float64, shape (N,)
        D of each tile (NaN with a single box side).
    r_squared : ndarray of float64, shape (N,)
        R² of each tile's fit of log N(r) against log r.
    """

    box_sizes: np.ndarray
    probability: dict[int, np.ndarray]
    lacunarity: np.ndarray
    box_count: np.ndarray
    fractal_dimension: np.ndarray
    r_squared: np.ndarray

    def __len__(self) -> int:
        return len(self.lacunarity)

    def tile(self, index: int) -> GlidingBoxResult:
        """Tile ``index``'s result, as :func:`~services.features.fractal.gliding_box` gives it."""
        return GlidingBoxResult(
            box_sizes=self.box_sizes,
            probability={r: values[index] for r, values in self.probability.items()},
            lacunarity=self.lacunarity[index],
            box_count=self.box_count[index],
            fractal_dimension=FractalDimension(
                float(self.fractal_dimension[index]), int(self.box_sizes[0]), int(self.box_sizes[-1]),
                float(self.r_squared[index]),
            ),
        )


def gliding_box_stack(tiles: np.ndarray, box_sizes: Iterable[int] = DEFAULT_BOX_SIZES) -> GlidingBoxStack:
    """The gliding box of every tile of a stack, on numba's threads, a tile per task.

    Parameters
    ----------
    tiles : ndarray of uint8 or uint16, shape (N, H, W), (N, H, W, 1) or (N, H, W, 3)
        N grey or RGB tiles of one size, N ≥ 1.
    box_sizes : iterable of int, optional
        As :func:`services.features.fractal.gliding_box` takes them; none larger than a tile's
        shorter side.

    Returns
    -------
    GlidingBoxStack
        Row t equals ``gliding_box(tiles[t], box_sizes)`` number for number.

    Raises
    ------
    ValueError
        If ``tiles`` is not such a stack, or ``box_sizes`` not as ``gliding_box`` takes them.

    Examples
    --------
    >>> tiles = np.zeros((2, 5, 5), dtype=np.uint8)
    >>> gliding_box_stack(tiles, box_sizes=[3]).lacunarity.shape
    (2, 1)
    """
    if not isinstance(tiles, np.ndarray) or tiles.ndim not in (3, 4) or len(tiles) == 0:
        raise ValueError(
            "tiles must be a non-empty (N, H, W) or (N, H, W, C) array, got "
            + (f"shape {tiles.shape}" if isinstance(tiles, np.ndarray) else type(tiles).__name__)
        )
    first, sizes = _validate(tiles[0], box_sizes)  # dtype, channels, sides against the tile size
    channels, height, width = first.shape
    planes = np.moveaxis(tiles.reshape(len(tiles), height, width, channels), 3, 1)
    counts = _stack_counts(planes, _EntryTables.build(sizes, tiles.dtype == np.uint16))
    return _stack_result(sizes, counts, (height, width))


def warm_up() -> None:
    """Compile the stack kernel (or load it from numba's cache) for uint8 and uint16 tiles, as
    :func:`services.features.fractal.warm_up` does the one-image kernels."""
    for dtype in (np.uint8, np.uint16):
        gliding_box_stack(np.zeros((1, 3, 3, 3), dtype), [3])


def _stack_counts(planes: np.ndarray, tables: _EntryTables) -> np.ndarray:
    """counts[t, _MassLayout.starts[j] + m - 1]: boxes of side sizes[j] with mass m in tile t of a
    planar (N, C, H, W) stack, by the numba kernel."""
    sizes = tables.sizes
    count, channels, height, width = planes.shape
    half_max = (int(sizes[-1]) - 1) // 2
    half_min = (int(sizes[0]) - 1) // 2
    threads = get_num_threads()
    n = len(sizes)
    starts = _MassLayout.build(sizes).starts
    counts = np.zeros((count, int(np.sum(sizes * sizes))), np.int64)
    masses, tallies, distances = _run_buffers(threads, n, planes.dtype)
    margin = half_max * (width + 1) + _LANES
    padded = np.zeros((count, channels, height * width + 2 * margin), planes.dtype)
    for channel in range(channels):  # one gather from the (N, H, W, C) tiles, no planar copy first
        padded[:, channel, margin : margin + height * width].reshape(count, height, width)[...] = (
            planes[:, channel])
    centres = (height - 2 * half_min) * width
    # As gliding_box on one thread: runs of up to _MAX_PIECE centres, at least 512.
    piece = -(-max(512, min(_MAX_PIECE, -(-centres // 4))) // _LANES) * _LANES
    with parallel_chunksize(1):
        _add_stack_mass_counts(
            padded, margin, width, height, sizes, starts, tables.thresholds.astype(planes.dtype),
            tables.ring_index, _ring_offsets(width, half_max), counts, masses, tallies, distances, piece,
            planes.dtype.type, half_min * width, (height - half_min) * width,
        )
    return counts


@njit(cache=True, nogil=True, parallel=True)
def _add_stack_mass_counts(  # pragma: no cover - compiled
    stack, margin, width, height, sizes, starts, thresholds, ring_index, offsets, counts, masses, tallies,
    distances, piece, pixel, p_start, p_stop,
):
    """Add to counts[t, starts[j] + m - 1] the boxes of side sizes[j] with mass m centred on the
    pixels p_start ≤ p < p_stop of tile t of a zero-padded (N, C, margin + H·W + margin) stack,
    one tile per parallel task, its centres in runs of ``piece``."""
    for tile in prange(stack.shape[0]):
        thread = get_thread_id()
        for p0 in range(p_start, p_stop, piece):
            _count_run(
                stack[tile], margin, width, height, sizes, starts, thresholds, ring_index, offsets,
                counts[tile], masses[thread], tallies[thread], distances[thread], pixel, p0,
                min(p0 + piece, p_stop),
            )


def _stack_result(sizes: np.ndarray, counts: np.ndarray, shape: tuple[int, int]) -> GlidingBoxStack:
    """Each tile's probabilities, Λ, N and fit from its row of ``counts``, by the same arithmetic
    as one image's, so the numbers are equal (numpy's reduceat sums each row in the same order)."""
    layout = _MassLayout.build(sizes)
    shares = _frozen(counts / _entry_boxes(sizes, shape))
    first = np.add.reduceat(shares * layout.masses, layout.starts, axis=1)
    second = np.add.reduceat(shares * layout.squares, layout.starts, axis=1)
    lacunarity = (second - first * first) / (first * first)
    box_count = np.add.reduceat(shares / layout.masses, layout.starts, axis=1)
    # Tile by tile: the closed-form fit over a matrix sums in another order than one image's.
    fits = [_fit_dimension(sizes, row) for row in box_count]
    starts = layout.starts.tolist()
    return GlidingBoxStack(
        box_sizes=_frozen(sizes),
        probability={r: shares[:, starts[j] : starts[j] + r * r] for j, r in enumerate(sizes.tolist())},
        lacunarity=_frozen(lacunarity),
        box_count=_frozen(box_count),
        fractal_dimension=_frozen(np.array([fit.value for fit in fits])),
        r_squared=_frozen(np.array([fit.r_squared for fit in fits])),
    )

