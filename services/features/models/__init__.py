"""The model repository of the features service: manifests, built-ins, loading and engines."""

from services.features.models.builtin import DEFAULT_MODEL, SPOT_MODEL, builtin_manifests
from services.features.models.engines import (
    Backend,
    Engine,
    OnnxEngine,
    TorchEngine,
    build_engine,
    build_engines,
    build_layer_index,
    engine_backend,
    uses_cuda,
)
from services.features.models.layers import LayerIndex
from services.features.models.manifest import (
    MANIFEST_FILE,
    ManifestError,
    ModelManifest,
    Preprocessing,
    load_manifest,
)
from services.features.models.repository import ModelRepository, model_dirs_from_env

__all__ = [
    "DEFAULT_MODEL",
    "Backend",
    "MANIFEST_FILE",
    "SPOT_MODEL",
    "Engine",
    "LayerIndex",
    "ManifestError",
    "ModelManifest",
    "ModelRepository",
    "OnnxEngine",
    "Preprocessing",
    "TorchEngine",
    "build_engine",
    "build_engines",
    "build_layer_index",
    "engine_backend",
    "uses_cuda",
    "builtin_manifests",
    "load_manifest",
    "model_dirs_from_env",
]
