"""HPA segmentation around its networks: post-processing on class maps of known answer, sizes, inputs."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

from labsight.errors import InvalidArgument
from services.segmentation.hpa import (
    ServedNetwork,
    label_cells,
    label_nuclei,
    segment_cells_hpa,
    segment_nuclei_hpa,
)
from services.segmentation.models.hpa_unet import MEAN, STD


def _class_map(interior: np.ndarray, border: np.ndarray) -> np.ndarray:
    """(H, W, 3) probabilities: background, border, interior."""
    return np.stack([1 - interior - border, border, interior], axis=-1).astype(np.float32)


def _disc(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    rows, cols = np.indices(shape)
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def _touching_nuclei(with_border: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two overlapping discs on a 151×203 map at 0.08 µm, with border on their rim and on
    their bisector (interior still 0.45 there, so the mask alone joins them), and a 4.5 µm² speck.

    Returns the class map and the true halves left and right of the bisector.
    """
    shape = (151, 203)
    union = _disc(shape, (75, 80), 40) | _disc(shape, (75, 140), 40)
    cols = np.indices(shape)[1]
    rim = union & ~(_disc(shape, (75, 80), 38) | _disc(shape, (75, 140), 38))
    band = union & ((np.abs(cols - 110) <= 1) | rim)
    interior = np.where(union, 0.9, 0.0)
    border = np.zeros(shape)
    if with_border:
        interior[band] = 0.45
        border[band] = 0.5
    interior[_disc(shape, (20, 180), 15)] = 0.9
    return _class_map(interior, border), union & (cols < 110), union & (cols > 110)


def test_border_class_splits_touching_nuclei() -> None:
    probabilities, left, right = _touching_nuclei(with_border=True)
    labels = label_nuclei(probabilities, pixel_size_um=0.08)
    assert labels.dtype == np.int32
    assert labels.shape == (151, 203)
    assert sorted(np.unique(labels)) == [0, 1, 2]
    by_half = sorted((_iou(labels == i, left), _iou(labels == i, right)) for i in (1, 2))
    assert by_half[0][1] > 0.9 and by_half[1][0] > 0.9
    merged = label_nuclei(_touching_nuclei(with_border=False)[0], pixel_size_um=0.08)
    assert merged.max() == 1


def test_size_limits_are_physical_so_shrunk_images_keep_their_nuclei() -> None:
    probabilities, left, right = _touching_nuclei(with_border=True)
    shrunk = cv2.resize(probabilities, (203 // 4, 151 // 4), interpolation=cv2.INTER_AREA)
    labels = label_nuclei(shrunk, pixel_size_um=0.32)
    # About 290 pixels each: the original's 2500-pixel limit would have dropped both.
    assert labels.max() == 2
    assert all(200 < (labels == i).sum() < 2500 for i in (1, 2))


def test_labels_do_not_wrap_above_255() -> None:
    shape = (300, 400)
    interior = np.zeros(shape)
    for row in range(15):
        for col in range(20):
            interior[_disc(shape, (10 + 20 * row, 10 + 20 * col), 8)] = 0.9
    labels = label_nuclei(_class_map(interior, np.zeros(shape)), pixel_size_um=0.32)
    assert labels.dtype == np.int32
    assert labels.max() == 300
    assert len(np.unique(labels)) == 301


def test_cells_grow_from_their_nuclei_and_share_their_ids() -> None:
    shape = (221, 263)  # odd, not square
    rows, cols = np.indices(shape)
    body = (rows >= 30) & (rows < 150)
    cell_a = body & (cols >= 20) & (cols < 129)
    cell_b = body & (cols >= 131) & (cols < 240)
    orphan = (rows >= 165) & (rows < 215) & (cols >= 20) & (cols < 140)  # no nucleus: not a cell
    interior = np.where(cell_a | cell_b | orphan, 0.8, 0.0)
    border = np.where(body & (cols >= 129) & (cols < 131), 0.9, 0.0)
    cell_map = _class_map(interior, border)
    nuclei_true = [_disc(shape, (90, 75), 32), _disc(shape, (90, 185), 32)]
    nuclei_map = _class_map(np.where(nuclei_true[0] | nuclei_true[1], 0.9, 0.0), np.zeros(shape))

    nuclei, cells = label_cells(nuclei_map, cell_map, pixel_size_um=0.08)
    assert nuclei.dtype == cells.dtype == np.int32
    assert nuclei.shape == cells.shape == shape
    assert sorted(np.unique(cells)) == [0, 1, 2]
    assert not cells[orphan].any()
    for true_cell, true_nucleus in zip((cell_a, cell_b), nuclei_true, strict=True):
        cell_id = np.bincount(cells[true_cell]).argmax()
        assert cell_id > 0
        assert _iou(cells == cell_id, true_cell) > 0.9
        assert _iou(nuclei == cell_id, true_nucleus) > 0.9
    assert ((nuclei == 0) | (nuclei == cells)).all()
    assert set(np.unique(nuclei)) == set(np.unique(cells))


class _ThresholdNet:
    """Stands in for an HPA network: interior where input ``channel``'s pixels exceed 0.25.

    Records the batches it is given.
    """

    def __init__(self, channel: int) -> None:
        self.channel = channel
        self.batches: list[np.ndarray] = []

    def run(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append(batch)
        value = batch[:, self.channel] * STD[self.channel] + MEAN[self.channel]
        interior = 40 * (value - 0.25)
        return np.stack([-interior, np.full_like(interior, -20), interior], axis=1)


def _two_nuclei_image() -> np.ndarray:
    """A 301×457 8-bit image (odd, not square) of two bright discs at 0.08 µm."""
    shape = (301, 457)
    image = np.full(shape, 8, np.uint8)
    image[_disc(shape, (120, 130), 60) | _disc(shape, (180, 330), 60)] = 160
    return image


def test_any_size_and_bit_depth_comes_back_at_input_size() -> None:
    image8 = _two_nuclei_image()
    engine = _ThresholdNet(0)
    labels8 = segment_nuclei_hpa(image8, pixel_size_um=0.08, engine=engine)
    # 301×457 shrunk by 4 is 75×114, padded 32 before and to a multiple of 32 after.
    assert engine.batches[0].shape == (1, 3, 128, 160)
    centre = engine.batches[0][0, :, 32 + 30, 32 + 32]
    assert centre == pytest.approx((160 / 255 - np.asarray(MEAN)) / np.asarray(STD), abs=0.02)
    assert labels8.shape == image8.shape and labels8.dtype == np.int32
    assert labels8.max() == 2
    for (row, col) in ((120, 130), (180, 330)):
        nucleus = labels8 == labels8[row, col]
        assert np.argwhere(nucleus).mean(axis=0) == pytest.approx((row, col), abs=2)
        assert nucleus.sum() == pytest.approx(np.pi * 60**2, rel=0.1)
    labels16 = segment_nuclei_hpa(image8.astype(np.uint16) * 257, pixel_size_um=0.08,
                                  engine=_ThresholdNet(0))
    assert np.array_equal(labels16, labels8)


def test_concurrent_calls_share_nothing() -> None:
    images = [_two_nuclei_image(), _two_nuclei_image()[:250, :300], _two_nuclei_image().T.copy()]
    expected = [segment_nuclei_hpa(image, engine=_ThresholdNet(0)) for image in images]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda i: segment_nuclei_hpa(images[i % 3], engine=_ThresholdNet(0)),
                            range(12)))
    for i, labels in enumerate(got):
        assert np.array_equal(labels, expected[i % 3])


def test_cell_network_gets_red_yellow_blue() -> None:
    shape = (301, 457)
    blue = _two_nuclei_image()
    red = np.zeros(shape, np.uint16)
    red[_disc(shape, (120, 130), 100)] = 50000
    red[_disc(shape, (180, 340), 100) & ~_disc(shape, (120, 130), 110)] = 50000
    yellow = np.full(shape, 30000, np.uint16)
    cell_net = _ThresholdNet(0)
    nuclei, cells = segment_cells_hpa(red, yellow, blue.astype(np.uint16) * 257, pixel_size_um=0.08,
                                      nuclei_engine=_ThresholdNet(0), cell_engine=cell_net)
    assert cell_net.batches[0][0, 1, 40, 40] == pytest.approx((30000 / 65535 - MEAN[1]) / STD[1], abs=1e-3)
    assert cell_net.batches[0][0, 2, 32 + 30, 32 + 32] == pytest.approx((160 / 255 - MEAN[2]) / STD[2],
                                                                         abs=0.02)
    assert cells.shape == nuclei.shape == shape
    assert sorted(np.unique(cells)) == [0, 1, 2]
    for row, col in ((120, 130), (180, 330)):
        assert nuclei[row, col] == cells[row, col] > 0
    assert ((nuclei == 0) | (nuclei == cells)).all()
    assert set(np.unique(nuclei)) == set(np.unique(cells))


class _StubServer:
    """Answers ``run`` as a ModelServer would, with fixed outputs."""

    def __init__(self, outputs: dict[str, np.ndarray]) -> None:
        self.outputs = outputs
        self.calls: list[tuple[str, tuple[int, ...]]] = []

    def run(self, model: str, batch: np.ndarray) -> dict[str, np.ndarray]:
        self.calls.append((model, batch.shape))
        return self.outputs


def test_served_network_gives_logits_for_logits_or_probabilities() -> None:
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(1, 3, 4, 5)).astype(np.float32)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    # A probability of exactly 0 (a softmax in float32 can give one) must not become -inf.
    probabilities[0, 2, 0, 0] += probabilities[0, 0, 0, 0]
    probabilities[0, 0, 0, 0] = 0.0
    batch = np.zeros((1, 3, 4, 5), np.float32)
    server = _StubServer({"logits": logits})
    assert ServedNetwork(server, "hpa-cell").run(batch) is logits  # type: ignore[arg-type]
    assert server.calls == [("hpa-cell", (1, 3, 4, 5))]
    got = ServedNetwork(_StubServer({"probabilities": probabilities}), "hpa-cell").run(batch)  # type: ignore[arg-type]
    assert np.isfinite(got).all()
    softmax = np.exp(got) / np.exp(got).sum(axis=1, keepdims=True)
    assert softmax == pytest.approx(probabilities, abs=1e-6)


def test_empty_image_gives_empty_labels() -> None:
    zeros = np.zeros((64, 48), np.uint16)
    assert not segment_nuclei_hpa(zeros, engine=_ThresholdNet(0)).any()
    nuclei, cells = segment_cells_hpa(zeros, zeros, zeros, nuclei_engine=_ThresholdNet(0),
                                      cell_engine=_ThresholdNet(0))
    assert nuclei.shape == cells.shape == (64, 48)
    assert not nuclei.any() and not cells.any()


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: segment_nuclei_hpa(np.zeros((8, 8, 3), np.uint8), engine=_ThresholdNet(0)), "nuclei"),
        (lambda: segment_nuclei_hpa(np.zeros((8, 8), np.int32), engine=_ThresholdNet(0)), "nuclei"),
        (lambda: segment_nuclei_hpa(np.zeros((8, 8), np.uint8), pixel_size_um=0,
                                    engine=_ThresholdNet(0)), "pixel_size_um"),
        (lambda: segment_cells_hpa(np.zeros((8, 8), np.uint8), np.zeros((8, 9), np.uint8),
                                   np.zeros((8, 8), np.uint8), nuclei_engine=_ThresholdNet(0),
                                   cell_engine=_ThresholdNet(0)), "microtubules, er, nuclei"),
        (lambda: label_nuclei(np.zeros((8, 8, 2), np.float32)), "probabilities"),
    ],
)
def test_bad_input_names_the_field(call: object, field: str) -> None:
    with pytest.raises(InvalidArgument, match=f"^{field}: "):
        call()  # type: ignore[operator]
