"""Inference engines: a model cut at one layer behind ``run(batch) -> activations``.

ONNX Runtime runs every model on the CPU (the exported graph with the layer as
its output); torch runs on CUDA when present, taking the layer with a forward
hook as the seed did. A TorchScript module cannot carry hooks, so on torch it
serves only its own output and other layers go to ONNX Runtime.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Protocol

import numpy as np
import onnx
import onnxruntime as ort

from labsight.errors import NotFound
from services.features.models.loading import load_torch_model
from services.features.models.manifest import ModelManifest
from services.features.models.onnx_graph import cut_at_layer, onnx_path


class Engine(Protocol):
    """A loaded model that maps an (N, 3, H, W) float32 batch to one layer's activations."""

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Activations of the layer, (N, ...) float32, row i for input i."""
        ...


class OnnxEngine:
    """ONNX Runtime on the CPU, running the graph up to one layer.

    Parameters
    ----------
    model : onnx.ModelProto
        The whole model.
    module_path : str
        Layer to output (module path, value name, or "" for the model's output).
    threads : int
        Intra-op threads; 0 lets ONNX Runtime use every physical core.
    spin : bool
        Whether idle intra-op threads busy-wait for work (ONNX Runtime's default).
        Off, they sleep and leave the cores to the other processes of a shared
        machine (gRPC, workers, Redis).
    """

    def __init__(
        self, model: onnx.ModelProto, module_path: str, threads: int = 0, spin: bool = True
    ) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        cut = cut_at_layer(model, module_path)
        self.session = ort.InferenceSession(
            cut.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run the session on a float32 batch."""
        (output,) = self.session.run(None, {self.input_name: np.ascontiguousarray(batch, np.float32)})
        return np.asarray(output, dtype=np.float32)


class TorchEngine:
    """Torch on one device, the layer's output taken by a forward hook (its first call).

    Parameters
    ----------
    module : torch.nn.Module
        The model in eval mode (moved to ``device`` here).
    module_path : str
        Submodule whose output is wanted; "" for the model's output.
    device : str
        ``"cuda"`` or ``"cpu"``.
    """

    def __init__(self, module: object, module_path: str, device: str) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.module = module.to(self.device)  # type: ignore[attr-defined]
        self.module_path = module_path
        if module_path:
            try:
                self.layer = self.module.get_submodule(module_path)
            except AttributeError:
                raise NotFound(f"layer: the model has no module {module_path!r}") from None
        self._lock = threading.Lock()

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Forward the batch, stopping nothing early; returns the hooked activations."""
        torch = self.torch
        captured: list[object] = []
        with self._lock, torch.inference_mode():
            inputs = torch.from_numpy(np.ascontiguousarray(batch, np.float32)).to(self.device)
            if not self.module_path:
                return self.module(inputs).float().cpu().numpy()

            def keep_first(_module: object, _inputs: object, output: object) -> None:
                if not captured:
                    captured.append(output)

            handle = self.layer.register_forward_hook(keep_first)
            try:
                self.module(inputs)
            finally:
                handle.remove()
            return captured[0].float().cpu().numpy()  # type: ignore[attr-defined]


def cuda_available() -> bool:
    """Whether torch sees a CUDA device."""
    import torch

    return bool(torch.cuda.is_available())


def torch_can_serve(manifest: ModelManifest, module_path: str) -> bool:
    """Whether the torch engine can take this layer of this model (see the module notes)."""
    if manifest.format == "onnx":
        return False
    return manifest.format == "state_dict" or module_path == ""


def uses_cuda(manifest: ModelManifest, layer: str, device: str) -> bool:
    """Whether :func:`build_engine` runs this layer on torch + CUDA (else ONNX Runtime on the CPU)."""
    use_cuda = device == "cuda" or (device == "auto" and cuda_available())
    return use_cuda and torch_can_serve(manifest, manifest.module_path(layer))


def build_engine(
    manifest: ModelManifest,
    layer: str,
    device: str,
    cache_dir: Path,
    threads: int = 0,
    spin: bool = True,
) -> Engine:
    """The engine for one layer of a model: torch on CUDA where it can serve it, else ONNX Runtime.

    Parameters
    ----------
    manifest : ModelManifest
        The model.
    layer : str
        Public layer name or module path.
    device : {"auto", "cpu", "cuda"}
        ``"auto"`` uses CUDA when torch sees it.
    cache_dir : Path
        Where exported ONNX files are kept.
    threads : int
        ONNX Runtime intra-op threads (0: all physical cores).
    spin : bool
        Whether ONNX Runtime's idle intra-op threads busy-wait (its default).
    """
    module_path = manifest.module_path(layer)
    if uses_cuda(manifest, layer, device):
        return TorchEngine(load_torch_model(manifest), module_path, "cuda")
    model = onnx.load(str(onnx_path(manifest, cache_dir)))
    return OnnxEngine(model, module_path, threads, spin)
