"""The gliding box of a stack of tiles: every tile's numbers equal gliding_box's for it alone."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from services.features.fractal import DEFAULT_BOX_SIZES, gliding_box
from services.features.fractal_columns import fractal_columns, stack_fractal_columns
from services.features.fractal_stack import gliding_box_stack


def _tiles(shape: tuple[int, ...], dtype: type, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tiles = rng.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)
    tiles[0] //= 64  # a dim tile: other masses than its neighbours'
    return tiles


@pytest.mark.parametrize(("shape", "dtype", "sides"), [
    ((9, 64, 64, 3), np.uint8, DEFAULT_BOX_SIZES),
    ((5, 50, 45), np.uint16, [3, 5, 9]),
    ((3, 41, 41, 1), np.uint8, DEFAULT_BOX_SIZES),
    ((4, 20, 33, 3), np.uint16, [3]),
])
@pytest.mark.parametrize("threads", [1, 2])
def test_each_tile_of_a_stack_equals_its_gliding_box_alone(
    shape: tuple[int, ...], dtype: type, sides: object, threads: int
) -> None:
    tiles = _tiles(shape, dtype, seed=len(shape) + shape[0])
    before = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        stack = gliding_box_stack(tiles, sides)
    finally:
        numba.set_num_threads(before)
    assert len(stack) == len(tiles)
    for index, tile in enumerate(tiles):
        alone, mine = gliding_box(tile, sides, backend="numba"), stack.tile(index)
        np.testing.assert_array_equal(mine.lacunarity, alone.lacunarity)
        np.testing.assert_array_equal(mine.box_count, alone.box_count)
        assert mine.probability.keys() == alone.probability.keys()
        for side, probability in alone.probability.items():
            np.testing.assert_array_equal(mine.probability[side], probability)
        if len(alone.box_sizes) > 1:
            assert mine.fractal_dimension == alone.fractal_dimension
        else:
            assert np.isnan(mine.fractal_dimension.value) and np.isnan(alone.fractal_dimension.value)


def test_the_stack_columns_are_each_tiles_fractal_columns() -> None:
    tiles = _tiles((6, 48, 48, 3), np.uint8, seed=3)
    stack = gliding_box_stack(tiles, DEFAULT_BOX_SIZES)
    names, values = stack_fractal_columns(stack)
    for index, tile in enumerate(tiles):
        alone = fractal_columns(gliding_box(tile, DEFAULT_BOX_SIZES, backend="numba"))
        assert names == list(alone)
        np.testing.assert_array_equal(values[index], list(alone.values()))


def test_the_results_are_read_only() -> None:
    stack = gliding_box_stack(_tiles((2, 9, 9), np.uint8, seed=1), [3, 5])
    with pytest.raises(ValueError, match="read-only"):
        stack.lacunarity[0, 0] = 1.0


@pytest.mark.parametrize(("tiles", "sides", "message"), [
    (np.zeros((0, 9, 9), np.uint8), [3],
     r"non-empty \(N, H, W\) or \(N, H, W, C\) array, got shape \(0, 9, 9\)"),
    (np.zeros((9, 9), np.uint8), [3], r"got shape \(9, 9\)"),
    ([[[0]]], [3], "got list"),
    (np.zeros((2, 9, 9), np.float32), [3], "dtype uint8 or uint16, got float32"),
    (np.zeros((2, 9, 9, 4), np.uint8), [3], "4 channels"),
    (np.zeros((2, 9, 9), np.uint8), [3, 11], "box_sizes up to 11 need an image at least 11x11"),
    (np.zeros((2, 9, 9), np.uint8), [4], "odd and positive"),
])
def test_a_bad_stack_is_refused_naming_what_is_wrong(tiles: object, sides: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        gliding_box_stack(tiles, sides)  # type: ignore[arg-type]
