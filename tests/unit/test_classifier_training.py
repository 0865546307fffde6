"""Training on generated cells writes a model directory the classifier repository serves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from labsight.cli import main
from labsight.models import load_torch_model
from services.classifier.classes import CLASS_NAMES
from services.classifier.metrics import average_precision, best_thresholds, f1_scores
from services.classifier.repository import CLASSIFIER_TASK, classifier_repository, load_thresholds
from services.classifier.training import TrainingConfig, generated_cells, train_generated_classifier


def test_a_short_run_writes_a_servable_model_directory_with_its_card(tmp_path: Path) -> None:
    config = TrainingConfig(
        seed=3, train_cells=40, validation_cells=20, test_cells=20, shifted_cells=20, epochs=1,
        batch_size=16, time_budget=30.0,
    )
    lines: list[str] = []
    report = train_generated_classifier(tmp_path / "tiny", config, name="tiny", log=lines.append)
    manifest = classifier_repository([tmp_path], include_builtin=False).get("tiny")
    assert manifest.task == CLASSIFIER_TASK and manifest.classes == CLASS_NAMES
    assert load_thresholds(manifest).tolist() == report.thresholds
    model = load_torch_model(manifest)
    assert model(torch.zeros(2, 4, 64, 64)).shape == (2, len(CLASS_NAMES))
    metrics = json.loads((tmp_path / "tiny" / "metrics.json").read_text())
    assert metrics["config"]["seed"] == 3 and metrics["test"]["cells"] >= 20
    card = (tmp_path / "tiny" / "MODEL_CARD.md").read_text()
    assert "Real use needs training on real HPA data" in card
    assert f"{report.test['macro_f1']:.3f}" in card and "Mitochondria" in card
    assert any(line.startswith("epoch 1:") for line in lines)


def test_splits_draw_disjoint_reproducible_cells() -> None:
    first = generated_cells(11, 0, 10, field_size=256, cells_per_field=4)
    again = generated_cells(11, 0, 10, field_size=256, cells_per_field=4)
    other = generated_cells(11, 1, 10, field_size=256, cells_per_field=4)
    assert np.array_equal(first.crops, again.crops) and len(first.crops) >= 10
    assert first.crops.dtype == np.uint8 and first.crops.shape[1:] == (4, 64, 64)
    assert not np.array_equal(first.crops[:5], other.crops[:5])


def test_average_precision_and_thresholds_on_a_known_ranking() -> None:
    truth = np.array([[1, 0], [0, 0], [1, 1], [0, 1]], bool)
    scores = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.1, 0.4]])
    # Class 0 ranks positive, negative, positive: AP = (1/1 + 2/3) / 2; class 1 is perfect.
    assert np.allclose(average_precision(scores, truth), [(1 + 2 / 3) / 2, 1.0])
    thresholds = best_thresholds(scores, truth)
    assert f1_scores(scores >= thresholds, truth)[1] == 1.0
    assert 0.2 < thresholds[1] <= 0.3


def test_bad_command_line_values_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train-classifier", str(tmp_path / "m"), "--time-budget", "0"]) == 1
    assert "--time-budget" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_the_imagenet_backbone_takes_rgby_and_its_trained_model_is_served(tmp_path: Path) -> None:
    from labsight.models import build_engine, package_file
    from services.classifier.backbones import IMAGENET_WEIGHTS
    from services.classifier.training import new_network

    network = new_network("efficientnet-lite0")
    stem = network.backbone._conv_stem.weight.detach()  # type: ignore[attr-defined]
    imagenet = torch.load(package_file(*IMAGENET_WEIGHTS), weights_only=True)["_conv_stem.weight"]
    assert stem.shape[1] == 4 and torch.equal(stem[:, :3], imagenet)
    assert torch.allclose(stem[:, 3], imagenet.mean(dim=1))
    config = TrainingConfig(seed=5, train_cells=40, validation_cells=20, test_cells=20, shifted_cells=20,
                            epochs=1, batch_size=16, time_budget=30.0, backbone="efficientnet-lite0")
    train_generated_classifier(tmp_path / "lite", config, name="lite", log=lambda _: None)
    manifest = classifier_repository([tmp_path], include_builtin=False).get("lite")
    crops = torch.rand(2, 4, 64, 64)
    expected = load_torch_model(manifest)(crops).detach().numpy()
    engine = build_engine(manifest, "", "cpu", tmp_path / "cache")
    assert np.allclose(engine.outputs(crops.numpy())["probabilities"], expected, atol=1e-4)
