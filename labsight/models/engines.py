"""Inference engines: a model, or a model cut at one layer, behind ``run(batch) -> outputs``.

ONNX Runtime runs every model on the CPU (the exported graph, cut at the layer
when one is asked for); torch runs on CUDA when the device policy says so,
taking a layer with a forward hook as the features seed did. A TorchScript
module cannot carry hooks, so on torch it serves only its own outputs and
other layers go to ONNX Runtime. A ``torchserve`` or ``tfserving`` model runs
on its external server (:mod:`labsight.remote.engine`), whatever the device.

An ONNX engine gets only the part of the graph its outputs need (the runtime
would hold every weight of the file otherwise), and every ONNX Runtime session
of the process shares one CPU memory arena, so the activation memory of a
batch is held once for the process, not once per loaded model and instance:
what an engine holds on its own is its weights.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import onnxruntime as ort

from labsight.errors import FailedPrecondition, InvalidArgument, echo
from labsight.models.device import Device, resolve_device
from labsight.models.layers import LayerIndex
from labsight.models.loading import load_torch_model
from labsight.models.manifest import ModelManifest
from labsight.models.onnx_graph import cut_at_outputs, layer_outputs, load_onnx
from labsight.remote.engine import remote_engines, remote_layer_index
from labsight.remote.spec import REMOTE_FORMATS

Backend = Literal["onnx", "torch", "remote"]
"""ONNX Runtime on the CPU, torch on CUDA, or an external model server."""

MODEL_OUTPUTS = ""
"""The cut point (and module path) that stands for the model's own outputs, all of them."""


class Engine(Protocol):
    """A loaded model that maps an (N, C, H, W) float32 batch to named outputs, row i for input i."""

    nbytes: int
    """Estimated memory the engine holds: its weights and what the runtime makes of them."""

    output_names: tuple[str, ...]
    """Names of the outputs, in order; one name for a layer."""

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The first (for a layer: the only) output, (N, ...) float32."""
        ...

    def outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Every output by name, each (N, ...) float32."""
        ...

    def close(self) -> None:
        """Release the model; ``run`` raises afterwards."""
        ...

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` released the model."""
        ...


_arena_lock = threading.Lock()
_arena_registered = False


def _share_cpu_arena() -> None:
    """Register, once per process, the CPU arena that sessions opt into with ``use_env_allocators``."""
    global _arena_registered
    with _arena_lock:
        if not _arena_registered:
            memory = ort.OrtMemoryInfo(
                "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
            )
            ort.create_and_register_allocator(memory, ort.OrtArenaCfg({}))
            _arena_registered = True


class OnnxEngine:
    """ONNX Runtime on the CPU, running a serialized model (usually a cut of one).

    Parameters
    ----------
    model : bytes
        The serialized ONNX model (see ``cut_at_outputs``).
    threads : int
        Intra-op threads; 0 lets ONNX Runtime use every physical core.
    spin : bool
        Whether idle intra-op threads busy-wait for work (ONNX Runtime's default).
        Off, they sleep and leave the cores to the other processes of a shared
        machine (gRPC, workers, Redis).
    shrink_arena : bool
        Whether each run hands the shared CPU arena's memory beyond its first
        region back at its end. Off (ONNX Runtime's default), the arena keeps
        what the largest concurrent batches needed (measured: +380 MiB after one
        batch of 16 Inception-v3 images); on, it costs about 5-10% per batch.
    output_names : sequence of str, optional
        Names of the graph's outputs in order; the graph's own names by default.
    run_rows : int
        Most rows one session run takes: a larger batch runs in slices of this many
        rows, their outputs joined (0: the whole batch at once). A CNN's activations
        for many rows outgrow the CPU's caches; EfficientNet-Lite0 ``avgpool`` on
        single-threaded sessions, two at once on 2 cores (AMD EPYC, 2 MiB L2 each):
        9.2-9.3 CPU ms per image in runs of 1-2 rows, 9.5 in runs of 4, 9.8-10.4 in
        runs of 8 to 32.
    """

    def __init__(self, model: bytes, threads: int = 0, spin: bool = True,
                 shrink_arena: bool = False, output_names: Sequence[str] = (),
                 run_rows: int = 0) -> None:
        _share_cpu_arena()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        options.add_session_config_entry("session.use_env_allocators", "1")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self._session: ort.InferenceSession | None = ort.InferenceSession(
            model, options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self._session.get_inputs()[0].name
        graph_outputs = tuple(output.name for output in self._session.get_outputs())
        self.output_names = tuple(output_names) or graph_outputs
        if len(self.output_names) != len(graph_outputs):
            raise ValueError(
                f"output_names: {len(self.output_names)} names for {len(graph_outputs)} graph outputs"
            )
        self.run_rows = max(0, run_rows)
        self._run_options = ort.RunOptions()
        if shrink_arena:
            self._run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        # Measured (ONNX Runtime 1.32, cuts of both built-ins from 0.1 to 83 MB): a session holds
        # 1.35-1.7x its serialized model, which is almost all weights, plus about 1.5 MB.
        self.nbytes = len(model) * 3 // 2 + (2 << 20)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The first output of the session on a float32 batch."""
        return self.outputs(batch)[self.output_names[0]]

    def outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Every output of the session on a float32 batch, by name."""
        session = self._session
        if session is None:
            raise RuntimeError("the engine is closed")
        batch = np.ascontiguousarray(batch, np.float32)
        step = self.run_rows or max(len(batch), 1)
        slices = [
            session.run(None, {self.input_name: batch[start : start + step]}, self._run_options)
            for start in range(0, max(len(batch), 1), step)
        ]
        return {
            name: np.asarray(
                slices[0][index] if len(slices) == 1
                else np.concatenate([results[index] for results in slices]),
                dtype=np.float32,
            )
            for index, name in enumerate(self.output_names)
        }

    def close(self) -> None:
        """Release the session and its weights."""
        self._session = None

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` released the session."""
        return self._session is None


class TorchEngine:
    """Torch on one device: the model's outputs, or one layer's taken by a forward hook.

    Parameters
    ----------
    module : torch.nn.Module
        The model in eval mode (moved to ``device`` here).
    module_path : str
        Submodule whose output is wanted (its first call's); "" for the model's outputs.
    device : str
        ``"cuda"`` or ``"cpu"``.
    output_names : sequence of str
        Names of the model's outputs, in the order it returns them (used when
        ``module_path`` is ""); a layer's one output is named by its path.
    """

    def __init__(self, module: object, module_path: str, device: str,
                 output_names: Sequence[str] = ("output",)) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.module: object | None = module.to(self.device)  # type: ignore[attr-defined]
        self.module_path = module_path
        self.output_names = (module_path,) if module_path else tuple(output_names)
        self.layer: Any = None
        if module_path:
            try:
                self.layer = self.module.get_submodule(module_path)  # type: ignore[attr-defined]
            except AttributeError:
                raise InvalidArgument(f"layer: the model has no module {echo(module_path)}") from None
        tensors = [*module.parameters(), *module.buffers()]  # type: ignore[attr-defined]
        self.nbytes = sum(t.numel() * t.element_size() for t in tensors)
        self._lock = threading.Lock()

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The first (for a layer: the only) output on the batch."""
        return self.outputs(batch)[self.output_names[0]]

    def outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Forward the batch, stopping nothing early; the outputs (or hooked activations) by name."""
        torch = self.torch
        captured: list[object] = []
        with self._lock, torch.inference_mode():
            module = self.module
            if module is None:
                raise RuntimeError("the engine is closed")
            inputs = torch.from_numpy(np.ascontiguousarray(batch, np.float32)).to(self.device)
            if not self.module_path:
                produced = module(inputs)  # type: ignore[operator]
                results = list(produced) if isinstance(produced, (tuple, list)) else [produced]
                return {
                    name: result.float().cpu().numpy()
                    for name, result in zip(self.output_names, results, strict=False)
                }

            def keep_first(_module: object, _inputs: object, output: object) -> None:
                if not captured:
                    captured.append(output)

            handle = self.layer.register_forward_hook(keep_first)
            try:
                module(inputs)  # type: ignore[operator]
            finally:
                handle.remove()
            return {self.module_path: captured[0].float().cpu().numpy()}  # type: ignore[attr-defined]

    def close(self) -> None:
        """Drop the module and hand its device memory back to the device."""
        with self._lock:
            self.module = self.layer = None
        if self.device.type == "cuda":
            self.torch.cuda.empty_cache()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` dropped the module."""
        return self.module is None


def torch_can_serve(manifest: ModelManifest, module_path: str) -> bool:
    """Whether the torch engine can take this layer of this model (see the module notes)."""
    if manifest.format == "onnx" or manifest.format in REMOTE_FORMATS:
        return False
    return manifest.format == "state_dict" or module_path == MODEL_OUTPUTS


def uses_cuda(manifest: ModelManifest, layer: str, device: Device) -> bool:
    """Whether :func:`build_engine` runs this layer on torch + CUDA (else ONNX Runtime on the CPU)."""
    return resolve_device(device) == "cuda" and torch_can_serve(manifest, manifest.module_path(layer))


def engine_backend(manifest: ModelManifest, layer: str, device: Device) -> Backend:
    """The backend :func:`build_engines` uses for this layer of this model on ``device``."""
    if manifest.format in REMOTE_FORMATS:
        return "remote"
    return "torch" if uses_cuda(manifest, layer, device) else "onnx"


def build_layer_index(manifest: ModelManifest, backend: Backend, cache_dir: Path) -> LayerIndex:
    """Every layer of the model that ``backend`` can serve; parses the model once.

    Parameters
    ----------
    manifest : ModelManifest
        The model.
    backend : {"onnx", "torch", "remote"}
        ONNX layers are module paths and value names of the exported graph;
        torch layers are the module's submodules; remote layers are the
        manifest's output names. All serve ``""``, the model's outputs.
    cache_dir : Path
        Where exported ONNX files are kept.
    """
    if backend == "remote":
        return remote_layer_index(manifest)
    if backend == "torch":
        module = load_torch_model(manifest)
        modules = tuple(sorted(name for name, _ in module.named_modules() if name))
        targets = {MODEL_OUTPUTS: MODEL_OUTPUTS, **{name: name for name in modules}}
        return LayerIndex(manifest, targets, modules)
    targets, modules = layer_outputs(load_onnx(manifest, cache_dir))
    return LayerIndex(manifest, targets, modules)


def build_engines(
    manifest: ModelManifest,
    target: str,
    backend: Backend,
    count: int,
    cache_dir: Path,
    threads: int = 0,
    spin: bool = True,
    shrink_arena: bool = False,
    run_rows: int = 0,
) -> list[Engine]:
    """``count`` engines for one cut point of a model (from :meth:`LayerIndex.target`).

    Parameters
    ----------
    manifest : ModelManifest
        The model.
    target : str
        ONNX value name or torch module path the engines output; ``""`` for the
        model's outputs, named as the manifest names them.
    backend : {"onnx", "torch", "remote"}
        ONNX Runtime on the CPU, torch on CUDA, or the manifest's model server.
    count : int
        Instances, each with its own session (or module).
    cache_dir : Path
        Where exported ONNX files are kept.
    threads : int
        ONNX Runtime intra-op threads (0: all physical cores).
    spin : bool
        Whether ONNX Runtime's idle intra-op threads busy-wait (its default).
    shrink_arena : bool
        Whether each ONNX Runtime run hands spare arena memory back (see :class:`OnnxEngine`).
    run_rows : int
        Most rows one ONNX Runtime run takes (see :class:`OnnxEngine`); 0: the whole batch.

    Raises
    ------
    FailedPrecondition
        If an ONNX model has fewer outputs than its manifest names.
    """
    if backend == "remote":
        return [*remote_engines(manifest, target, count)]
    if backend == "torch":
        return [
            TorchEngine(load_torch_model(manifest), target, "cuda", manifest.outputs)
            for _ in range(count)
        ]
    serialized, names = _cut_graph_bytes(manifest, target, cache_dir)
    return [OnnxEngine(serialized, threads, spin, shrink_arena, names, run_rows)
            for _ in range(count)]


def _cut_graph_bytes(
    manifest: ModelManifest, target: str, cache_dir: Path
) -> tuple[bytes, tuple[str, ...]]:
    """The model's ONNX graph cut at ``target``, serialized, and the names of its outputs. The
    parsed graphs go when this returns, before a session is built from the bytes."""
    model = load_onnx(manifest, cache_dir)
    if target != MODEL_OUTPUTS:
        return cut_at_outputs(model, [target]).SerializeToString(), (target,)
    graph_outputs = [output.name for output in model.graph.output]
    if len(graph_outputs) < len(manifest.outputs):
        raise FailedPrecondition(
            f"model {manifest.name!r}: its ONNX graph has {len(graph_outputs)} outputs, the "
            f"manifest names {len(manifest.outputs)}: {list(manifest.outputs)}"
        )
    cut = cut_at_outputs(model, graph_outputs[: len(manifest.outputs)])
    return cut.SerializeToString(), tuple(manifest.outputs)


def build_engine(
    manifest: ModelManifest,
    layer: str,
    device: Device,
    cache_dir: Path,
    threads: int = 0,
    spin: bool = True,
    run_rows: int = 0,
) -> Engine:
    """One engine for one layer of a model: torch on CUDA where it can serve it, else ONNX Runtime.

    For direct use (tests, benchmarks); services go through a
    :class:`~labsight.models.serving.ModelServer`, which keeps each model's
    :class:`LayerIndex` and batches requests.

    Parameters
    ----------
    manifest : ModelManifest
        The model.
    layer : str
        Public layer name, module path or value name; ``""`` for the model's outputs.
    device : {"auto", "cpu", "cuda"}
        The device policy (see :mod:`labsight.models.device`).
    cache_dir : Path
        Where exported ONNX files are kept.
    threads : int
        ONNX Runtime intra-op threads (0: all physical cores).
    spin : bool
        Whether ONNX Runtime's idle intra-op threads busy-wait (its default).
    run_rows : int
        Most rows one ONNX Runtime run takes (0: every batch whole; see :class:`OnnxEngine`).

    Raises
    ------
    InvalidArgument
        If the model has no such layer.
    """
    backend = engine_backend(manifest, layer, device)
    target = build_layer_index(manifest, backend, cache_dir).target(layer)
    return build_engines(manifest, target, backend, 1, cache_dir, threads, spin,
                         run_rows=run_rows)[0]
