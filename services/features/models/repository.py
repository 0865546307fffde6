"""The features service's model repository: its built-ins and the operator models of its task."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from labsight.models import ModelRepository
from services.features.models import architectures  # noqa: F401 - registers the architectures
from services.features.models.builtin import FEATURES_TASK, builtin_manifests


def feature_repository(model_dirs: Sequence[Path] = (), include_builtin: bool = True) -> ModelRepository:
    """The features models: the built-ins whose weight packages are installed, then ``model_dirs``.

    Parameters
    ----------
    model_dirs : sequence of Path
        Operator model directories; only their ``task = "features"`` manifests
        (the default task) are listed.
    include_builtin : bool
        Also offer the built-in models.
    """
    return ModelRepository(
        model_dirs, task=FEATURES_TASK, builtins=builtin_manifests, include_builtin=include_builtin
    )
