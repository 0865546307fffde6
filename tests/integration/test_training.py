"""``labsight train-features``: fine-tune a built-in backbone, report accuracy, serve the new model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labsight.cli import main
from labsight.models import ModelManifest, Preprocessing, build_engine, load_torch_model
from services.features.deep import preprocess
from services.features.models import feature_repository
from services.features.training import held_out_split, load_labelled_images, train_features


def _colour_folder(root: Path, per_class: int = 8) -> Path:
    """Two classes of noisy 64x64 images: reddish and bluish."""
    rng = np.random.default_rng(1)
    for name, channel in (("blue", 2), ("red", 0)):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 90, (64, 64, 3), dtype=np.uint8)
            pixels[:, :, channel] = rng.integers(170, 256, (64, 64), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_train_features_reports_accuracy_and_registers_a_servable_model(
    tmp_path: Path, model_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _colour_folder(tmp_path / "data")
    models = tmp_path / "models"
    code = main(["train-features", str(data), "--name", "colours", "--model-dir", str(models),
                 "--epochs", "4", "--batch-size", "4", "--held-out", "0.25"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == "colours" and report["classes"] == ["blue", "red"]
    assert report["held_out_images"] == 4 and report["train_images"] == 12
    assert report["held_out_accuracy"] >= 0.75

    manifest = feature_repository([models]).get("colours")
    assert manifest.num_classes == 2 and manifest.default_layer == "avgpool"
    red = np.zeros((64, 64, 3), np.uint8)
    red[:, :, 0] = 230
    batch = preprocess([red], manifest.input_size, manifest.preprocessing)
    logits = build_engine(manifest, "logits", "cpu", model_cache).run(batch)
    assert logits.shape == (1, 2) and manifest.classes[int(np.argmax(logits))] == "red"
    assert build_engine(manifest, "avgpool", "cpu", model_cache).run(batch).shape == (1, 1280, 1, 1)


def test_inception_v3_is_fine_tuned_into_a_torchscript_model_that_serves_its_layers(
    tmp_path: Path, model_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    data = _colour_folder(tmp_path / "data")
    models = tmp_path / "models"
    code = main(["train-features", str(data), "--name", "colours-v3", "--backbone", "inception-v3",
                 "--model-dir", str(models), "--epochs", "3", "--batch-size", "4",
                 "--held-out", "0.25", "--learning-rate", "1e-3"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["held_out_images"] == 4 and report["held_out_accuracy"] >= 0.75

    manifest = feature_repository([models]).get("colours-v3")
    assert manifest.format == "torchscript" and manifest.classes == ("blue", "red")
    assert manifest.layers["mixed_10"] == "backbone.net.layers.mixed_10"
    red = np.zeros((64, 64, 3), np.uint8)
    red[:, :, 0] = 230
    batch = preprocess([red], manifest.input_size, manifest.preprocessing)
    logits = build_engine(manifest, "logits", "cpu", model_cache).run(batch)
    assert manifest.classes[int(np.argmax(logits))] == "red"
    with torch.inference_mode():
        scripted = load_torch_model(manifest)(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(logits, scripted, atol=1e-4)  # the ONNX export serves the same model
    assert build_engine(manifest, "avgpool", "cpu", model_cache).run(batch).shape == (1, 2048)
    assert build_engine(manifest, "mixed_10", "cpu", model_cache).run(batch).shape[:2] == (1, 2048)


def test_only_known_backbones_are_fine_tuned(tmp_path: Path) -> None:
    images = load_labelled_images(_colour_folder(tmp_path / "data", per_class=2))
    onnx_model = ModelManifest(
        name="other", version="1", format="onnx", weights=tmp_path / "m.onnx", input_size=(8, 8),
        preprocessing=Preprocessing(mean=(0.5,) * 3, std=(0.5,) * 3), layers={"out": ""},
        default_layer="out", licence="test", source="test",
    )
    with pytest.raises(ValueError, match="backbone: 'other' is neither a state_dict model"):
        train_features(images, onnx_model, "x", tmp_path / "models")


def test_labelled_images_come_from_a_csv_too(tmp_path: Path) -> None:
    folder = _colour_folder(tmp_path, per_class=2)
    (tmp_path / "labels.csv").write_text(
        "path,label\nred/0.png,r\nred/1.png,r\nblue/0.png,b\nblue/1.png,b\n"
    )
    images = load_labelled_images(folder / "labels.csv")
    assert images.classes == ["b", "r"] and images.labels.tolist() == [1, 1, 0, 0]
    (tmp_path / "bad.csv").write_text("path,label\nred/9.png,r\n")
    with pytest.raises(ValueError, match="1 image files not found"):
        load_labelled_images(tmp_path / "bad.csv")


def test_the_held_out_split_is_stratified() -> None:
    labels = np.array([0] * 10 + [1] * 5)
    train, held = held_out_split(labels, 0.2, seed=3)
    assert sorted([*train, *held]) == list(range(15))
    assert (labels[held] == 0).sum() == 2 and (labels[held] == 1).sum() == 1
