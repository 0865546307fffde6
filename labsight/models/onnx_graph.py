"""ONNX form of every model: exported once into a cache keyed by the manifest, cut at any layer."""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import onnx

from labsight.errors import FailedPrecondition
from labsight.models.loading import check_weights, load_torch_model
from labsight.models.manifest import ModelManifest

log = logging.getLogger(__name__)

OPSET = 17
INPUT_NAME = "input"

_EXPORT_LOCK = threading.Lock()
"""torch's ONNX exporter keeps global state: two exports at once in one process fail."""


def onnx_path(manifest: ModelManifest, cache_dir: Path) -> Path:
    """The model as an ONNX file: its own weights for ``onnx`` manifests, else a cached export.

    The export is traced once on a (1, C, H, W) input of the manifest's shape,
    with a dynamic batch axis (and dynamic height and width for a
    ``dynamic_size`` model), its outputs named as the manifest names them, and
    written atomically to ``cache_dir/<name>-<manifest digest>.onnx``, so
    concurrent processes and later runs reuse it.
    """
    check_weights(manifest)
    if manifest.format == "onnx":
        return manifest.weights
    path = cache_dir / f"{manifest.name}-{manifest.digest()[:16]}.onnx"
    with _EXPORT_LOCK:
        if not path.is_file():
            _export(manifest, path)
    return path


def _export(manifest: ModelManifest, path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    module = load_torch_model(manifest)
    example = torch.zeros((1, *manifest.input_shape), dtype=torch.float32)
    with torch.inference_mode():
        produced = module(example)
    results = list(produced) if isinstance(produced, (tuple, list)) else [produced]
    if len(results) < len(manifest.outputs):
        raise FailedPrecondition(
            f"model {manifest.name!r}: the network returns {len(results)} outputs, the manifest "
            f"names {len(manifest.outputs)}: {list(manifest.outputs)}"
        )
    dynamic_axes: dict[str, dict[int, str]] = {
        INPUT_NAME: {0: "batch", 2: "height", 3: "width"} if manifest.dynamic_size else {0: "batch"}
    }
    for name, result in zip(manifest.outputs, results, strict=False):
        free = range(1, result.dim()) if manifest.dynamic_size else ()
        dynamic_axes[name] = {0: "batch", **{axis: f"{name}_{axis}" for axis in free}}
    handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=".onnx.tmp")
    os.close(handle)
    log.info("exporting model to ONNX", extra={"model": manifest.name, "path": str(path)})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation and constant-folding chatter
            torch.onnx.export(
                module, (example,), tmp, input_names=[INPUT_NAME], output_names=list(manifest.outputs),
                dynamic_axes=dynamic_axes, opset_version=OPSET, dynamo=False,
            )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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


def load_onnx(manifest: ModelManifest, cache_dir: Path) -> onnx.ModelProto:
    """The model's ONNX graph with its weights, parsed from :func:`onnx_path` (exported if needed)."""
    return onnx.load(str(onnx_path(manifest, cache_dir)))


def layer_outputs(model: onnx.ModelProto) -> tuple[dict[str, str], tuple[str, ...]]:
    """Every layer the model can be cut at, mapped to the graph value it outputs, and its module paths.

    The layers are ``""`` (the model's outputs, served uncut), every module path whose
    nodes make a value used outside the module (that value: the last one made),
    and every value name of the graph (itself; a value name wins over a module
    path spelled the same). The module paths are returned sorted as well.
    Only values with a batch axis count (see :func:`batched_values`): a
    constant or a shape computation is no layer.
    """
    graph = model.graph
    batched = batched_values(model)
    node_paths = [node_module_path(node.name) for node in graph.node]
    modules = {
        ".".join(parts[:depth])
        for parts in (path.split(".") for path in node_paths if path)
        for depth in range(1, len(parts) + 1)
    }
    graph_outputs = {output.name for output in graph.output}
    consumers: dict[str, list[int]] = {}
    for index, node in enumerate(graph.node):
        for name in node.input:
            consumers.setdefault(name, []).append(index)
    outputs = {"": ""}
    for module in sorted(modules):
        inside = {
            index for index, path in enumerate(node_paths)
            if path == module or path.startswith(module + ".")
        }
        escaping = [
            name
            for index in sorted(inside)
            for name in graph.node[index].output
            if name in batched
            and (name in graph_outputs or any(user not in inside for user in consumers.get(name, ())))
        ]
        if escaping:
            outputs[module] = escaping[-1]
    served_modules = tuple(sorted(name for name in outputs if name))
    outputs.update({name: name for node in graph.node for name in node.output if name in batched})
    return outputs, served_modules


def batched_values(model: onnx.ModelProto) -> set[str]:
    """Names of the node outputs that hold one row per input image (rank >= 2, first axis not fixed).

    Shapes come from ONNX shape inference; the input's batch axis is dynamic,
    so a value computed per image keeps an unknown first axis, while constants
    and shape arithmetic get fixed shapes. When inference cannot tell (no
    shape found), the value is kept and the engine says what is wrong.
    """
    inferred = onnx.shape_inference.infer_shapes(model).graph
    shapes = {value.name: value.type.tensor_type.shape for value in [*inferred.value_info, *inferred.output]}
    return {
        name
        for node in model.graph.node
        for name in node.output
        if name and (
            name not in shapes
            or (len(shapes[name].dim) >= 2 and not shapes[name].dim[0].HasField("dim_value"))
        )
    }


def cut_at_outputs(model: onnx.ModelProto, outputs: Sequence[str]) -> onnx.ModelProto:
    """The part of ``model`` that computes the values ``outputs``, with them as its only outputs.

    Nodes and weights the values do not depend on are left out: ONNX Runtime
    would skip them but still hold their weights.
    """
    graph = model.graph
    needed: set[str] = set()
    for output in outputs:
        needed |= _ancestors(graph, output)
    declared = {value.name: value for value in graph.output}
    cut = onnx.helper.make_graph(
        [node for node in graph.node if any(name in needed for name in node.output)],
        graph.name,
        [value for value in graph.input if value.name in needed],
        [
            declared.get(name) or onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
            for name in outputs
        ],
        [tensor for tensor in graph.initializer if tensor.name in needed],
    )
    return onnx.helper.make_model(
        cut, ir_version=model.ir_version, opset_imports=list(model.opset_import),
        producer_name=model.producer_name, producer_version=model.producer_version,
    )


def _ancestors(graph: onnx.GraphProto, output: str) -> set[str]:
    """Names of every value (initializers and inputs included) that ``output`` is computed from."""
    producer = {name: node for node in graph.node for name in node.output}
    seen: set[str] = set()
    pending = [output]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        node = producer.get(name)
        if node is not None:
            pending.extend(_reads(node))
    return seen


def _reads(node: onnx.NodeProto) -> Iterator[str]:
    """The values a node reads: its inputs and those its subgraphs (If, Loop) take from outside."""
    yield from node.input
    for attribute in node.attribute:
        for subgraph in (attribute.g, *attribute.graphs):  # g is empty unless the attribute is a graph
            for inner in subgraph.node:
                yield from _reads(inner)
