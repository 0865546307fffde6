"""The numba gliding box counts every box's mass exactly: against a direct numpy count, on the
shapes its vectorised runs, rings and tallies must handle (widths not a multiple of the vector,
boxes whose rings overflow one 8-bit tally, 16-bit pixels, several threads, progress bands)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from services.features.fractal import gliding_box


def _direct_counts(image: np.ndarray, r: int) -> np.ndarray:
    """Boxes of side r with mass m = 1..r², each box's mass counted pixel by pixel in numpy."""
    pixels = image.reshape(image.shape[0], image.shape[1], -1).astype(np.int64)
    threshold = r * (257 if image.dtype == np.uint16 else 1)
    h = (r - 1) // 2
    height, width = pixels.shape[:2]
    centres = pixels[h : height - h, h : width - h]
    mass = np.zeros(centres.shape[:2], np.int64)
    for dy in range(-h, h + 1):
        for dx in range(-h, h + 1):
            near = pixels[h + dy : height - h + dy, h + dx : width - h + dx]
            mass += np.abs(near - centres).max(axis=2) <= threshold
    return np.bincount(mass.ravel(), minlength=r * r + 1)[1:]


def _assert_exact(image: np.ndarray, sizes: tuple[int, ...], **options: object) -> None:
    boxes = gliding_box(image, sizes, backend="numba", **options)  # type: ignore[arg-type]
    height, width = image.shape[:2]
    for r in sizes:
        counts = _direct_counts(image, r)
        total = (height - r + 1) * (width - r + 1)
        assert counts.sum() == total
        np.testing.assert_array_equal(boxes.probability[r], counts / total, err_msg=f"r = {r}")


def _clustered(shape: tuple[int, ...], dtype: type, seed: int) -> np.ndarray:
    """Pixels a few levels apart, so that many distances fall on or near a threshold."""
    rng = np.random.default_rng(seed)
    levels = np.array([40, 43, 45, 47, 52, 60, 90], np.int64)
    scale = 257 if dtype == np.uint16 else 1
    return (rng.choice(levels, shape) * scale).astype(dtype)


@pytest.mark.parametrize(
    ("shape", "sizes"),
    [
        ((13, 9, 3), (1, 3, 5, 7, 9)),  # fewer centres than one vector
        ((70, 67, 3), (3, 5, 11, 21, 41)),  # a width that is not a multiple of 64
        ((45, 130), (3, 7, 25, 43)),  # grey, more centres per row than one vector
        ((83, 71, 1), (5, 9, 13)),
    ],
)
def test_random_images_match_a_direct_count(shape: tuple[int, ...], sizes: tuple[int, ...]) -> None:
    _assert_exact(_clustered(shape, np.uint8, 1), sizes)
    full_range = np.random.default_rng(2).integers(0, 256, shape, dtype=np.uint8)
    _assert_exact(full_range, sizes)


def test_boxes_whose_rings_overflow_one_eight_bit_tally() -> None:
    # Ring k holds 8k offsets; from k = 32 (side 65) one ring is more than 255 of them.
    image = _clustered((75, 72, 3), np.uint8, 3)
    _assert_exact(image, (3, 63, 65, 67, 69))
    _assert_exact(np.zeros((69, 70), np.uint8), (65, 69))


def test_sixteen_bit_pixels_match_a_direct_count() -> None:
    _assert_exact(_clustered((40, 37, 3), np.uint16, 4), (3, 5, 9, 17, 33))
    wide = np.random.default_rng(5).integers(0, 65536, (29, 33), dtype=np.uint16)
    _assert_exact(wide, (1, 3, 11, 29))


def test_threads_and_progress_bands_give_the_same_counts() -> None:
    numba = pytest.importorskip("numba")
    image = _clustered((97, 101, 3), np.uint8, 6)
    sizes = (3, 5, 9, 21, 41)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        _assert_exact(image, sizes)
    finally:
        numba.set_num_threads(threads)
    _assert_exact(image, sizes)
    _assert_exact(image, sizes, progress=lambda done, rows: None)


def test_concurrent_callers_each_get_their_own_counts() -> None:
    # Each call keeps one histogram per thread of its own parallel region: calls from several
    # Python threads at once (a server's) must not share them.
    images = [_clustered((60, 58, 3), np.uint8, seed) for seed in (7, 8, 9, 10)]
    sizes = (3, 7, 15, 31)
    expected = [gliding_box(image, sizes, backend="numba") for image in images]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(3):
            found = list(pool.map(lambda image: gliding_box(image, sizes, backend="numba"), images))
            for got, want in zip(found, expected, strict=True):
                for r in sizes:
                    np.testing.assert_array_equal(got.probability[r], want.probability[r])
