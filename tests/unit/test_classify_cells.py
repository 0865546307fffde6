"""classify_cells with a small deterministic model: rows per cell, thresholds, summary, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from services.classifier.cells import classify_cells
from services.classifier.classes import CLASS_NAMES, NUM_CLASSES


class GreenModel:
    """Class k's probability is the crop's mean of channel k % 4; records its batch sizes."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        assert batch.dtype == np.float32 and batch.shape[1:] == (4, 16, 16)
        self.batches.append(len(batch))
        means = batch.mean(axis=(2, 3))
        return means[:, np.arange(NUM_CLASSES) % 4]


def _field() -> tuple[np.ndarray, np.ndarray]:
    """Three 12 x 12 cells: 2 is green, 5 is red and yellow, 7 is blue at half brightness."""
    labels = np.zeros((48, 64), np.int32)
    image = np.zeros((48, 64, 4), np.uint8)
    for label, (row, col), colour in [
        (2, (2, 2), (0, 255, 0, 0)), (5, (20, 30), (255, 0, 0, 255)), (7, (34, 48), (0, 0, 128, 0)),
    ]:
        labels[row : row + 12, col : col + 12] = label
        image[row : row + 12, col : col + 12] = colour
    return image, labels


def test_each_cell_gets_its_own_probabilities_box_and_label_set() -> None:
    image, labels = _field()
    model = GreenModel()
    result = classify_cells(image, labels, model, thresholds=0.4, input_size=16)
    assert result.cell_ids.tolist() == [2, 5, 7]
    assert result.boxes.tolist() == [[2, 2, 14, 14], [20, 30, 32, 42], [34, 48, 46, 60]]
    assert result.probabilities.shape == (3, NUM_CLASSES)
    channel = np.arange(NUM_CLASSES) % 4
    green, red, blue = channel == 1, channel == 0, channel == 2
    assert np.allclose(result.probabilities[0, green], 1.0)
    assert np.allclose(result.probabilities[0, ~green], 0.0)
    assert np.allclose(result.probabilities[1, red], 1.0)
    assert np.allclose(result.probabilities[2, blue], 128 / 255, atol=1e-3)
    assert result.label_sets()[0] == [CLASS_NAMES[k] for k in np.flatnonzero(green)]
    assert result.top_classes.tolist() == [1, 0, 2]


def test_per_class_thresholds_decide_the_label_sets_and_the_summary() -> None:
    image, labels = _field()
    thresholds = np.full(NUM_CLASSES, 0.4)
    thresholds[2] = 0.6  # blue at 0.5 no longer counts for class 2, still for 6, 10, 14, 18
    result = classify_cells(image, labels, GreenModel(), thresholds=thresholds, input_size=16)
    assert not result.predicted[2, 2] and result.predicted[2, 6]
    assert np.array_equal(result.thresholds, thresholds)
    assert np.allclose(result.image_probabilities, result.probabilities.max(axis=0))
    assert result.class_counts.tolist() == result.predicted.sum(axis=0).tolist()
    assert result.class_counts[1] == 1 and result.class_counts[2] == 0
    assert np.array_equal(result.image_labels, result.class_counts > 0)


def test_crops_go_to_the_model_in_batches_of_at_most_batch_size() -> None:
    image, labels = _field()
    model = GreenModel()
    classify_cells(image, labels, model, input_size=16, batch_size=2)
    assert model.batches == [2, 1]


def test_an_image_without_cells_gives_an_empty_valid_result_without_calling_the_model() -> None:
    image, labels = _field()
    model = GreenModel()
    result = classify_cells(image, np.zeros_like(labels), model, input_size=16)
    assert model.batches == []
    assert result.cell_ids.shape == (0,) and result.boxes.shape == (0, 4)
    assert result.probabilities.shape == (0, NUM_CLASSES) and result.predicted.shape == (0, NUM_CLASSES)
    assert np.all(result.image_probabilities == 0) and result.image_probabilities.shape == (NUM_CLASSES,)
    assert result.class_counts.tolist() == [0] * NUM_CLASSES and result.label_sets() == []
    assert result.top_classes.shape == (0,)


@pytest.mark.parametrize(("image", "labels", "field"), [
    (np.zeros((48, 64, 3), np.uint8), None, "image"),
    (np.zeros((48, 64), np.uint8), None, "image"),
    (np.zeros((48, 64, 4), np.float64), None, "image"),
    (None, np.zeros((48, 63), np.int32), "cell_labels"),
    (None, np.zeros((48, 64, 1), np.int32), "cell_labels"),
    (None, np.zeros((48, 64), np.float32), "cell_labels"),
])
def test_bad_inputs_are_refused_naming_the_argument(
    image: np.ndarray | None, labels: np.ndarray | None, field: str
) -> None:
    good_image, good_labels = _field()
    with pytest.raises(ValueError, match=f"^{field}:"):
        classify_cells(
            good_image if image is None else image, good_labels if labels is None else labels,
            GreenModel(), input_size=16,
        )


@pytest.mark.parametrize("thresholds", [np.full(18, 0.5), 1.5, np.full(NUM_CLASSES, -0.1)])
def test_bad_thresholds_are_refused(thresholds: object) -> None:
    image, labels = _field()
    with pytest.raises(ValueError, match="^thresholds:"):
        classify_cells(image, labels, GreenModel(), thresholds=thresholds, input_size=16)  # type: ignore[arg-type]


def test_a_model_answering_the_wrong_shape_is_named() -> None:
    image, labels = _field()
    with pytest.raises(ValueError, match="^predict:"):
        classify_cells(image, labels, lambda batch: np.zeros((len(batch), 18)), input_size=16)
