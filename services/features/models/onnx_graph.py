"""ONNX form of every model: exported once into a cache keyed by the manifest, cut at any layer."""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path

import onnx

from labsight.errors import NotFound
from services.features.models.loading import check_weights, load_torch_model
from services.features.models.manifest import ModelManifest

log = logging.getLogger(__name__)

OPSET = 17
INPUT_NAME = "input"


def onnx_path(manifest: ModelManifest, cache_dir: Path) -> Path:
    """The model as an ONNX file: its own weights for ``onnx`` manifests, else a cached export.

    The export is traced once on a (1, 3, H, W) input with a dynamic batch axis
    and written atomically to ``cache_dir/<name>-<manifest digest>.onnx``, so
    concurrent processes and later runs reuse it.
    """
    check_weights(manifest)
    if manifest.format == "onnx":
        return manifest.weights
    path = cache_dir / f"{manifest.name}-{manifest.digest()[:16]}.onnx"
    if path.is_file():
        return path
    import torch

    cache_dir.mkdir(parents=True, exist_ok=True)
    module = load_torch_model(manifest)
    example = torch.zeros((1, 3, *manifest.input_size), dtype=torch.float32)
    handle, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".onnx.tmp")
    os.close(handle)
    log.info("exporting model to ONNX", extra={"model": manifest.name, "path": str(path)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and constant-folding chatter
        torch.onnx.export(
            module, (example,), tmp, input_names=[INPUT_NAME], output_names=["output"],
            dynamic_axes={INPUT_NAME: {0: "batch"}, "output": {0: "batch"}},
            opset_version=OPSET, dynamo=False,
        )
    os.replace(tmp, path)
    return path


def node_module_path(node_name: str) -> str:
    """The dotted module path of an exported node, e.g. ``/layer1/layer1.0/conv1/Conv`` → ``layer1.0.conv1``.

    The exporter names nodes by the scopes of the module calls that made them;
    a child scope sometimes repeats its parent's path (``layer1.0`` under
    ``layer1``) and sometimes not (``conv1``).
    """
    path = ""
    for segment in node_name.split("/")[1:-1]:
        if path and segment.startswith(path + "."):
            path = segment
        else:
            path = f"{path}.{segment}" if path else segment
    return path


def layer_output_name(model: onnx.ModelProto, module_path: str) -> str:
    """The graph value a module produced: its output that is used outside it (the last one made).

    ``""`` is the model's first output; a value name of the graph is accepted as is.

    Raises
    ------
    NotFound
        If no node belongs to that module and no value has that name.
    """
    graph = model.graph
    if module_path == "":
        return graph.output[0].name
    produced = {output for node in graph.node for output in node.output}
    if module_path in produced:
        return module_path
    inside = [
        node for node in graph.node
        if (path := node_module_path(node.name)) == module_path or path.startswith(module_path + ".")
    ]
    if not inside:
        raise NotFound(f"layer: the model has no module or value {module_path!r}")
    made_inside = [output for node in inside for output in node.output]
    inside_ids = {id(node) for node in inside}
    used_outside = {name for node in graph.node if id(node) not in inside_ids for name in node.input}
    used_outside |= {output.name for output in graph.output}
    escaping = [name for name in made_inside if name in used_outside]
    if not escaping:
        raise NotFound(f"layer: module {module_path!r} has no output used by the rest of the model")
    return escaping[-1]


def cut_at_layer(model: onnx.ModelProto, module_path: str) -> onnx.ModelProto:
    """A copy of ``model`` whose only output is the layer's value; the runtime prunes the rest."""
    name = layer_output_name(model, module_path)
    cut = onnx.ModelProto()
    cut.CopyFrom(model)
    del cut.graph.output[:]
    cut.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return cut
