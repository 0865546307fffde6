"""Gliding-box fractal features of an image: mass probabilities, lacunarity, box count and percolation."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numba import get_num_threads, get_thread_id, njit, parallel_chunksize, prange

from labsight.numba_target import use_full_vector_width
from services.features.percolation_numba import CellTables, cluster_sums, workspace

use_full_vector_width()  # before the first kernel compiles

__all__ = [
    "DEFAULT_BOX_SIZES",
    "MAX_BOX_SIZE",
    "PERCOLATION_THRESHOLD",
    "FractalDimension",
    "GlidingBoxResult",
    "PercolationResult",
    "ProgressCallback",
    "gliding_box",
    "percolation",
    "warm_up",
]

DEFAULT_BOX_SIZES = range(3, 42, 2)
"""The seed's 20 box sides, r = 3, 5, ..., 41."""

MAX_BOX_SIZE = 255
"""Largest box side accepted: masses up to r² are counted in 16 bits."""

PERCOLATION_THRESHOLD = 0.59275
"""A box percolates when its mass fraction m / r² reaches this value (the seed's constant)."""

Backend = Literal["auto", "numba", "torch"]

ProgressCallback = Callable[[int, int], None]
"""Called with (box-centre rows done, rows in all) after each band of rows; an exception it
raises stops the computation there (how a cancelled caller stops it)."""

PROGRESS_BANDS = 32
"""Bands of box-centre rows a computation runs in, reporting progress after each; their
counts add up exactly, so the result does not depend on the banding."""

# Bytes of working arrays the torch path holds at once (a band of centre rows' entry maps, a batch
# of centres to label); bounds its memory on large images. On a GPU it may use up to a quarter of
# the free memory instead (_torch_working_bytes).
_TORCH_WORKING_BYTES = 1 << 30


@dataclass(frozen=True)
class FractalDimension:
    """Least-squares fit of log N(r) against log r.

    Attributes
    ----------
    value : float
        The fractal dimension D = -slope of the fit (N(r) falls as r grows, so the
        slope is negative and D positive). NaN when fewer than two box sizes were used.
    r_min, r_max : int
        The smallest and largest box side used in the fit.
    r_squared : float
        Coefficient of determination of the fit (1.0 when log N is constant, NaN for
        a single box size).
    """

    value: float
    r_min: int
    r_max: int
    r_squared: float


@dataclass(frozen=True)
class GlidingBoxResult:
    """Mass statistics of the gliding box, one entry per box side.

    Attributes
    ----------
    box_sizes : ndarray of int64, shape (n,)
        The box sides r, increasing.
    probability : dict of int to ndarray of float64
        ``probability[r][m - 1]`` is P(m, r), the share of boxes of side r with mass m,
        for m = 1 .. r².
    lacunarity : ndarray of float64, shape (n,)
        Λ(r) for each box side.
    box_count : ndarray of float64, shape (n,)
        N(r) = Σ P(m, r) / m for each box side (the seed's "fractal dimension" columns).
    fractal_dimension : FractalDimension
        The slope fit of log N(r) against log r.
    """

    box_sizes: np.ndarray
    probability: dict[int, np.ndarray]
    lacunarity: np.ndarray
    box_count: np.ndarray
    fractal_dimension: FractalDimension


@dataclass(frozen=True)
class PercolationResult:
    """Percolation statistics of the gliding box, one entry per box side.

    Attributes
    ----------
    box_sizes : ndarray of int64, shape (n,)
        The box sides r, increasing.
    cluster_count : ndarray of float64, shape (n,)
        Mean number of 4-connected clusters per box.
    largest_cluster_ratio : ndarray of float64, shape (n,)
        Mean over boxes of (size of the largest cluster) / r².
    percolating_ratio : ndarray of float64, shape (n,)
        Share of boxes whose mass fraction m / r² is at least ``PERCOLATION_THRESHOLD``.
    """

    box_sizes: np.ndarray
    cluster_count: np.ndarray
    largest_cluster_ratio: np.ndarray
    percolating_ratio: np.ndarray


def gliding_box(
    image: np.ndarray,
    box_sizes: Iterable[int] = DEFAULT_BOX_SIZES,
    *,
    backend: Backend = "auto",
    progress: ProgressCallback | None = None,
) -> GlidingBoxResult:
    """Mass probabilities, lacunarity and box count of an image by the gliding box.

    Parameters
    ----------
    image : ndarray of uint8 or uint16, shape (H, W), (H, W, 1) or (H, W, 3)
        Grey or RGB image. RGBA is refused: pass ``image[..., :3]`` to ignore alpha.
    box_sizes : iterable of int, optional
        Odd, positive, strictly increasing box sides r, at most ``MAX_BOX_SIZE`` (255)
        and none larger than the image's shorter side. Default: 3, 5, ..., 41.
    backend : {"auto", "numba", "torch"}, optional
        ``"numba"`` runs the compiled CPU kernel; ``"torch"`` runs the PyTorch kernel on
        CUDA when available, else on the CPU; ``"auto"`` picks torch only when CUDA is
        available. Both give identical numbers.
    progress : callable, optional
        Called as ``progress(rows_done, rows)`` after each of up to ``PROGRESS_BANDS``
        bands of box-centre rows; what it raises stops the computation.

    Returns
    -------
    GlidingBoxResult

    Raises
    ------
    ValueError
        If ``image`` or ``box_sizes`` is not as described above, or ``backend`` is unknown.

    Notes
    -----
    Every pixel c whose r×r box lies inside the image is a box centre; there are
    (H - r + 1)(W - r + 1) of them. The mass m of a box counts the pixels q in it with

    .. math:: \\max_{channels} |q - c| \\le T(r),

    so the centre always counts and 1 ≤ m ≤ r². The threshold is T(r) = r for uint8
    and T(r) = 257 r for uint16, so a uint8 image scaled to uint16 by 257 (the
    usual 0-255 to 0-65535 mapping) gives the same result. With P(m, r) the share of
    boxes with mass m, :math:`M_k = \\sum_m m^k P(m, r)`,

    .. math:: \\Lambda(r) = (M_2 - M_1^2) / M_1^2, \\qquad N(r) = \\sum_m P(m, r) / m.

    The fractal dimension is D = -b where b is the least-squares slope of log N(r)
    against log r over all box sides.

    The numbers equal those of the seed project (Image-Feature-Extraction-Tools'
    gliding box with chessboard colour distance).

    Examples
    --------
    >>> image = np.zeros((5, 5), dtype=np.uint8)
    >>> gliding_box(image, box_sizes=[3]).lacunarity
    array([0.])
    """
    planar, sizes = _validate(image, box_sizes)
    tables = _EntryTables.build(sizes, image.dtype == np.uint16)
    if _use_torch(backend):
        histograms = _in_bands(sizes, planar.shape[1], progress,
                               lambda rows: _mass_counts_torch(planar, tables, rows))
        counts = np.concatenate([histograms[j, 1 : r * r + 1] for j, r in enumerate(sizes.tolist())])
    else:
        counts = _mass_counts_numba(planar, tables, progress)
    return _gliding_box_result(sizes, counts, planar.shape[1:])


def percolation(
    image: np.ndarray,
    box_sizes: Iterable[int] = DEFAULT_BOX_SIZES,
    *,
    backend: Backend = "auto",
    progress: ProgressCallback | None = None,
) -> PercolationResult:
    """Cluster statistics of the gliding box's binary maps.

    Parameters
    ----------
    image : ndarray of uint8 or uint16, shape (H, W), (H, W, 1) or (H, W, 3)
        Grey or RGB image, as for :func:`gliding_box`.
    box_sizes : iterable of int, optional
        Odd, positive, strictly increasing box sides, as for :func:`gliding_box`.
    backend : {"auto", "numba", "torch"}, optional
        Where to compute, as for :func:`gliding_box`; both give identical numbers.
    progress : callable, optional
        Progress after each band of box-centre rows, as for :func:`gliding_box`.

    Returns
    -------
    PercolationResult

    Raises
    ------
    ValueError
        If ``image`` or ``box_sizes`` is not as described above, or ``backend`` is unknown.

    Notes
    -----
    For each box of :func:`gliding_box`, the pixels passing the same colour test
    :math:`\\max_{channels} |q - c| \\le T(r)` form a binary r×r map. Its clusters are
    the 4-connected components of that map. Per box side r this returns the mean
    cluster count per box, the mean of (largest cluster size / r²), and the share of
    boxes with m / r² ≥ 0.59275 (a mass-fraction test; no spanning test, as in the
    seed).
    """
    planar, sizes = _validate(image, box_sizes)
    tables = _EntryTables.build(sizes, image.dtype == np.uint16)
    min_mass = _percolating_mass(sizes)
    if _use_torch(backend):
        sums = _in_bands(sizes, planar.shape[1], progress,
                         lambda rows: np.stack(_cluster_sums_torch(planar, tables, min_mass, rows)))
    else:
        half_max = (int(sizes[-1]) - 1) // 2
        cells = CellTables(half_max, tables.ring_index, planar.shape[2], planar.shape[0])
        planes = np.ascontiguousarray(planar)
        pixels = np.ascontiguousarray(image).reshape(-1)  # (H, W, C) as it came: no copy
        thresholds = tables.thresholds.astype(image.dtype)
        # One workspace for every band: fresh pages per band would cost their zeroing each time.
        bits, summaries = workspace(get_num_threads() * 4, half_max, planar.shape[2])
        # Chunks of one task: under numba's TBB layer each goes to whichever thread is free, so a
        # thread held up on a busy machine does not hold up every band. The OpenMP layer (the
        # one installed here) splits the tasks into one block per thread whatever the chunk size.
        with parallel_chunksize(1):
            sums = _in_bands(sizes, planar.shape[1], progress, lambda rows: np.stack(cluster_sums(
                planes, pixels, (sizes - 1) // 2, thresholds, tables.colour_index, min_mass, cells.dy,
                cells.dx, cells.flat, cells.entry, cells.grid, bits[: _chunks(rows)],
                summaries[: _chunks(rows)], image.dtype.type, *rows
            )))
    clusters, largest, percolating = sums
    boxes = _box_counts(sizes, planar.shape[1:]).astype(np.float64)
    return PercolationResult(
        box_sizes=_frozen(sizes),
        cluster_count=_frozen(clusters / boxes),
        largest_cluster_ratio=_frozen(largest / (boxes * sizes * sizes)),
        percolating_ratio=_frozen(percolating / boxes),
    )


def warm_up() -> None:
    """Compile the numba kernels (or load them from numba's on-disk cache) for uint8 and uint16 images.

    A service calls this before it serves, so that its first fractal job does not pay the
    compile (8-10 s on two cores). numba keeps the cache in ``$NUMBA_CACHE_DIR`` when set, else
    beside this module's sources, else (sources read-only) in the user's cache folder.
    """
    for dtype in (np.uint8, np.uint16):
        image = np.zeros((3, 3, 3), dtype)
        gliding_box(image, [3], backend="numba")
        percolation(image, [3], backend="numba")


def _validate(image: Any, box_sizes: Any) -> tuple[np.ndarray, np.ndarray]:
    """Check the arguments; return a view of the image as planes (C, H, W) of its own type (8-bit
    distances fill twice the vector lanes of 16-bit ones; each path copies it as it needs it)
    and the box sides as int64."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"image must have dtype uint8 or uint16, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 4:
        raise ValueError("image has 4 channels (RGBA?); pass image[..., :3] to drop alpha")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3))):
        raise ValueError(f"image must have shape (H, W), (H, W, 1) or (H, W, 3), got {image.shape}")
    if image.size == 0:
        raise ValueError(f"image is empty, shape {image.shape}")
    sizes = _box_sides(box_sizes)
    height, width = image.shape[:2]
    if sizes[-1] > min(height, width):
        raise ValueError(
            f"box_sizes up to {int(sizes[-1])} need an image at least {int(sizes[-1])}x{int(sizes[-1])}, "
            f"got image of shape {image.shape}"
        )
    pixels = image.reshape(height, width, -1)
    return np.moveaxis(pixels, 2, 0), sizes


def _box_sides(box_sizes: Any) -> np.ndarray:
    """The box sides, checked, as a read-only int64 array; sides of plain integers are checked once
    and the array kept (as a stack's tiles and a service's calls share them)."""
    try:
        requested = tuple(box_sizes)
    except TypeError:
        raise ValueError(
            f"box_sizes must be an iterable of odd positive integers, got {box_sizes!r}"
        ) from None
    if requested and all(type(side) is int or isinstance(side, np.integer) for side in requested):
        return _kept_box_sides(requested)  # (3, 5.0) would hash as (3, 5): integers only
    return _checked_box_sides(requested, box_sizes)


@functools.lru_cache(maxsize=32)
def _kept_box_sides(requested: tuple[int, ...]) -> np.ndarray:
    """Cached :func:`_checked_box_sides` of integer sides."""
    return _checked_box_sides(requested, requested)


def _checked_box_sides(requested: tuple[Any, ...], box_sizes: Any) -> np.ndarray:
    """``requested`` as a read-only int64 array, or ValueError naming what is wrong with it
    (``box_sizes``, as the caller gave it, in the message)."""
    sizes = np.array(requested)
    if sizes.ndim != 1 or sizes.size == 0 or sizes.dtype.kind not in "iu":
        raise ValueError(f"box_sizes must be a non-empty sequence of integers, got {box_sizes!r}")
    sizes = sizes.astype(np.int64)
    if np.any(sizes < 1) or np.any(sizes % 2 == 0):
        raise ValueError(f"box_sizes must be odd and positive, got {sizes.tolist()}")
    if np.any(np.diff(sizes) <= 0):
        raise ValueError(f"box_sizes must be strictly increasing, got {sizes.tolist()}")
    if sizes[-1] > MAX_BOX_SIZE:
        raise ValueError(f"box_sizes must be at most {MAX_BOX_SIZE}, got {int(sizes[-1])}")
    return _frozen(sizes)


@dataclass(frozen=True)
class _EntryTables:
    """Per-side thresholds and the lookup tables giving the first box side at which a neighbour counts.

    A neighbour q of centre c at chessboard offset k and colour distance d counts in the box of
    side r_j iff k ≤ (r_j - 1) / 2 and d ≤ T(r_j). Both conditions are monotone in j, so q counts
    exactly in boxes j ≥ max(ring_index[k], colour_index[min(d, len(colour_index) - 1)]), its
    entry index; n (the number of sides) means never.
    """

    sizes: np.ndarray
    thresholds: np.ndarray
    ring_index: np.ndarray
    colour_index: np.ndarray

    @classmethod
    def build(cls, sizes: np.ndarray, sixteen_bit: bool) -> _EntryTables:
        """Tables for these box sides and uint8 (T = r) or uint16 (T = 257 r) thresholds, built
        once per (sides, depth) and then reused: callers only read them."""
        return _entry_tables(tuple(sizes.tolist()), sixteen_bit)

    @classmethod
    def _compute(cls, sizes: np.ndarray, sixteen_bit: bool) -> _EntryTables:
        """The tables of :meth:`build`, computed afresh."""
        # A threshold at or above the largest possible distance passes every pixel, so capping it
        # at 65535 keeps uint16 arithmetic exact.
        thresholds = np.minimum(sizes * (257 if sixteen_bit else 1), 65535)
        half_max = (int(sizes[-1]) - 1) // 2
        ring = np.searchsorted(sizes, 2 * np.arange(half_max + 1) + 1)
        colour = np.searchsorted(thresholds, np.arange(int(thresholds[-1]) + 2))
        return cls(sizes, thresholds.astype(np.uint16), ring, colour)


@functools.lru_cache(maxsize=32)
def _entry_tables(sizes: tuple[int, ...], sixteen_bit: bool) -> _EntryTables:
    """Cached :meth:`_EntryTables.build`."""
    return _EntryTables._compute(np.array(sizes, dtype=np.int64), sixteen_bit)


def _use_torch(backend: str) -> bool:
    """Whether ``backend`` asks for the torch path."""
    if backend == "numba":
        return False
    if backend == "torch":
        return True
    if backend == "auto":
        try:
            import torch
        except ImportError:
            return False
        return bool(torch.cuda.is_available())
    raise ValueError(f"backend must be 'auto', 'numba' or 'torch', got {backend!r}")


def _in_bands(
    sizes: np.ndarray,
    height: int,
    progress: ProgressCallback | None,
    count: Callable[[tuple[int, int]], np.ndarray],
) -> np.ndarray:
    """Sum of ``count((y0, y1))`` over up to PROGRESS_BANDS bands [y0, y1) of box-centre rows,
    calling ``progress`` after each (counts of disjoint rows add up to those of all rows)."""
    bands = _bands(sizes, height)
    first, stop = bands[0][0], bands[-1][1]
    total = np.zeros(0)
    for y0, y1 in bands:
        part = count((y0, y1))
        total = part if y0 == first else total + part
        if progress is not None:
            progress(y1 - first, stop - first)
    return total


def _bands(sizes: np.ndarray, height: int, count: int = PROGRESS_BANDS) -> list[tuple[int, int]]:
    """Up to ``count`` bands [y0, y1) of box-centre rows, in order, covering every centre row."""
    half_min = (int(sizes[0]) - 1) // 2
    first, stop = half_min, height - half_min  # at least one row: no box is larger than the image
    step = -(-(stop - first) // count)
    return [(y0, min(y0 + step, stop)) for y0 in range(first, stop, step)]


def _chunks(rows: tuple[int, int]) -> int:
    """Parallel tasks of a numba kernel over centre rows [y0, y1): a few per thread, at most a row each."""
    return max(1, min(get_num_threads() * 4, rows[1] - rows[0]))


def _piece(rows: int, width: int) -> int:
    """Centres per run of the numba gliding box for a band of ``rows`` centre rows: up to
    _RUNS_PER_THREAD runs per thread, yet at least 512 (each run walks every offset once) and at
    most 1024 (its 8-bit tallies, a byte a centre and side, stay in the first-level cache: 4096
    runs 1.5-2x slower), a multiple of _LANES. Measured, not explained (numba's OpenMP layer
    gives each thread one block of runs, and the blocks cost alike either way): a 128² image on
    2 threads took 1.37-1.48 ms in runs of 512-640 against 1.53-1.57 in runs of 1024, on 1
    thread 2.54-2.60 ms in either (Xeon, 2026-12-07)."""
    centres = max(512, min(_MAX_PIECE, -(-rows * width // (get_num_threads() * _RUNS_PER_THREAD))))
    return -(-centres // _LANES) * _LANES


def _box_counts(sizes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Number of boxes of each side in an image of this (H, W)."""
    return (shape[0] - sizes + 1) * (shape[1] - sizes + 1)


def _entry_boxes(sizes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Each mass histogram entry's number of boxes (its side's), as float64 (what dividing the
    counts by it casts it to), read-only; kept per sides and shape as the mass layout is."""
    key = tuple(sizes.tolist())
    return _kept_entry_boxes(key, shape) if _keepable(key) else _new_entry_boxes(key, shape)


@functools.lru_cache(maxsize=32)
def _kept_entry_boxes(sizes: tuple[int, ...], shape: tuple[int, int]) -> np.ndarray:
    """Cached :func:`_new_entry_boxes`."""
    return _new_entry_boxes(sizes, shape)


def _new_entry_boxes(sizes: tuple[int, ...], shape: tuple[int, int]) -> np.ndarray:
    sides = np.array(sizes, np.int64)
    return _frozen(np.repeat(_box_counts(sides, shape), sides * sides).astype(np.float64))


def _percolating_mass(sizes: np.ndarray) -> np.ndarray:
    """Per box side, the smallest mass m with m / r² ≥ PERCOLATION_THRESHOLD, divided in float64."""
    return np.array(
        [int(np.argmax(np.arange(r * r + 1) / (r * r) >= PERCOLATION_THRESHOLD)) for r in sizes.tolist()],
        dtype=np.int64,
    )


def _frozen(array: np.ndarray) -> np.ndarray:
    """Mark an array read-only, so a frozen result cannot be changed through it."""
    array.setflags(write=False)
    return array


def _gliding_box_result(sizes: np.ndarray, counts: np.ndarray, shape: tuple[int, int]) -> GlidingBoxResult:
    """Turn the mass histograms of every side (counts[_MassLayout.starts[j] + m - 1], m = 1..r²) into
    probabilities, Λ, N and the dimension fit, every side at once."""
    layout = _MassLayout.build(sizes)
    shares = _frozen(counts / _entry_boxes(sizes, shape))
    first = np.add.reduceat(shares * layout.masses, layout.starts)
    second = np.add.reduceat(shares * layout.squares, layout.starts)
    lacunarity = (second - first * first) / (first * first)
    box_count = np.add.reduceat(shares / layout.masses, layout.starts)
    # Read-only views of one read-only array.
    starts = layout.starts.tolist()
    probability = {r: shares[starts[j] : starts[j] + r * r] for j, r in enumerate(sizes.tolist())}
    return GlidingBoxResult(
        box_sizes=_frozen(sizes),
        probability=probability,
        lacunarity=_frozen(lacunarity),
        box_count=_frozen(box_count),
        fractal_dimension=_fit_dimension(sizes, box_count),
    )


@dataclass(frozen=True)
class _MassLayout:
    """Where each side's mass histogram lies in one vector of every side's.

    Attributes
    ----------
    starts : ndarray of int64
        Side j's boxes with mass m = 1..r² are counted at starts[j] + m - 1.
    masses, squares : ndarray of float64
        m and m² of each entry.
    """

    starts: np.ndarray
    masses: np.ndarray
    squares: np.ndarray

    @classmethod
    def build(cls, sizes: np.ndarray) -> _MassLayout:
        """The layout of these box sides, built once per sides and then reused (callers only
        read it) when it has at most CACHED_MASS_ENTRIES entries; a bigger one each time."""
        key = tuple(sizes.tolist())
        return _cached_mass_layout(key) if _keepable(key) else _new_mass_layout(key)


CACHED_MASS_ENTRIES = 1 << 16
"""Most entries (the sum of r² over the sides) of a mass layout kept between calls, 1 MiB:
the default sides 3-41 have 11,891; every odd side up to 255 has 2.8 million (43 MiB), which
the cache's 32 size sets would hold for good, while a gliding box with such boxes costs far
more than building it."""


def _keepable(sizes: tuple[int, ...]) -> bool:
    """Whether arrays of an entry per mass of these sides are small enough to keep between calls
    (at most CACHED_MASS_ENTRIES entries)."""
    return sum(side * side for side in sizes) <= CACHED_MASS_ENTRIES


@functools.lru_cache(maxsize=32)
def _cached_mass_layout(sizes: tuple[int, ...]) -> _MassLayout:
    """Cached :func:`_new_mass_layout`."""
    return _new_mass_layout(sizes)


def _new_mass_layout(sizes: tuple[int, ...]) -> _MassLayout:
    squares = np.array(sizes, dtype=np.int64) ** 2
    masses = np.concatenate([np.arange(1, square + 1, dtype=np.float64) for square in squares])
    return _MassLayout(np.concatenate(([0], np.cumsum(squares)[:-1])), masses, masses * masses)


def _fit_dimension(sizes: np.ndarray, box_count: np.ndarray) -> FractalDimension:
    """Least-squares slope of log N(r) against log r, reported as D = -slope."""
    r_min, r_max = int(sizes[0]), int(sizes[-1])
    if len(sizes) < 2:
        return FractalDimension(float("nan"), r_min, r_max, float("nan"))
    x, x_mean, centred, spread = _log_sides(tuple(sizes.tolist()))
    y = np.log(box_count)
    y_mean = y.mean()
    # The normal equations in closed form: np.polyfit's least-squares solver costs more than the
    # rest of the result of a small image.
    slope = float(centred @ (y - y_mean) / spread)
    intercept = float(y_mean - slope * x_mean)
    residual = float(np.sum((y - (slope * x + intercept)) ** 2))
    total = float(np.sum((y - y_mean) ** 2))
    r_squared = 1.0 if total == 0.0 else 1.0 - residual / total
    return FractalDimension(float(-slope), r_min, r_max, r_squared)


@functools.lru_cache(maxsize=32)
def _log_sides(sizes: tuple[int, ...]) -> tuple[np.ndarray, np.float64, np.ndarray, np.float64]:
    """The fit's terms that depend on the box sides alone, computed once per sides (a stack's
    tiles share them): x = log r, its mean, x less its mean, and that one's sum of squares."""
    x = np.log(np.array(sizes, np.float64))
    x_mean = x.mean()
    centred = x - x_mean
    return _frozen(x), x_mean, _frozen(centred), centred @ centred


# ---------------------------------------------------------------------------------------------------
# numba kernels of the gliding box (percolation's are in percolation_numba). A run of centres per
# task; for each run every offset of the largest box that fits around one of its centres is
# visited once, ring by ring (chessboard distance from the centre), eight offsets at a time, in
# loops over the whole run that LLVM vectorises. All offsets of a ring first count in the same box
# side (see _EntryTables), so one pass over a side's tallies adds eight offsets.

_BATCH = 8
"""Offsets whose distances one pass over the tallies compares; a ring k ≥ 1 has 8k offsets."""

_TALLY_BATCHES = 255 // _BATCH
"""Batches an 8-bit tally holds before it is added to the 16-bit masses."""

_LANES = 64
"""Centres per run are a multiple of this (a 512-bit vector of bytes): no loop has a remainder."""

_RUNS_PER_THREAD = 16
"""Runs of centres per thread that _piece aims at, where runs of 512 or more allow it."""

_MAX_PIECE = 1024
"""Most centres per run (see _piece), and the row stride of the distance buffer: a constant stride
lets LLVM see a batch's distance rows as one range, which it checks for overlap with the tallies
once per loop instead of once per row."""


@functools.lru_cache(maxsize=32)
def _ring_offsets(width: int, half_max: int) -> np.ndarray:
    """Flat offsets dy·width + dx of the largest box, ring by ring: ring k ≥ 1 (max(|dy|, |dx|) = k)
    at [(2k - 1)², (2k + 1)²); the centre (ring 0) is left out."""
    dy, dx = np.mgrid[-half_max : half_max + 1, -half_max : half_max + 1].reshape(2, -1)
    ring = np.maximum(np.abs(dy), np.abs(dx))
    order = np.argsort(ring, kind="stable")[1:]
    return (dy * width + dx)[order].astype(np.int64)


def _aligned_empty(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on a 64-byte boundary, so that rows
    whose length is a multiple of 64 bytes start on one too (numpy aligns to 16 bytes only, and a
    vector load that straddles cache lines costs two)."""
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.empty(size + 64, np.uint8)
    skip = -raw.ctypes.data % 64
    return raw[skip : skip + size].view(dtype).reshape(shape)


def _run_buffers(threads: int, sides: int, dtype: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each thread's buffers for its runs of centres, uninitialised, in one allocation, each
    starting on a 64-byte boundary: 16-bit masses and 8-bit tallies (threads, sides,
    _MAX_PIECE), and the distances of a batch of offsets (threads, _BATCH · _MAX_PIECE) in the
    image's type (every length a multiple of 64 bytes)."""
    pieces, total = _run_buffer_layout(threads, sides, np.dtype(dtype))
    raw = _aligned_empty((total,), np.uint8)
    masses, tallies, distances = (raw[start:end].view(kind).reshape(shape)
                                  for start, end, kind, shape in pieces)
    return masses, tallies, distances


@functools.lru_cache(maxsize=32)
def _run_buffer_layout(threads: int, sides: int, dtype: np.dtype
                       ) -> tuple[tuple[tuple[int, int, np.dtype, tuple[int, ...]], ...], int]:
    """Where :func:`_run_buffers` puts each buffer in its allocation: (start, end, type, shape)
    of the masses, the tallies and the distances, and the bytes in all."""
    shapes = ((threads, sides, _MAX_PIECE), (threads, sides, _MAX_PIECE), (threads, _BATCH * _MAX_PIECE))
    kinds = (np.dtype(np.uint16), np.dtype(np.uint8), dtype)
    pieces, start = [], 0
    for shape, kind in zip(shapes, kinds, strict=True):
        end = start + int(np.prod(shape)) * kind.itemsize
        pieces.append((start, end, kind, shape))
        start = end
    return tuple(pieces), start


def _padded(planes: np.ndarray, margin: int) -> np.ndarray:
    """The (C, H·W) pixels of (C, H, W) planes (any strides: a view of an (H, W, C) image is
    gathered in the one copy) with ``margin`` zeros before and after each plane."""
    channels, height, width = planes.shape
    padded = np.zeros((channels, height * width + 2 * margin), planes.dtype)
    for channel in range(channels):
        padded[channel, margin : margin + height * width].reshape(height, width)[...] = planes[channel]
    return padded


@njit(cache=True, nogil=True)
def _rgb_distance(img, q, red, green, blue, pixel):  # pragma: no cover - compiled
    """max_c |img[c, q] - centre_c| of an RGB image, given the centre's channels (red, green, blue).

    ``pixel`` is the image's scalar type: casting each difference to it keeps the arithmetic in
    the pixels' width (numba would widen it to 64 bits, a quarter or eighth of the vector lanes).
    """
    red = pixel(max(img[0, q], red) - min(img[0, q], red))
    green = pixel(max(img[1, q], green) - min(img[1, q], green))
    blue = pixel(max(img[2, q], blue) - min(img[2, q], blue))
    return max(max(red, green), blue)


@njit(cache=True, nogil=True)
def _grey_distance(img, p, q, pixel):  # pragma: no cover - compiled
    """|img[0, q] - img[0, p]| of a grey image, in the pixels' type."""
    return pixel(max(img[0, q], img[0, p]) - min(img[0, q], img[0, p]))


# _distances and _tally are inlined where they are called (numba's IR inliner; LLVM left them as
# calls): as calls, each of a run's 1,960 passed some twenty arguments on the stack and the slices
# handed to _distances took and dropped a reference each (atomic); a run of 1024 centres cost
# 0.218 ms, now 0.207 (runs of 512: 0.125, now 0.112).
@njit(cache=True, nogil=True, inline="always")
def _distances(img, start, length, offsets, distance, pixel):  # pragma: no cover - compiled
    """distance[t · _MAX_PIECE + i] = colour distance between centre start + i and its neighbour at
    offsets[t], for the four offsets t < 4 and i < length.

    Four offsets share one pass: the centre's pixels are read once for all four (LLVM vectorises
    up to four; eight need more overlap checks than it makes). Indices are unsigned: numba then
    does not wrap negative ones around, which would stop LLVM vectorising the loop.
    """
    centre, stop, stride = np.uint64(start), np.uint64(length), np.uint64(_MAX_PIECE)
    near0, near1 = np.uint64(start + offsets[0]), np.uint64(start + offsets[1])
    near2, near3 = np.uint64(start + offsets[2]), np.uint64(start + offsets[3])
    if img.shape[0] == 3:
        for i in range(stop):
            p = centre + i
            red, green, blue = img[0, p], img[1, p], img[2, p]
            distance[i] = _rgb_distance(img, near0 + i, red, green, blue, pixel)
            distance[stride + i] = _rgb_distance(img, near1 + i, red, green, blue, pixel)
            distance[2 * stride + i] = _rgb_distance(img, near2 + i, red, green, blue, pixel)
            distance[3 * stride + i] = _rgb_distance(img, near3 + i, red, green, blue, pixel)
    else:
        for i in range(stop):
            p = centre + i
            distance[i] = _grey_distance(img, p, near0 + i, pixel)
            distance[stride + i] = _grey_distance(img, p, near1 + i, pixel)
            distance[2 * stride + i] = _grey_distance(img, p, near2 + i, pixel)
            distance[3 * stride + i] = _grey_distance(img, p, near3 + i, pixel)


@njit(cache=True, nogil=True, inline="always")
def _tally(distance, length, threshold, tally, j, unit):  # pragma: no cover - compiled
    """tally[j, i] += the number of the _BATCH distance rows with distance[t · _MAX_PIECE + i] ≤
    threshold, for i < length.

    ``unit`` is 1, passed in rather than written as a literal: LLVM then keeps each select as one
    masked vector add, where a literal 1 becomes a compare, a mask-to-vector move and a subtract.
    """
    for i in range(np.uint64(length)):
        count = tally[j, i]
        for t in range(_BATCH):
            count = count + unit if distance[t * _MAX_PIECE + i] <= threshold else count
        tally[j, i] = count


@njit(cache=True, nogil=True)
def _add_masses(  # pragma: no cover - compiled
    img, start, length, offsets, thresholds, ring_index, sides, rings, mass, tally, distance, pixel, unit
):
    """mass[j, s - start] = mass of the box of side sizes[j] centred on s, start ≤ s < start + length,
    for the first ``sides`` sides, whose boxes hold the rings 0..rings, in a zero-padded
    (C, margin + H·W + margin) image; ``length`` is a multiple of _LANES.

    Every offset of the rings 1..rings (``offsets``, ring by ring) is compared for the whole run at
    a time, eight at once: the offsets of ring k count for the sides j ≥ ring_index[k] whose threshold
    their distance meets. Up to _TALLY_BATCHES batches (248 offsets, of one or several rings) are
    tallied in 8 bits, which fill twice the vector lanes of the 16-bit masses, then added to them.
    Where a box does not fit around its centre the neighbour may wrap to another row or fall in the
    margin; the caller ignores those sides there, and every side's mass still counts at most r²
    offsets.
    """
    n = sides
    stop = np.uint64(length)
    mass[:n, :length] = 1  # the centre (ring 0) counts in every side
    batches, low = 0, n  # batches in the tallies, and the first side they hold
    for k in range(1, rings + 1):
        first = ring_index[k]
        begin = (2 * k - 1) ** 2 - 1  # ring k's 8k offsets, k batches
        for b in range(k):
            if batches == _TALLY_BATCHES:
                _add_tallies(mass, tally, low, n, stop)
                batches, low = 0, n
            if first < low:
                tally[first:low, :length] = 0
                low = first
            for t in range(0, _BATCH, 4):
                o = begin + _BATCH * b + t
                _distances(img, start, length, offsets[o : o + 4], distance[t * _MAX_PIECE :], pixel)
            for j in range(first, n):
                _tally(distance, length, thresholds[j], tally, j, unit)
            batches += 1
    _add_tallies(mass, tally, low, n, stop)


@njit(cache=True, nogil=True)
def _add_tallies(mass, tally, low, high, stop):  # pragma: no cover - compiled
    """mass[j, i] += tally[j, i] for low ≤ j < high and i < stop."""
    for j in range(low, high):
        for i in range(stop):
            mass[j, i] += tally[j, i]


@njit(cache=True, nogil=True, parallel=True)
def _add_mass_counts(  # pragma: no cover - compiled
    img, margin, width, height, sizes, starts, thresholds, ring_index, offsets, counts, masses, tallies,
    distances, piece, pixel, p_start, p_stop,
):
    """Add to counts[thread, starts[j] + m - 1] the boxes of side sizes[j] with mass m centred on the
    pixels p_start ≤ p < p_stop (row-major) of a zero-padded (C, margin + H·W + margin) image.

    The centres go in runs of ``piece`` (a multiple of _LANES), one run per parallel task; each
    thread counts into its own histogram with its own working arrays (masses, tallies, distances).
    """
    for run in prange(-(-(p_stop - p_start) // piece)):
        thread = get_thread_id()
        p0 = p_start + run * piece
        _count_run(
            img, margin, width, height, sizes, starts, thresholds, ring_index, offsets, counts[thread],
            masses[thread], tallies[thread], distances[thread], pixel, p0, min(p0 + piece, p_stop),
        )


@njit(cache=True, nogil=True)
def _count_run(  # pragma: no cover - compiled
    img, margin, width, height, sizes, starts, thresholds, ring_index, offsets, histogram, mass, tally,
    distance, pixel, p0, p1,
):
    """Add to histogram[starts[j] + m - 1] the boxes of side sizes[j] with mass m centred on the
    pixels p0 ≤ p < p1 (row-major, at most _MAX_PIECE of them) of a zero-padded
    (C, margin + H·W + margin) image, with the working arrays of one thread."""
    n = sizes.shape[0]
    halves = (sizes - 1) // 2
    unit = np.uint8(1)
    length = -(-(p1 - p0) // _LANES) * _LANES
    # Only the sides whose box fits around some centre of the run: near the top and bottom
    # edges the largest boxes, and their outer rings, fit nowhere in it.
    reach = 0
    for y in range(p0 // width, (p1 - 1) // width + 1):
        reach = max(reach, min(y, height - 1 - y))
    sides = np.searchsorted(halves, reach, side="right")
    _add_masses(
        img, margin + p0, length, offsets, thresholds, ring_index, sides, halves[sides - 1], mass, tally,
        distance, pixel, unit,
    )
    # Row by row, side by side: the centres whose box fits, and one side's histogram at a time.
    for y in range(p0 // width, (p1 - 1) // width + 1):
        row = y * width
        for j in range(n):
            half = halves[j]
            if half > min(y, height - 1 - y):
                break
            before = starts[j] - 1  # a mass m ≥ 1 goes to starts[j] + m - 1
            side = mass[j]
            for p in range(max(p0, row + half), min(p1, row + width - half)):
                histogram[before + side[p - p0]] += 1


def _mass_counts_numba(
    planes: np.ndarray, tables: _EntryTables, progress: ProgressCallback | None
) -> np.ndarray:
    """counts[_MassLayout.starts[j] + m - 1]: boxes of side sizes[j] with mass m in a planar (C, H, W)
    image of its own type (8-bit distances and thresholds fill twice the vector lanes of 16-bit
    ones), by the numba kernel, in PROGRESS_BANDS bands of centre rows with ``progress`` after
    each, else in one."""
    sizes = tables.sizes
    n = len(sizes)
    _, height, width = planes.shape
    half_max = (int(sizes[-1]) - 1) // 2
    bands = _bands(sizes, height, PROGRESS_BANDS if progress is not None else 1)
    # One histogram per thread, shared by every band.
    threads = get_num_threads()
    starts = _MassLayout.build(sizes).starts
    counts = np.zeros((threads, int(np.sum(sizes * sizes))), np.int64)
    masses, tallies, distances = _run_buffers(threads, n, planes.dtype)
    # Room for every neighbour of every centre of a run, the last run rounded up to _LANES centres.
    margin = half_max * (width + 1) + _LANES
    padded = _padded(planes, margin)
    offsets = _ring_offsets(width, half_max)
    thresholds = tables.thresholds.astype(planes.dtype)
    first, stop = bands[0][0], bands[-1][1]
    # Chunks of one run: under numba's TBB layer each goes to whichever thread is free. The
    # OpenMP layer (the one installed here) splits the runs into one block per thread whatever
    # the chunk size, so the edges' cheap runs, at both ends, fall to the first and last thread.
    with parallel_chunksize(1):
        for y0, y1 in bands:
            _add_mass_counts(
                padded, margin, width, height, sizes, starts, thresholds, tables.ring_index, offsets, counts,
                masses, tallies, distances, _piece(y1 - y0, width), planes.dtype.type, y0 * width, y1 * width,
            )
            if progress is not None:
                progress(y1 - first, stop - first)
    return counts.sum(axis=0)


# ---------------------------------------------------------------------------------------------------
# torch path: the same entry indices computed one offset (gliding box) or one row of offsets
# (percolation) at a time for a band of centre rows.


def _torch_device() -> Any:
    """CUDA when available, else the CPU; imports torch only when the torch path is used."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _centre_bands(
    rows: tuple[int, int], width: int, bytes_per_centre: int, budget: int | None = None
) -> list[tuple[int, int]]:
    """Bands [y0, y1) of the centre rows ``rows`` whose working arrays fit ``budget`` bytes
    (default _TORCH_WORKING_BYTES)."""
    step = max(1, (budget or _TORCH_WORKING_BYTES) // (width * bytes_per_centre))
    return [(y, min(y + step, rows[1])) for y in range(rows[0], rows[1], step)]


def _entry_offsets_torch(img: Any, tables: _EntryTables, band: tuple[int, int]) -> Any:
    """Yield (dy, dx, rows, cols, entry) for each offset of the largest box, entry over centres rows×cols.

    Centres whose neighbour at (dy, dx) falls outside the image are left out; their largest box is
    smaller than that offset's ring, so they never read it.
    """
    import torch

    _, height, width = img.shape
    half_max = (int(tables.sizes[-1]) - 1) // 2
    ring = tables.ring_index.tolist()
    colour = torch.from_numpy(tables.colour_index).to(img.device)
    cap = len(tables.colour_index) - 1
    for dy in range(-half_max, half_max + 1):
        rows = slice(max(band[0], -dy), min(band[1], height - dy))
        if rows.start >= rows.stop:
            continue
        for dx in range(-half_max, half_max + 1):
            cols = slice(max(0, -dx), min(width, width - dx))
            centre = img[:, rows, cols]
            neighbour = img[:, rows.start + dy : rows.stop + dy, cols.start + dx : cols.stop + dx]
            distance = (neighbour - centre).abs_().amax(dim=0).clamp_(max=cap).long()
            yield dy, dx, rows, cols, colour[distance].clamp_(min=ring[max(abs(dy), abs(dx))])


def _entry_rows_torch(img: Any, tables: _EntryTables, band: tuple[int, int]) -> Any:
    """Yield (dy, rows, entry) for each row offset dy of the largest box: entry[i, x, dx + half_max]
    (int16) is the entry index of offset (dy, dx) for centre (rows.start + i, x), ``n`` (never) where
    the neighbour falls outside the image; centres whose row neighbour falls outside are left out.
    One tensor operation covers a whole row of offsets."""
    import torch

    _, height, width = img.shape
    n = len(tables.sizes)
    half_max = (int(tables.sizes[-1]) - 1) // 2
    span = 2 * half_max + 1
    colour = torch.from_numpy(tables.colour_index).to(img.device)
    cap = len(tables.colour_index) - 1
    padded = torch.nn.functional.pad(img, (half_max, half_max))
    offsets = torch.arange(-half_max, half_max + 1, device=img.device)
    columns = torch.arange(width, device=img.device).view(-1, 1) + offsets
    outside = (columns < 0) | (columns >= width)
    ring_index = torch.from_numpy(tables.ring_index).to(img.device)
    for dy in range(-half_max, half_max + 1):
        rows = slice(max(band[0], -dy), min(band[1], height - dy))
        if rows.start >= rows.stop:
            continue
        window = padded[:, rows.start + dy : rows.stop + dy].unfold(2, span, 1)
        distance = (window - img[:, rows].unsqueeze(3)).abs_().amax(dim=0).clamp_(max=cap)
        ring = ring_index[torch.clamp(offsets.abs(), min=abs(dy))]
        entry = torch.maximum(colour[distance], ring).masked_fill_(outside, n)
        yield dy, rows, entry.to(torch.int16)


def _mass_counts_torch(planar: np.ndarray, tables: _EntryTables, rows: tuple[int, int]) -> np.ndarray:
    """Torch version of _mass_counts_numba, for the boxes centred on ``rows`` [y0, y1)."""
    import torch

    sizes = tables.sizes
    n = len(sizes)
    img = torch.from_numpy(planar.astype(np.int32)).to(_torch_device())
    _, height, width = img.shape
    counts = torch.zeros((n, int(sizes[-1]) ** 2 + 1), dtype=torch.int64, device=img.device)
    for band in _centre_bands(rows, width, 4 * (n + 1)):
        hist = torch.zeros((band[1] - band[0], width, n + 1), dtype=torch.int32, device=img.device)
        for _, _, rows, cols, entry in _entry_offsets_torch(img, tables, band):
            target = hist[rows.start - band[0] : rows.stop - band[0], cols]
            target.scatter_add_(2, entry.unsqueeze(2), torch.ones_like(entry, dtype=hist.dtype).unsqueeze(2))
        mass = hist.cumsum(dim=2)
        for j, r in enumerate(sizes.tolist()):
            half = (r - 1) // 2
            y0, y1 = max(band[0], half), min(band[1], height - half)
            if y0 < y1:
                region = mass[y0 - band[0] : y1 - band[0], half : width - half, j]
                counts[j] += torch.bincount(region.reshape(-1), minlength=counts.shape[1])
    return counts.cpu().numpy()


def _cluster_sums_torch(
    planar: np.ndarray, tables: _EntryTables, min_mass: np.ndarray, rows: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Torch version of the numba percolation kernel, for the boxes centred on ``rows`` [y0, y1):
    each band's entry maps, then their cluster statistics in batches of centres (see level_sums)."""
    import torch

    from services.features.percolation_torch import NODE_BYTES, level_sums

    sizes = tables.sizes
    n = len(sizes)
    halves = torch.from_numpy((sizes - 1) // 2)
    half_max = int(halves[-1])
    span = 2 * half_max + 1
    img = torch.from_numpy(planar.astype(np.int32)).to(_torch_device())
    _, height, width = img.shape
    budget = _torch_working_bytes(img.device)
    sums = torch.zeros((3, n), dtype=torch.int64, device=img.device)
    columns = torch.arange(width)
    for band in _centre_bands(rows, width, 3 * span * span, budget):
        entry = torch.full((band[1] - band[0], width, span, span), n, dtype=torch.int16, device=img.device)
        for dy, rows, values in _entry_rows_torch(img, tables, band):
            entry[rows.start - band[0] : rows.stop - band[0], :, dy + half_max] = values
        entry = entry.view(-1, span, span)
        # Sides whose box fits around each centre; 0 for the columns too close to an edge for any.
        centre_rows = torch.arange(*band)
        reach = torch.minimum(
            torch.minimum(centre_rows, height - 1 - centre_rows).clamp(max=half_max).view(-1, 1),
            torch.minimum(columns, width - 1 - columns).view(1, -1),
        )
        fits = torch.searchsorted(halves, reach.reshape(-1), right=True).to(img.device)
        # Batches of centres whose nodes and dense maps fit the working bytes.
        nodes = (entry < fits.view(-1, 1, 1)).view(len(fits), -1).sum(dim=1)
        running = np.cumsum(nodes.cpu().numpy() * NODE_BYTES + 16 * span * span)
        first = 0
        while first < len(running):
            spent = running[first - 1] if first else 0
            last = max(first + 1, int(np.searchsorted(running, spent + budget, side="right")))
            sums += level_sums(entry[first:last], fits[first:last], min_mass)
            first = last
    clusters, largest, percolating = sums.cpu().numpy()
    return clusters, largest, percolating


def _torch_working_bytes(device: Any) -> int:
    """Bytes of working arrays the torch path may hold: _TORCH_WORKING_BYTES, or on a GPU up to a
    quarter of its free memory."""
    import torch

    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return max(_TORCH_WORKING_BYTES, free // 4)
    return _TORCH_WORKING_BYTES
