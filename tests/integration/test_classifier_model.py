"""The shipped organelle classifier: served by the model stack, scored on fresh generated cells."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from labsight.models import Engine, ModelManifest, build_engine, load_torch_model
from services.classifier.cells import classify_cells
from services.classifier.classes import CLASS_NAMES
from services.classifier.generated_cells import generate_cell_field
from services.classifier.metrics import score_predictions
from services.classifier.repository import (
    CLASSIFIER_TASK,
    DEFAULT_MODEL,
    classifier_repository,
    load_thresholds,
)
from services.classifier.training import INPUT_SIZE, LabelledCrops, generated_cells, predict_crops

FRESH_SEED = 90417
"""A data seed the shipped model never saw (its metrics.json records the training seed)."""


@pytest.fixture(scope="module")
def shipped() -> ModelManifest:
    return classifier_repository().get(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def fresh_cells() -> LabelledCrops:
    return generated_cells(FRESH_SEED, 0, 600)


@pytest.fixture(scope="module")
def onnx_engine(shipped: ModelManifest, model_cache: Path) -> Iterator[Engine]:
    engine = build_engine(shipped, "", "cpu", model_cache)
    yield engine
    engine.close()


def test_the_shipped_model_is_a_classifier_model_with_its_card(shipped: ModelManifest) -> None:
    assert shipped.task == CLASSIFIER_TASK
    assert shipped.input_shape == (4, INPUT_SIZE, INPUT_SIZE)
    assert shipped.classes == CLASS_NAMES and shipped.outputs == ("probabilities",)
    directory = shipped.weights.parent
    card = (directory / "MODEL_CARD.md").read_text()
    assert "generated" in card and "real HPA data" in card
    assert shipped.weights.stat().st_size < 4 * 2**20
    trained_on = json.loads((directory / "metrics.json").read_text())["config"]["seed"]
    assert trained_on != FRESH_SEED


def test_the_shipped_model_tells_fresh_generated_cells_apart(
    shipped: ModelManifest, fresh_cells: LabelledCrops
) -> None:
    import torch

    torch.set_num_threads(1)
    probabilities = predict_crops(load_torch_model(shipped), fresh_cells.crops)
    scores = score_predictions(probabilities, fresh_cells.classes, load_thresholds(shipped))
    assert scores.macro_f1 >= 0.9, np.round(scores.f1, 2)


def test_onnx_runtime_and_torch_agree(
    shipped: ModelManifest, fresh_cells: LabelledCrops, onnx_engine: Engine
) -> None:
    import torch

    torch.set_num_threads(1)
    batch = fresh_cells.crops[:32].astype(np.float32) / 255
    with torch.inference_mode():
        expected = load_torch_model(shipped)(torch.from_numpy(batch)).numpy()
    served = onnx_engine.outputs(batch)["probabilities"]
    assert served.shape == (32, len(CLASS_NAMES))
    assert np.max(np.abs(served - expected)) < 1e-4


def test_classify_cells_with_the_served_model_finds_each_cells_labels(
    shipped: ModelManifest, onnx_engine: Engine
) -> None:
    field = generate_cell_field(FRESH_SEED + 1)
    result = classify_cells(
        field.image, field.cell_labels, onnx_engine.run, thresholds=load_thresholds(shipped),
        input_size=INPUT_SIZE,
    )
    assert result.cell_ids.tolist() == list(range(1, len(field.classes) + 1))
    truth = field.classes
    hits = (result.predicted & truth).sum()
    assert hits >= 0.85 * truth.sum() and (result.predicted & ~truth).sum() <= 0.15 * truth.sum()
    assert np.array_equal(result.image_probabilities, result.probabilities.max(axis=0))
