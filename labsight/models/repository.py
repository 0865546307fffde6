"""The model repository of one service: its built-in models plus operator model directories, by name.

Every model service builds its own repository with its task and its built-in
manifests; operator directories (``LABSIGHT_MODEL_DIR``) are shared by all
services, each listing only the manifests of its task.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from labsight.errors import NotFound, echo
from labsight.models.manifest import MANIFEST_FILE, ManifestError, ModelManifest, load_manifest

MODEL_DIR_ENV = "LABSIGHT_MODEL_DIR"
"""Environment variable naming operator model directories (``os.pathsep``-separated)."""

BuiltinManifests = Callable[[], Iterable[ModelManifest]]
"""Lists a service's built-in models (those whose weights are installed), read at every scan."""


def model_dirs_from_env() -> list[Path]:
    """The directories named by $LABSIGHT_MODEL_DIR (empty when unset)."""
    raw = os.environ.get(MODEL_DIR_ENV, "")
    return [Path(part) for part in raw.split(os.pathsep) if part]


def package_file(package: str, relative: str) -> Path | None:
    """Path of a file inside an installed package, found without importing it; None if absent.

    Weight packages are often installed without their dependencies (their
    ``__init__`` would fail), so the package is located, never imported.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    return path if path.is_file() else None


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
    """The models of one task by name: built-ins first, then operator directories (later names override).

    Parameters
    ----------
    model_dirs : sequence of Path
        Operator model directories, each holding ``<model>/manifest.toml``;
        manifests of other tasks in them are not listed.
    task : str
        The task whose models this repository serves ("features", "segmentation", ...).
    builtins : callable
        Returns the service's built-in manifests (all of ``task``).
    include_builtin : bool
        Also offer the built-in models.
    """

    def __init__(
        self,
        model_dirs: Sequence[Path] = (),
        *,
        task: str,
        builtins: BuiltinManifests = tuple,
        include_builtin: bool = True,
    ) -> None:
        self.model_dirs = list(model_dirs)
        self.task = task
        self.builtins = builtins
        self.include_builtin = include_builtin
        self._lock = threading.Lock()
        self._models: dict[str, ModelManifest] = {}
        self.rescan()

    def rescan(self) -> None:
        """Read every manifest again (models registered since start become visible).

        Raises
        ------
        ManifestError
            For a missing directory, an invalid manifest, or a built-in of another task.
        """
        models: dict[str, ModelManifest] = {}
        if self.include_builtin:
            for manifest in self.builtins():
                if manifest.task != self.task:
                    raise ManifestError(
                        f"built-in model {manifest.name!r}: task {manifest.task!r}, "
                        f"not this repository's {self.task!r}"
                    )
                models[manifest.name] = manifest
        for directory in self.model_dirs:
            models.update({m.name: m for m in scan_model_dir(directory) if m.task == self.task})
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
            If no manifest of this task has that name.
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
