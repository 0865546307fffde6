"""The model stack of every model service: manifests, repository, architectures, engines, serving.

A service adds only its architectures (:func:`register_architecture`), its
built-in manifests and its algorithm; it serves its models through a
:class:`ModelRepository` of its task and a :class:`ModelServer`.
"""

from labsight.models.architectures import (
    ArchitectureBuilder,
    architecture_names,
    build_architecture,
    register_architecture,
)
from labsight.models.device import (
    DEVICE_ENV,
    DEVICES,
    Device,
    cuda_available,
    device_from_env,
    parse_device,
    resolve_device,
)
from labsight.models.engine_cache import EngineCache
from labsight.models.engines import (
    MODEL_OUTPUTS,
    Backend,
    Engine,
    OnnxEngine,
    TorchEngine,
    build_engine,
    build_engines,
    build_layer_index,
    engine_backend,
    torch_can_serve,
    uses_cuda,
)
from labsight.models.layers import LayerIndex
from labsight.models.loading import check_weights, load_torch_model
from labsight.models.manifest import (
    DEFAULT_TASK,
    MANIFEST_FILE,
    ManifestError,
    ModelManifest,
    Preprocessing,
    load_manifest,
    manifest_from_dict,
)
from labsight.models.onnx_graph import cut_at_outputs, load_onnx, onnx_path
from labsight.models.repository import (
    MODEL_DIR_ENV,
    BuiltinManifests,
    ModelRepository,
    model_dirs_from_env,
    package_file,
)
from labsight.models.serving import ModelServer, ServedModel, ServingConfig

__all__ = [
    "DEFAULT_TASK",
    "DEVICES",
    "DEVICE_ENV",
    "MANIFEST_FILE",
    "MODEL_DIR_ENV",
    "MODEL_OUTPUTS",
    "ArchitectureBuilder",
    "Backend",
    "BuiltinManifests",
    "Device",
    "Engine",
    "EngineCache",
    "LayerIndex",
    "ManifestError",
    "ModelManifest",
    "ModelRepository",
    "ModelServer",
    "OnnxEngine",
    "Preprocessing",
    "ServedModel",
    "ServingConfig",
    "TorchEngine",
    "architecture_names",
    "build_architecture",
    "build_engine",
    "build_engines",
    "build_layer_index",
    "check_weights",
    "cuda_available",
    "cut_at_outputs",
    "device_from_env",
    "engine_backend",
    "load_manifest",
    "load_onnx",
    "load_torch_model",
    "manifest_from_dict",
    "model_dirs_from_env",
    "onnx_path",
    "package_file",
    "parse_device",
    "register_architecture",
    "resolve_device",
    "torch_can_serve",
    "uses_cuda",
]
