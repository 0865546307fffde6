"""The model repository: built-in models plus one directory per operator model, by name."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

from labsight.errors import NotFound, echo
from services.features.models.builtin import builtin_manifests
from services.features.models.manifest import (
    MANIFEST_FILE,
    ManifestError,
    ModelManifest,
    load_manifest,
)

MODEL_DIR_ENV = "LABSIGHT_MODEL_DIR"
"""Environment variable naming operator model directories (``os.pathsep``-separated)."""


def model_dirs_from_env() -> list[Path]:
    """The directories named by $LABSIGHT_MODEL_DIR (empty when unset)."""
    raw = os.environ.get(MODEL_DIR_ENV, "")
    return [Path(part) for part in raw.split(os.pathsep) if part]


def scan_model_dir(directory: Path) -> list[ModelManifest]:
    """Manifests of every ``<directory>/<model>/manifest.toml``, sorted by directory name.

    Raises
    ------
    ManifestError
        If ``directory`` is not a directory or any manifest in it is invalid.
    """
    if not directory.is_dir():
        raise ManifestError(f"{directory}: model directory does not exist")
    return [load_manifest(path) for path in sorted(directory.glob(f"*/{MANIFEST_FILE}"))]


class ModelRepository:
    """Models by name: built-ins first, then operator directories (later names override).

    Parameters
    ----------
    model_dirs : sequence of Path
        Operator model directories, each holding ``<model>/manifest.toml``.
    include_builtin : bool
        Also offer the built-in models whose weight packages are installed.
    """

    def __init__(self, model_dirs: Sequence[Path] = (), include_builtin: bool = True) -> None:
        self.model_dirs = list(model_dirs)
        self.include_builtin = include_builtin
        self._lock = threading.Lock()
        self._models: dict[str, ModelManifest] = {}
        self.rescan()

    def rescan(self) -> None:
        """Read every manifest again (models registered since start become visible)."""
        models = {m.name: m for m in builtin_manifests()} if self.include_builtin else {}
        for directory in self.model_dirs:
            models.update({m.name: m for m in scan_model_dir(directory)})
        with self._lock:
            self._models = models

    def list(self) -> list[ModelManifest]:
        """All models, by name."""
        with self._lock:
            return [self._models[name] for name in sorted(self._models)]

    def get(self, name: str) -> ModelManifest:
        """The model called ``name``, rescanning once for a model registered since the last scan.

        Raises
        ------
        NotFound
            If no manifest has that name.
        """
        with self._lock:
            manifest = self._models.get(name)
        if manifest is None:
            self.rescan()
            with self._lock:
                manifest = self._models.get(name)
        if manifest is None:
            raise NotFound(f"model: unknown model {echo(name)}; models: {[m.name for m in self.list()]}")
        return manifest
