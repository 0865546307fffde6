"""GPU check of the shared model stack: each built-in model on torch + CUDA against ONNX Runtime on the CPU.

Run from the repository root on a machine with a CUDA GPU, PyTorch and ONNX Runtime:

    python bench/cuda_parity.py [--batch 32] [--runs 10]

For every built-in model whose weights are installed (the features, segmentation and
classifier services' repositories), the script builds the two engines the services build
for its outputs: ``device="cuda"`` (a torch module on the GPU) and ``device="cpu"`` (the
exported graph in ONNX Runtime, one instance on every usable CPU). Both run the same batch
of ``--batch`` inputs of the model's input shape (seed 0; uniform in [0, 1) for a
classifier's crops, a standard normal for the others' normalised inputs): an exact check,
not a quality claim. Printed per model and output: the largest absolute difference, the
same relative to the output's range, and, for a classifier, the share of (cell, class)
decisions at the model's thresholds that agree. Then each engine's inputs per
second over ``--runs`` timed batches after a warm-up (engine calls only: no gRPC, no
batching); the GPU figure includes the host-device copies. A JSON line closes the output.
The script exits 1 when no GPU is visible or an output's relative difference exceeds
``--tolerance``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labsight.models import ModelManifest, ModelRepository  # noqa: E402
from labsight.models.engines import Engine, TorchEngine, build_engine  # noqa: E402
from labsight.models.loading import load_torch_model  # noqa: E402
from labsight.runtime.cpus import usable_cpus  # noqa: E402
from services.classifier.repository import classifier_repository, load_thresholds  # noqa: E402
from services.features.models.repository import feature_repository  # noqa: E402
from services.segmentation.models.flow_models import (  # noqa: E402
    SEGMENTATION_TASK,
    builtin_flow_manifests,
)


def main() -> int:
    """Compare and time every installed built-in model; 0 when all agree within the tolerance."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--tolerance", type=float, default=1e-2,
                        help="largest accepted |cuda - cpu| relative to the output's range")
    parser.add_argument("--device", default="cuda", help="the torch side's device (cpu: a dry run)")
    args = parser.parse_args()
    import onnxruntime
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device visible: nothing to check")
        return 1
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"GPU {gpu}, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
          f"{usable_cpus()} CPUs for ONNX Runtime, TF32 convolutions "
          f"{torch.backends.cudnn.allow_tf32}, load {os.getloadavg()}")
    repositories = [
        feature_repository(),
        ModelRepository(task=SEGMENTATION_TASK, builtins=builtin_flow_manifests),
        classifier_repository(),
    ]
    rows: list[dict[str, object]] = []
    within = True
    with tempfile.TemporaryDirectory() as cache:
        for repository in repositories:
            for manifest in repository.list():
                row = _compare(manifest, Path(cache), args)
                rows.append(row)
                within = within and all(d <= args.tolerance for d in row["relative"].values())  # type: ignore[union-attr]
    print(json.dumps({"gpu": gpu, "batch": args.batch, "models": rows}))
    return 0 if within and rows else 1


def _compare(manifest: ModelManifest, cache: Path, args: argparse.Namespace) -> dict[str, object]:
    """One model's differences and speeds on both engines, printed and returned."""
    shape = (args.batch, *manifest.input_shape)
    rng = np.random.default_rng(0)
    # Classifier crops are intensities in [0, 1]; the other models take normalised inputs.
    batch = (rng.random(shape, np.float32) if manifest.task == "classifier"
             else rng.standard_normal(shape, np.float32))
    # On CUDA the engine the services build; a dry run puts the same torch module on the CPU,
    # which build_engine never does (it serves the CPU from ONNX Runtime).
    torch_engine = (build_engine(manifest, "", args.device, cache) if args.device == "cuda"
                    else TorchEngine(load_torch_model(manifest), "", args.device, manifest.outputs))
    onnx_engine = build_engine(manifest, "", "cpu", cache, threads=usable_cpus())
    gpu_out = torch_engine.outputs(batch)
    cpu_out = onnx_engine.outputs(batch)
    absolute: dict[str, float] = {}
    relative: dict[str, float] = {}
    for output, expected in cpu_out.items():
        difference = float(np.max(np.abs(gpu_out[output] - expected)))
        absolute[output] = difference
        relative[output] = difference / max(float(np.ptp(expected)), 1e-12)
    row: dict[str, object] = {"model": manifest.name, "task": manifest.task,
                              "absolute": absolute, "relative": relative}
    if manifest.task == "classifier":
        thresholds = load_thresholds(manifest)
        first = manifest.outputs[0]
        decisions = (gpu_out[first] >= thresholds) == (cpu_out[first] >= thresholds)
        row["decisions_agree"] = float(decisions.mean())
    row["gpu_per_s"] = _rate(torch_engine, batch, args.runs, _synchronise(args.device))
    row["cpu_per_s"] = _rate(onnx_engine, batch, args.runs, lambda: None)
    torch_engine.close()
    onnx_engine.close()
    print(f"{manifest.task}/{manifest.name}: max |diff| "
          + ", ".join(f"{k} {absolute[k]:.2e} ({relative[k]:.1e} of range)" for k in absolute)
          + (f"; decisions agree {row['decisions_agree']:.4f}" if "decisions_agree" in row else "")
          + f"; torch {args.device} {row['gpu_per_s']:.0f}/s, ONNX Runtime CPU {row['cpu_per_s']:.0f}/s")
    return row


def _rate(engine: Engine, batch: np.ndarray, runs: int, synchronise: Callable[[], None]) -> float:
    """Inputs per second of ``engine`` on ``batch`` over ``runs`` calls after one warm-up."""
    engine.outputs(batch)
    synchronise()
    start = time.perf_counter()
    for _ in range(runs):
        engine.outputs(batch)
    synchronise()
    return runs * len(batch) / (time.perf_counter() - start)


def _synchronise(device: str) -> Callable[[], None]:
    """Waits for the GPU's queued work (outputs already come back to the host; this is a guard)."""
    import torch

    return torch.cuda.synchronize if device == "cuda" else (lambda: None)


if __name__ == "__main__":
    sys.exit(main())
