"""Classical nuclei and cells on generated images with known truth."""

from __future__ import annotations

import functools
import threading

import numpy as np
import pytest
from scipy import ndimage as ndi

from labsight.errors import InvalidArgument
from labsight.segmentation_metrics import average_precision
from services.segmentation import cells

segment_nuclei = functools.partial(cells.segment_nuclei, method="classical")
segment_cells = functools.partial(cells.segment_cells, method="classical")

PIXEL_UM = 0.5
"""Generated nuclei are 10-13 µm across: 20-26 pixels."""


def _scene(shape: tuple[int, int], seed: int, *, pairs: int = 4, singles: int = 8,
           uneven: float = 0.0, noise: float = 0.03) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(nuclear stain in [0, 1], nucleus truth, cytoplasm signal in [0, 1]).

    Ellipses placed without overlap, ``pairs`` of them as touching twins (centres 0.9 of
    the summed radii apart); brightness varies per nucleus and, with ``uneven``, falls off
    across the image to 1 - uneven.
    """
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    truth = np.zeros(shape, np.int32)
    best = np.full(shape, np.inf)
    centres: list[tuple[float, float, float]] = []

    def free(r: float, c: float, radius: float) -> bool:
        inside = radius < r < shape[0] - radius and radius < c < shape[1] - radius
        return inside and all(np.hypot(r - r2, c - c2) > radius + q + 14 for r2, c2, q in centres)

    def place(r: float, c: float, a: float, b: float) -> None:
        angle = rng.uniform(0, np.pi)
        dr, dc = rows - r, cols - c
        u = (dr * np.cos(angle) + dc * np.sin(angle)) / a
        v = (-dr * np.sin(angle) + dc * np.cos(angle)) / b
        radius = np.hypot(u, v)
        take = (radius < 1) & (radius < best)
        truth[take] = truth.max() + 1
        best[take] = radius[take]

    attempts = 0
    while len(centres) < pairs + singles and attempts < 5000:
        attempts += 1
        a = rng.uniform(10, 13)
        r, c = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        twin = len(centres) < pairs
        reach = 2 * a if twin else a
        if not free(r, c, reach + 2):
            continue
        if twin:
            angle = rng.uniform(0, np.pi)
            step = 0.9 * a
            place(r + step * np.sin(angle), c + step * np.cos(angle), a, a * 0.9)
            place(r - step * np.sin(angle), c - step * np.cos(angle), a, a * 0.9)
        else:
            place(r, c, a, a * rng.uniform(0.7, 1.0))
        centres.append((r, c, reach))

    brightness = rng.uniform(0.5, 1.0, truth.max() + 1)
    brightness[0] = 0.0
    stain = brightness[truth]
    stain = ndi.gaussian_filter(stain, 1.0)
    light = 1.0 - uneven * cols / shape[1]
    stain = stain * light + 0.05 + rng.normal(0, noise, shape)
    near = ndi.distance_transform_edt(truth == 0) < 12
    cytoplasm = ndi.gaussian_filter(near * 0.6, 2.0) + 0.05 + rng.normal(0, noise, shape)
    return np.clip(stain, 0, 1), truth, np.clip(cytoplasm, 0, 1)


def _as(dtype: type, image: np.ndarray) -> np.ndarray:
    return np.round(image * np.iinfo(dtype).max).astype(dtype)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("seed", [1, 2])
def test_touching_nuclei_are_split_in_8_and_16_bit(dtype, seed):
    stain, truth, _ = _scene((256, 320), seed)
    labels = segment_nuclei(_as(dtype, stain), pixel_size_um=PIXEL_UM)
    assert labels.dtype == np.int32
    assert average_precision(labels, truth, 0.5) >= 0.9


def test_uneven_brightness_and_noise():
    stain, truth, _ = _scene((300, 300), 3, uneven=0.7, noise=0.06)
    labels = segment_nuclei(_as(np.uint16, stain), pixel_size_um=PIXEL_UM)
    assert average_precision(labels, truth, 0.5) >= 0.9


def test_sizes_are_physical_the_same_nuclei_at_half_the_pixel_size():
    stain, truth, _ = _scene((200, 240), 4)
    big = np.kron(stain, np.ones((2, 2)))
    labels = segment_nuclei(big.astype(np.float32), pixel_size_um=PIXEL_UM / 2)
    assert average_precision(labels, np.kron(truth, np.ones((2, 2), np.int32)), 0.5) >= 0.9
    # The same pixels at 8x the pixel size are nuclei ~100 µm across, over the maximum
    # area; at a fifth of it, ~2.4 µm across, under the minimum: none found either way.
    assert segment_nuclei(stain.astype(np.float32), pixel_size_um=PIXEL_UM * 8).max() == 0
    assert segment_nuclei(stain.astype(np.float32), pixel_size_um=PIXEL_UM / 5).max() == 0


def test_odd_non_square_sizes_keep_their_shape_and_number_ids_consecutively():
    stain, truth, _ = _scene((151, 263), 5, pairs=2, singles=5)
    for pixel_size in (PIXEL_UM, 0.08):  # 0.08: shrunk to the working scale and grown back
        labels = segment_nuclei(_as(np.uint8, stain), pixel_size_um=pixel_size)
        assert labels.shape == (151, 263)
        ids = np.unique(labels)
        assert np.array_equal(ids, np.arange(ids.size))


def test_cells_share_ids_with_their_nuclei():
    stain, truth, cytoplasm = _scene((240, 300), 6)
    nuclei, cells = segment_cells(_as(np.uint16, cytoplasm), _as(np.uint16, cytoplasm * 0.5),
                                  _as(np.uint16, stain), pixel_size_um=PIXEL_UM)
    assert nuclei.dtype == cells.dtype == np.int32
    assert average_precision(nuclei, truth, 0.5) >= 0.9
    assert np.array_equal(np.unique(cells), np.unique(nuclei))
    inside = nuclei > 0
    assert np.array_equal(cells[inside], nuclei[inside])
    cell_area = np.bincount(cells.ravel())[1:]
    nucleus_area = np.bincount(nuclei.ravel())[1:]
    assert np.all(cell_area > 1.5 * nucleus_area)  # grown over the cytoplasm


def test_nucleus_without_cytoplasm_is_its_own_cell():
    stain, _, _ = _scene((160, 160), 7, pairs=0, singles=3)
    dark = np.zeros(stain.shape, np.uint8)
    nuclei, cells = segment_cells(dark, dark, _as(np.uint8, stain), pixel_size_um=PIXEL_UM)
    assert nuclei.max() == 3
    assert np.array_equal(cells, nuclei)


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (64, 97)])
def test_all_zero_image_gives_empty_labels(shape):
    zero = np.zeros(shape, np.uint16)
    labels = segment_nuclei(zero)
    assert labels.dtype == np.int32 and labels.shape == shape and not labels.any()
    nuclei, cells = segment_cells(zero, zero, zero, pixel_size_um=PIXEL_UM)
    assert not nuclei.any() and not cells.any() and cells.dtype == np.int32


def test_threads_get_the_same_labels_as_one_call():
    scenes = [_scene((128, 160), seed, pairs=1, singles=3)[0] for seed in range(4)]
    expected = [segment_nuclei(s, pixel_size_um=PIXEL_UM) for s in scenes]
    results: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        results[i] = segment_nuclei(scenes[i % 4], pixel_size_um=PIXEL_UM)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(results[i], expected[i % 4]) for i in range(8))


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: segment_nuclei(np.zeros((4, 4, 3), np.uint8)), "nuclei"),
        (lambda: segment_nuclei(np.zeros((4, 4), np.int64)), "nuclei"),
        (lambda: segment_nuclei(np.full((4, 4), np.nan)), "nuclei"),
        (lambda: segment_nuclei(np.zeros((4, 4), np.uint8), pixel_size_um=0), "pixel_size_um"),
        (lambda: segment_nuclei(np.zeros((4, 4), np.uint8), method="magic"), "method"),
        (lambda: segment_cells(np.zeros((4, 4), np.uint8), np.zeros((4, 5), np.uint8),
                               np.zeros((4, 4), np.uint8)), "er"),
        (lambda: segment_cells(np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8),
                               np.zeros((3, 4), np.uint8)), "nuclei"),
        (lambda: segment_cells(np.zeros(4, np.uint8), np.zeros((4, 4), np.uint8),
                               np.zeros((4, 4), np.uint8)), "microtubules"),
    ],
)
def test_bad_input_names_the_argument(call, field):
    with pytest.raises(InvalidArgument, match=f"^{field}:"):
        call()
