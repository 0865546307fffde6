"""What a served model takes and returns, as the Open Inference Protocol describes it.

Names and shapes come from the model's ONNX graph (the one ONNX Runtime
runs: the operator's file, or the export the model server caches): its
input, the outputs the manifest names, and each public layer of the
manifest, which a request may ask for as an output of its own. Output and
layer shapes are measured by running the model once on a zero input. Axes
of any length (the batch, the sides of a ``dynamic_size`` model) are -1.
Every input and output is FP32: the engines take and give float32.

A model on an external server (``torchserve``, ``tfserving``) has no graph
here and its server is not called for metadata: its signature comes from its
manifest. The input is named by the manifest's ``[remote] input`` and has the
manifest's (channels, height, width); the outputs are the manifest's, and
their shapes are unknown until the server answers, so each is ``[-1]``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort

from labsight.errors import FailedPrecondition
from labsight.models import ModelManifest, ModelServer, check_weights, cut_at_outputs, load_onnx

DATATYPE = "FP32"
"""The datatype of every model input and output."""

PLATFORMS = {"onnx": "onnxruntime_onnx", "torch": "pytorch_libtorch"}
"""Triton's platform names of the two backends a model server runs a model on."""

REMOTE_PLATFORMS = {"torchserve": "torchserve_remote", "tfserving": "tfserving_remote"}
"""Platform names of the formats whose model runs on an external server."""

UNKNOWN_SHAPE = (-1,)
"""The shape of a remote model's outputs, whose rank and sides only its server knows."""


@dataclass(frozen=True)
class TensorSpec:
    """Name, datatype and shape (-1 for a free axis) of one input or output."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelSignature:
    """A model's input, its outputs and the layers a request may ask for besides them.

    Attributes
    ----------
    input : TensorSpec
        The model's one input, (batch, channels, height, width).
    outputs : tuple of TensorSpec
        The model's outputs, named as its manifest names them.
    layers : tuple of TensorSpec
        The manifest's public layers that are not the model's outputs, named by
        their public names.
    """

    input: TensorSpec
    outputs: tuple[TensorSpec, ...]
    layers: tuple[TensorSpec, ...]

    def output(self, name: str) -> TensorSpec | None:
        """The output or layer called ``name``, if there is one."""
        return next((spec for spec in (*self.outputs, *self.layers) if spec.name == name), None)


class Signatures:
    """Each model's signature, read from its ONNX graph on first use and kept per manifest digest.

    Parameters
    ----------
    server : ModelServer
        The model server whose models are described (its ONNX cache and layer index).
    """

    def __init__(self, server: ModelServer) -> None:
        self.server = server
        self._lock = threading.Lock()
        self._signatures: dict[tuple[str, str, str], ModelSignature] = {}

    def of(self, manifest: ModelManifest) -> ModelSignature:
        """The signature of ``manifest``'s model (its ONNX graph is exported first if needed).

        Raises
        ------
        FailedPrecondition
            If the weights are missing or the graph has fewer outputs than the manifest names.
        """
        check_weights(manifest)  # before the digest, which reads the weight file's size
        key = (manifest.name, manifest.version, manifest.digest())
        with self._lock:
            known = self._signatures.get(key)
        if known is not None:
            return known
        signature = self._read(manifest)
        with self._lock:
            self._signatures[key] = signature
        return signature

    def platform(self, manifest: ModelManifest) -> str:
        """Triton's name of the backend this server runs the model on (for a remote model, its server's)."""
        if manifest.remote is not None:
            return REMOTE_PLATFORMS[manifest.remote.protocol]
        return PLATFORMS[self.server.backend(manifest)]

    def _read(self, manifest: ModelManifest) -> ModelSignature:
        if manifest.remote is not None:
            return _remote_signature(manifest, manifest.remote.input)
        model = load_onnx(manifest, self.server.config.cache_dir)
        graph = model.graph
        weights = {tensor.name for tensor in graph.initializer}
        inputs = [value for value in graph.input if value.name not in weights]
        if len(graph.output) < len(manifest.outputs) or not inputs:
            raise FailedPrecondition(
                f"model {manifest.name!r}: its ONNX graph has {len(inputs)} inputs and "
                f"{len(graph.output)} outputs; the manifest names one input and {len(manifest.outputs)} "
                f"outputs {list(manifest.outputs)}"
            )
        layers = [name for name, path in manifest.layers.items() if path and name not in manifest.outputs]
        index = self.server.layer_index(manifest, "onnx") if layers else None
        values = [value.name for value in graph.output[: len(manifest.outputs)]]
        values += [index.target(name) for name in layers] if index else []
        shapes = _measured_shapes(model, values, manifest)
        specs = [TensorSpec(name, DATATYPE, shape)
                 for name, shape in zip([*manifest.outputs, *layers], shapes, strict=True)]
        return ModelSignature(
            TensorSpec(inputs[0].name, DATATYPE, _shape(inputs[0])),
            tuple(specs[: len(manifest.outputs)]),
            tuple(specs[len(manifest.outputs) :]),
        )


def _remote_signature(manifest: ModelManifest, input_name: str) -> ModelSignature:
    """A remote model's signature, from its manifest alone (its server is not called).

    The input, ``input_name`` (the manifest's ``[remote] input``), is the
    preprocessed (batch, channels, height, width) batch the engine sends; the
    outputs and the public layers that alias one of them have unknown shapes.
    """
    sides = (-1, -1) if manifest.dynamic_size else manifest.input_shape[1:]
    layers = [name for name, path in manifest.layers.items()
              if path in manifest.outputs and name not in manifest.outputs]
    return ModelSignature(
        TensorSpec(input_name, DATATYPE, (-1, manifest.input_channels, *sides)),
        tuple(TensorSpec(name, DATATYPE, UNKNOWN_SHAPE) for name in manifest.outputs),
        tuple(TensorSpec(name, DATATYPE, UNKNOWN_SHAPE) for name in layers),
    )


def _measured_shapes(
    model: onnx.ModelProto, values: list[str], manifest: ModelManifest
) -> list[tuple[int, ...]]:
    """The shapes of graph values, measured by one run on a zero input of the manifest's shape.

    ONNX shape inference loses sides behind computed paddings and exports may
    leave output axes free; a run knows them. The batch axis is -1, and so are
    the sides (axes from 2 on) of a ``dynamic_size`` model, which follow its input's.
    """
    session = ort.InferenceSession(
        cut_at_outputs(model, values).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    zeros = np.zeros((1, *manifest.input_shape), np.float32)
    results = session.run(None, {session.get_inputs()[0].name: zeros})
    return [
        (-1, *(-1 if manifest.dynamic_size and axis >= 2 else side
               for axis, side in enumerate(result.shape[1:], 1)))
        for result in results
    ]


def _shape(value: onnx.ValueInfoProto) -> tuple[int, ...]:
    """A graph value's declared shape, -1 for each axis without a fixed length."""
    dims = value.type.tensor_type.shape.dim
    return tuple(dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else -1 for dim in dims)
