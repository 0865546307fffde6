"""The classifier service's models: the shipped generated-data model and operator models of its task."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from labsight.models import MANIFEST_FILE, ModelManifest, ModelRepository, load_manifest
from services.classifier import backbones as _lite  # noqa: F401 - registers hpa-cell-efficientnet-lite0
from services.classifier import model as _architecture  # noqa: F401 - registers hpa-cell-cnn
from services.classifier.classes import NUM_CLASSES

CLASSIFIER_TASK = "classifier"
"""The task of the classifier service's models in the shared repository format."""

SHIPPED_MODELS = Path(__file__).parent / "models"
"""Model directories kept in the repository."""

DEFAULT_MODEL = "hpa-generated"
"""The shipped default: trained on generated cells only (see its MODEL_CARD.md)."""

THRESHOLDS_FILE = "thresholds.json"
"""Per-class decision thresholds beside a classifier's manifest."""

DEFAULT_THRESHOLD = 0.5


def builtin_manifests() -> list[ModelManifest]:
    """Manifests of the model directories shipped under :data:`SHIPPED_MODELS`."""
    return [load_manifest(path) for path in sorted(SHIPPED_MODELS.glob(f"*/{MANIFEST_FILE}"))]


def classifier_repository(model_dirs: Sequence[Path] = (), include_builtin: bool = True) -> ModelRepository:
    """The classifier models: the shipped ones, then ``task = "classifier"`` models of ``model_dirs``."""
    return ModelRepository(
        model_dirs, task=CLASSIFIER_TASK, builtins=builtin_manifests, include_builtin=include_builtin
    )


def load_thresholds(manifest: ModelManifest) -> np.ndarray:
    """The per-class thresholds stored beside a model's weights (0.5 each when there are none).

    Raises
    ------
    ValueError
        If the file does not hold one number in [0, 1] per class of the model.
    """
    path = manifest.weights.parent / THRESHOLDS_FILE
    if not path.is_file():
        return np.full(manifest.num_classes, DEFAULT_THRESHOLD)
    values = np.asarray(json.loads(path.read_text())["thresholds"], np.float64)
    if values.shape != (manifest.num_classes,) or not np.all((values >= 0) & (values <= 1)):
        raise ValueError(
            f"{path}: thresholds: expected {manifest.num_classes} values in [0, 1], "
            f"got {values.tolist()[: NUM_CLASSES + 1]}"
        )
    return values
