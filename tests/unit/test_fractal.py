"""Gliding box and percolation equal the seed's definition: hand cases, a slow re-statement, its outputs."""

from __future__ import annotations

import hashlib
import json
import tracemalloc
from collections import deque
from pathlib import Path

import numpy as np
import pytest

from services.features import fractal
from services.features.fractal import (
    PERCOLATION_THRESHOLD,
    GlidingBoxResult,
    PercolationResult,
    gliding_box,
    percolation,
)

SEED_REFERENCE = Path(__file__).resolve().parents[1] / "data" / "fractal_seed_reference_64.json"
SMALL_SIZES = (1, 3, 5, 7, 9, 11)


# --- a slow, loop-based re-statement of the definition --------------------------------------------


def _slow_clusters(on: np.ndarray) -> tuple[int, int]:
    """(number of 4-connected clusters, size of the largest) of a binary map, by breadth-first search."""
    seen = np.zeros_like(on)
    count, largest = 0, 0
    for start in zip(*np.nonzero(on), strict=True):
        if seen[start]:
            continue
        count += 1
        size = 0
        queue = deque([start])
        seen[start] = True
        while queue:
            y, x = queue.popleft()
            size += 1
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < on.shape[0] and 0 <= nx < on.shape[1] and on[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        largest = max(largest, size)
    return count, largest


def _slow_boxes(image: np.ndarray, r: int) -> list[np.ndarray]:
    """The binary map of every box of side r, centre by centre."""
    pixels = image.reshape(image.shape[0], image.shape[1], -1).astype(np.int64)
    threshold = r * (257 if image.dtype == np.uint16 else 1)
    h = (r - 1) // 2
    maps = []
    for y in range(h, pixels.shape[0] - h):
        for x in range(h, pixels.shape[1] - h):
            box = pixels[y - h : y + h + 1, x - h : x + h + 1]
            maps.append(np.abs(box - pixels[y, x]).max(axis=2) <= threshold)
    return maps


def _slow_gliding_box(image: np.ndarray, sizes: tuple[int, ...]) -> dict[str, object]:
    probability, lacunarity, box_count = {}, [], []
    for r in sizes:
        masses = [int(on.sum()) for on in _slow_boxes(image, r)]
        p = np.array([masses.count(m) for m in range(1, r * r + 1)]) / len(masses)
        m = np.arange(1, r * r + 1)
        first, second = np.sum(m * p), np.sum(m * m * p)
        probability[r] = p
        lacunarity.append((second - first**2) / first**2)
        box_count.append(np.sum(p / m))
    return {"probability": probability, "lacunarity": lacunarity, "box_count": box_count}


def _slow_percolation(image: np.ndarray, sizes: tuple[int, ...]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"cluster_count": [], "largest_cluster_ratio": [], "percolating_ratio": []}
    for r in sizes:
        maps = _slow_boxes(image, r)
        found = [_slow_clusters(on) for on in maps]
        out["cluster_count"].append(np.mean([c for c, _ in found]))
        out["largest_cluster_ratio"].append(np.mean([big / (r * r) for _, big in found]))
        out["percolating_ratio"].append(np.mean([on.sum() / (r * r) >= PERCOLATION_THRESHOLD for on in maps]))
    return out


def _assert_matches_slow(image: np.ndarray, sizes: tuple[int, ...]) -> None:
    boxes = gliding_box(image, sizes)
    expected = _slow_gliding_box(image, sizes)
    for r in sizes:
        np.testing.assert_allclose(boxes.probability[r], expected["probability"][r], rtol=0, atol=1e-15)
    np.testing.assert_allclose(boxes.lacunarity, expected["lacunarity"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(boxes.box_count, expected["box_count"], rtol=0, atol=1e-12)
    found = percolation(image, sizes)
    for name, values in _slow_percolation(image, sizes).items():
        np.testing.assert_allclose(getattr(found, name), values, rtol=0, atol=1e-12, err_msg=name)


def _random(shape: tuple[int, ...], low: int, high: int, dtype: type, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(low, high, shape).astype(dtype)


# --- hand-computed cases ----------------------------------------------------------------------------

FOUR_BY_FOUR = np.array(
    [[10, 10, 10, 50], [10, 12, 20, 10], [10, 13, 10, 10], [90, 10, 10, 10]], dtype=np.uint8
)


def test_four_by_four_counts_only_boxes_inside_the_image() -> None:
    # Centres (1,1), (1,2), (2,1), (2,2) have masses 8, 1, 7, 8 at threshold 3.
    boxes = gliding_box(FOUR_BY_FOUR, [3])
    expected = np.zeros(9)
    expected[[0, 6, 7]] = [0.25, 0.25, 0.5]
    np.testing.assert_array_equal(boxes.probability[3], expected)
    assert boxes.lacunarity[0] == pytest.approx((44.5 - 36) / 36, abs=1e-15)
    assert boxes.box_count[0] == pytest.approx(0.25 + 0.25 / 7 + 0.5 / 8, abs=1e-15)


def test_four_by_four_percolation() -> None:
    found = percolation(FOUR_BY_FOUR, [3])
    assert found.cluster_count.tolist() == [1.0]
    assert found.largest_cluster_ratio[0] == pytest.approx(24 / 36, abs=1e-15)
    assert found.percolating_ratio.tolist() == [0.75]


def test_centre_always_counts() -> None:
    image = np.full((3, 3), 255, dtype=np.uint8)
    image[1, 1] = 0
    boxes = gliding_box(image, [3])
    assert boxes.probability[3][0] == 1.0
    assert boxes.box_count.tolist() == [1.0]
    assert boxes.lacunarity.tolist() == [0.0]


def test_threshold_is_inclusive_and_uses_the_largest_channel_difference() -> None:
    image = np.full((3, 3, 3), 100, dtype=np.uint8)
    image[0, 0] = (103, 100, 100)  # difference 3: counts
    image[0, 1] = (100, 104, 100)  # 4 in one channel: does not
    image[0, 2] = (97, 97, 97)  # 3 in every channel: counts
    image[1, 0] = (100, 100, 96)  # 4: does not
    boxes = gliding_box(image, [1, 3])
    assert boxes.probability[1].tolist() == [1.0]
    assert boxes.probability[3][6] == 1.0


def test_sixteen_bit_threshold_is_257_times_the_side() -> None:
    image = np.full((3, 3), 1000, dtype=np.uint16)
    image[0, 0] = 1000 + 3 * 257
    image[2, 2] = 1000 + 3 * 257 + 1
    assert gliding_box(image, [3]).probability[3][7] == 1.0


def test_clusters_are_four_connected() -> None:
    # Centre and corners pass, edges fail: five single-pixel clusters under 4-connectivity.
    image = np.array([[100, 0, 100], [0, 100, 0], [100, 0, 100]], dtype=np.uint8)
    found = percolation(image, [3])
    assert found.cluster_count.tolist() == [5.0]
    assert found.largest_cluster_ratio.tolist() == [1 / 9]
    assert found.percolating_ratio.tolist() == [0.0]


def test_percolation_is_a_mass_fraction_test() -> None:
    # Six of nine pixels (0.667 >= 0.59275) percolate without spanning the box; five (0.556) do not.
    six = np.array([[100, 100, 0], [100, 100, 0], [100, 100, 0]], dtype=np.uint8)
    five = six.copy()
    five[2, 0] = 0
    assert percolation(six, [3]).percolating_ratio.tolist() == [1.0]
    assert percolation(five, [3]).percolating_ratio.tolist() == [0.0]


def test_uniform_image_has_dimension_two() -> None:
    boxes = gliding_box(np.full((41, 41, 3), 7, dtype=np.uint8))
    np.testing.assert_allclose(boxes.box_count, 1.0 / np.arange(3, 42, 2) ** 2, rtol=1e-15)
    assert boxes.fractal_dimension.value == pytest.approx(2.0, abs=1e-12)
    assert (boxes.fractal_dimension.r_min, boxes.fractal_dimension.r_max) == (3, 41)
    assert boxes.fractal_dimension.r_squared == pytest.approx(1.0, abs=1e-12)


def test_single_box_size_has_no_dimension() -> None:
    fit = gliding_box(np.zeros((5, 5), dtype=np.uint8), [3]).fractal_dimension
    assert np.isnan(fit.value) and np.isnan(fit.r_squared)
    assert (fit.r_min, fit.r_max) == (3, 3)


def test_results_are_read_only() -> None:
    boxes = gliding_box(FOUR_BY_FOUR, [1, 3])
    with pytest.raises(ValueError):
        boxes.lacunarity[0] = 1.0
    with pytest.raises(ValueError):
        boxes.probability[3][0] = 1.0


# --- random images against the slow re-statement ----------------------------------------------------


@pytest.mark.parametrize(
    "image",
    [
        _random((14, 17), 100, 112, np.uint8, 1),
        _random((15, 13, 3), 90, 110, np.uint8, 2),
        _random((13, 14, 3), 0, 256, np.uint8, 3),
        _random((16, 12, 1), 30000, 33000, np.uint16, 4),
        _random((12, 15, 3), 20000, 25000, np.uint16, 5),
    ],
    ids=["grey", "rgb-low-contrast", "rgb-full-range", "grey-uint16", "rgb-uint16"],
)
def test_random_images_match_the_slow_restatement(image: np.ndarray) -> None:
    _assert_matches_slow(image, SMALL_SIZES)


def test_uneven_box_sizes_match_the_slow_restatement() -> None:
    _assert_matches_slow(_random((19, 16, 3), 60, 80, np.uint8, 6), (3, 9, 15))


def test_grey_with_a_channel_axis_equals_grey() -> None:
    grey = _random((12, 12), 0, 30, np.uint8, 7)
    a, b = gliding_box(grey, SMALL_SIZES), gliding_box(grey[..., None], SMALL_SIZES)
    np.testing.assert_array_equal(a.lacunarity, b.lacunarity)
    np.testing.assert_array_equal(
        percolation(grey, [3]).cluster_count, percolation(grey[..., None], [3]).cluster_count
    )


def test_uint8_scaled_to_uint16_gives_the_same_numbers() -> None:
    image = _random((20, 18, 3), 40, 90, np.uint8, 8)
    wide = image.astype(np.uint16) * 257
    a, b = gliding_box(image, SMALL_SIZES), gliding_box(wide, SMALL_SIZES)
    np.testing.assert_array_equal(a.lacunarity, b.lacunarity)
    np.testing.assert_array_equal(a.box_count, b.box_count)
    p, q = percolation(image, SMALL_SIZES), percolation(wide, SMALL_SIZES)
    np.testing.assert_array_equal(p.cluster_count, q.cluster_count)
    np.testing.assert_array_equal(p.largest_cluster_ratio, q.largest_cluster_ratio)


# --- the seed's own outputs -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seed_reference() -> dict:
    return json.loads(SEED_REFERENCE.read_text())


@pytest.fixture(scope="module")
def seed_image(seed_reference: dict) -> np.ndarray:
    rs = np.random.RandomState(7)
    yy, xx = np.mgrid[0:64, 0:64]
    base = np.where(((xx // 8) + (yy // 8)) % 2 == 0, 60, 160)
    image = (base[..., None] + rs.randint(0, 16, size=(64, 64, 3)) + np.array([0, 10, 20])).astype(np.uint8)
    assert hashlib.sha256(image.tobytes()).hexdigest() == seed_reference["image_sha256_of_raw_bytes"]
    return image


def test_gliding_box_equals_the_seed(seed_reference: dict, seed_image: np.ndarray) -> None:
    boxes = gliding_box(seed_image)
    assert boxes.box_sizes.tolist() == seed_reference["box_sizes"]
    np.testing.assert_allclose(boxes.lacunarity, seed_reference["lacunarity"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(boxes.box_count, seed_reference["box_count_N"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        boxes.probability[3], seed_reference["probability_r3_m1_to_9"], rtol=0, atol=1e-12
    )
    np.testing.assert_allclose(
        boxes.probability[5], seed_reference["probability_r5_m1_to_25"], rtol=0, atol=1e-12
    )


def test_percolation_equals_the_seed(seed_reference: dict, seed_image: np.ndarray) -> None:
    found = percolation(seed_image)
    expected = seed_reference["percolation_r3_to_41"]
    np.testing.assert_allclose(found.cluster_count, expected["avg_cluster_count"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        found.largest_cluster_ratio, expected["avg_biggest_cluster_area"], rtol=0, atol=1e-12
    )
    np.testing.assert_allclose(found.percolating_ratio, expected["percolation_box_ratio"], rtol=0, atol=1e-12)


# --- arguments refused at the door ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "sizes", "message"),
    [
        (np.zeros((5, 5), np.float32), [3], "image must have dtype uint8 or uint16"),
        (np.zeros((5, 5), bool), [3], "image must have dtype uint8 or uint16"),
        (np.zeros((5, 5), np.int32), [3], "image must have dtype uint8 or uint16"),
        ([[0, 0], [0, 0]], [1], "image must be a numpy array"),
        (np.zeros(5, np.uint8), [3], "image must have shape"),
        (np.zeros((5, 5, 3, 1), np.uint8), [3], "image must have shape"),
        (np.zeros((5, 5, 2), np.uint8), [3], "image must have shape"),
        (np.zeros((5, 5, 4), np.uint8), [3], "image has 4 channels"),
        (np.zeros((0, 5), np.uint8), [3], "image is empty"),
        (np.zeros((5, 2), np.uint8), [3], "need an image at least 3x3"),
        (np.zeros((9, 9), np.uint8), [3, 11], "need an image at least 11x11"),
        (np.zeros((9, 9), np.uint8), [4], "box_sizes must be odd and positive"),
        (np.zeros((9, 9), np.uint8), [0, 3], "box_sizes must be odd and positive"),
        (np.zeros((9, 9), np.uint8), [-3], "box_sizes must be odd and positive"),
        (np.zeros((9, 9), np.uint8), [], "box_sizes must be a non-empty sequence of integers"),
        (np.zeros((9, 9), np.uint8), [3.0], "box_sizes must be a non-empty sequence of integers"),
        (np.zeros((9, 9), np.uint8), 3, "box_sizes must be an iterable"),
        (np.zeros((9, 9), np.uint8), [5, 3], "box_sizes must be strictly increasing"),
        (np.zeros((9, 9), np.uint8), [3, 3], "box_sizes must be strictly increasing"),
        (np.zeros((9, 9), np.uint8), [257], "box_sizes must be at most 255"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(image: object, sizes: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        gliding_box(image, sizes)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        percolation(image, sizes)  # type: ignore[arg-type]


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="backend must be"):
        gliding_box(FOUR_BY_FOUR, [3], backend="gpu")  # type: ignore[arg-type]


# --- the torch path ---------------------------------------------------------------------------------


def _assert_same(a: GlidingBoxResult | PercolationResult, b: GlidingBoxResult | PercolationResult) -> None:
    for name in ("lacunarity", "box_count", "cluster_count", "largest_cluster_ratio", "percolating_ratio"):
        if hasattr(a, name):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    if isinstance(a, GlidingBoxResult) and isinstance(b, GlidingBoxResult):
        for r in a.box_sizes.tolist():
            np.testing.assert_array_equal(a.probability[r], b.probability[r])
        assert a.fractal_dimension == b.fractal_dimension


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_the_numba_paths_copy_the_image_once(dtype: type) -> None:
    """The gliding box gathers the image once into the zero-padded planes its kernel reads, and
    percolation once into contiguous planes (its flat pixels are the image itself): working
    memory about the image's size. While the planes went through uint16 and back it was four
    times (a 4000² RGB uint8 image: 183 MiB beyond the image, now 46)."""
    image = np.random.default_rng(3).integers(0, 200, (600, 700, 3)).astype(dtype)
    for compute in (gliding_box, percolation):
        compute(image[:40, :40], (3, 5), backend="numba")  # compiled and cached outside the count
        tracemalloc.start()
        try:
            compute(image, (3, 5), backend="numba")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 1.5 * image.nbytes, f"{compute.__name__}: {peak} bytes for {image.nbytes}"


@pytest.mark.parametrize(
    "image",
    [_random((17, 21, 3), 80, 110, np.uint8, 9), _random((19, 16), 10000, 14000, np.uint16, 10)],
    ids=["rgb", "grey-uint16"],
)
def test_torch_path_equals_numba_path(image: np.ndarray) -> None:
    pytest.importorskip("torch")
    sizes = (1, 3, 5, 9)
    _assert_same(gliding_box(image, sizes, backend="torch"), gliding_box(image, sizes, backend="numba"))
    _assert_same(percolation(image, sizes, backend="torch"), percolation(image, sizes, backend="numba"))


def test_torch_path_in_bands_and_batches_equals_numba_path(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    monkeypatch.setattr(fractal, "_TORCH_WORKING_BYTES", 4_000)
    image = _random((23, 18, 3), 50, 75, np.uint8, 11)
    sizes = (3, 7, 11)
    _assert_same(gliding_box(image, sizes, backend="torch"), gliding_box(image, sizes, backend="numba"))
    _assert_same(percolation(image, sizes, backend="torch"), percolation(image, sizes, backend="numba"))


# --- parallel tasks, the serial path and the compile cache ------------------------------------------


def _ties(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """An image whose colour distances often equal a threshold exactly (values 3, 5, 7 apart)."""
    return np.random.default_rng(seed).choice(np.array([50, 53, 55, 57, 60], np.uint8), shape)


def test_parallel_tasks_equal_one_thread_and_the_slow_restatement_on_ties() -> None:
    numba = pytest.importorskip("numba")
    image = _ties((41, 37, 3), 12)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        serial = percolation(image, SMALL_SIZES)
    finally:
        numba.set_num_threads(threads)
    parallel = percolation(image, SMALL_SIZES)
    _assert_same(parallel, serial)
    for name, values in _slow_percolation(image, SMALL_SIZES).items():
        np.testing.assert_allclose(getattr(parallel, name), values, rtol=0, atol=1e-12, err_msg=name)


def test_runs_that_start_mid_row_on_any_thread_count_equal_the_slow_restatement() -> None:
    """A 70x60 image's 4,080 centres of the smallest box go in runs of 512 (the least a run holds)
    that begin and end inside rows, the last one short; the threads share them as they will."""
    numba = pytest.importorskip("numba")
    image = _ties((70, 60, 3), 14)
    sizes = (3, 7, 11, 21)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        serial = gliding_box(image, sizes, backend="numba")
    finally:
        numba.set_num_threads(threads)
    parallel = gliding_box(image, sizes, backend="numba")
    _assert_same(parallel, serial)
    expected = _slow_gliding_box(image, sizes)
    for r in sizes:
        np.testing.assert_allclose(parallel.probability[r], expected["probability"][r], rtol=0, atol=1e-15)
    np.testing.assert_allclose(parallel.lacunarity, expected["lacunarity"], rtol=0, atol=1e-12)


def test_torch_path_equals_numba_path_on_ties() -> None:
    pytest.importorskip("torch")
    image = _ties((23, 26, 3), 13)
    sizes = (3, 5, 9, 11)
    _assert_same(percolation(image, sizes, backend="torch"), percolation(image, sizes, backend="numba"))


def test_warm_up_compiles_the_kernels_for_both_pixel_types() -> None:
    from services.features.percolation_numba import cluster_sums

    fractal.warm_up()
    compiled = {str(signature[0].dtype) for signature in cluster_sums.signatures}
    assert {"uint8", "uint16"} <= compiled


def test_mass_layouts_of_big_boxes_are_built_each_time_not_kept() -> None:
    # Every odd side to 255 takes 43 MiB; 32 such size sets stayed in the cache for good.
    cached = fractal._cached_mass_layout.cache_info().currsize
    big = np.arange(3, 256, 2)
    layout = fractal._MassLayout.build(big)
    assert fractal._cached_mass_layout.cache_info().currsize == cached
    assert len(layout.masses) == int((big**2).sum()) > fractal.CACHED_MASS_ENTRIES
    assert layout.starts[-1] == len(layout.masses) - 255**2
    np.testing.assert_array_equal(layout.masses[layout.starts[1] : layout.starts[1] + 3], [1, 2, 3])
    small = fractal._MassLayout.build(np.arange(3, 42, 2))
    assert fractal._MassLayout.build(np.arange(3, 42, 2)) is small  # the default sides: kept
