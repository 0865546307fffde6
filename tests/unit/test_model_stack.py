"""The shared model stack with a network of this test: any channel count, named outputs, any size."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from labsight.errors import FailedPrecondition, InvalidArgument, NotFound
from labsight.models import (
    ModelManifest,
    ModelRepository,
    ModelServer,
    Preprocessing,
    ServingConfig,
    TorchEngine,
    architecture_names,
    build_engine,
    load_torch_model,
    onnx_path,
    register_architecture,
)

torch.set_num_threads(1)


class TwoHeads(nn.Module):
    """A fully convolutional net with two outputs, as a flow network has (flows and a probability)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Conv2d(channels, 4, 3, padding=1)
        self.flows = nn.Conv2d(4, 2, 1)
        self.prob = nn.Conv2d(4, 1, 1)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = torch.relu(self.body(images))
        return self.flows(hidden), torch.sigmoid(self.prob(hidden))


def two_heads(manifest: ModelManifest) -> nn.Module:
    return TwoHeads(manifest.input_channels)


register_architecture("test-two-heads", two_heads)


def _manifest(folder: Path, channels: int, dynamic: bool, name: str = "two-heads") -> ModelManifest:
    """A state_dict model of ``TwoHeads`` with random weights saved under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(channels)
    weights = folder / f"{name}-{channels}.pt"
    if not weights.exists():
        torch.save(TwoHeads(channels).state_dict(), weights)
    return ModelManifest(
        name=f"{name}-{channels}{'-dyn' if dynamic else ''}", version="1", format="state_dict",
        weights=weights, architecture="test-two-heads", task="testing", input_channels=channels,
        input_size=(16, 24), dynamic_size=dynamic, outputs=("flows", "prob"),
        preprocessing=Preprocessing.identity(channels), licence="test", source="random weights",
    )


def _server(manifests: list[ModelManifest], cache: Path, **config: object) -> ModelServer:
    repository = ModelRepository(task="testing", builtins=lambda: manifests)
    settings = {"cache_dir": cache, "device": "cpu", "instances": 1, "threads": 1, **config}
    return ModelServer(repository, ServingConfig(**settings))  # type: ignore[arg-type]


def _torch_outputs(manifest: ModelManifest, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.inference_mode():
        flows, prob = load_torch_model(manifest)(torch.from_numpy(batch))
    return flows.numpy(), prob.numpy()


def test_a_two_channel_dynamic_model_exports_with_free_height_and_width(
    tmp_path: Path, model_cache: Path
) -> None:
    manifest = _manifest(tmp_path, channels=2, dynamic=True)
    graph = onnx.load(str(onnx_path(manifest, model_cache))).graph
    dims = [(d.dim_param or d.dim_value) for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 2, "height", "width"]
    assert [output.name for output in graph.output] == ["flows", "prob"]
    server = _server([manifest], model_cache)
    for shape in ((3, 2, 16, 24), (2, 2, 40, 33)):  # the tile size (batched) and another (run at once)
        batch = np.random.default_rng(1).normal(size=shape).astype(np.float32)
        outputs = server.run(manifest.name, batch)
        flows, prob = _torch_outputs(manifest, batch)
        assert list(outputs) == ["flows", "prob"]
        assert outputs["flows"].shape == (shape[0], 2, *shape[2:])
        assert outputs["prob"].shape == (shape[0], 1, *shape[2:])
        np.testing.assert_allclose(outputs["flows"], flows, atol=1e-5)
        np.testing.assert_allclose(outputs["prob"], prob, atol=1e-5)


def test_a_one_channel_fixed_size_model_refuses_other_shapes(tmp_path: Path, model_cache: Path) -> None:
    manifest = _manifest(tmp_path, channels=1, dynamic=False)
    graph = onnx.load(str(onnx_path(manifest, model_cache))).graph
    dims = [(d.dim_param or d.dim_value) for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 1, 16, 24]
    server = _server([manifest], model_cache)
    with pytest.raises(InvalidArgument, match=r"batch: model 'two-heads-1' takes 16x24 inputs, got 20x24"):
        server.run(manifest.name, np.zeros((1, 1, 20, 24), np.float32))
    with pytest.raises(InvalidArgument, match=r"batch: expected a \(N, 1, H, W\) batch"):
        server.run(manifest.name, np.zeros((1, 3, 16, 24), np.float32))
    with pytest.raises(NotFound, match="model: unknown model 'two-heads-9'"):
        server.run("two-heads-9", np.zeros((1, 1, 16, 24), np.float32))


def test_concurrent_requests_share_one_batch_and_each_gets_its_own_rows_of_every_output(
    tmp_path: Path, model_cache: Path
) -> None:
    manifest = _manifest(tmp_path, channels=2, dynamic=True)
    # The batch closes when it holds 4 rows, long before its 60 s deadline.
    server = _server([manifest], model_cache, max_batch_size=4, max_queue_delay_ms=60_000)
    inputs = [np.random.default_rng(seed).normal(size=(1, 2, 16, 24)).astype(np.float32)
              for seed in range(4)]
    answers: dict[int, dict[str, np.ndarray]] = {}

    def client(index: int) -> None:
        answers[index] = server.run(manifest.name, inputs[index])

    threads = [threading.Thread(target=client, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    with server.served(manifest) as served:
        assert served.batcher.stats().batches == 1 and served.batcher.stats().items == 4
    for index, batch in enumerate(inputs):
        flows, prob = _torch_outputs(manifest, batch)
        np.testing.assert_allclose(answers[index]["flows"], flows, atol=1e-5)
        np.testing.assert_allclose(answers[index]["prob"], prob, atol=1e-5)
    server.close()
    assert len(server.engines) == 0 and all(engine.closed for engine in served.engines)


def test_a_request_of_one_run_slice_starts_at_once_on_the_cpu(tmp_path: Path, model_cache: Path) -> None:
    # ONNX Runtime runs a batch in slices of run_rows x threads rows: a larger batch buys
    # nothing, so an idle instance must not wait out the 60 s delay for one.
    manifest = _manifest(tmp_path, channels=2, dynamic=False)
    server = _server([manifest], model_cache, max_batch_size=32, max_queue_delay_ms=60_000,
                     run_rows=2)
    try:
        outputs = server.run(manifest.name, np.zeros((3, 2, 16, 24), np.float32))
        with server.served(manifest) as served:
            assert served.batcher.ready_items == 2
    finally:
        server.close()
    assert outputs["flows"].shape == (3, 2, 16, 24)


def test_the_torch_engine_names_every_output_and_a_layer_by_its_path(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, channels=2, dynamic=True)
    batch = np.ones((1, 2, 8, 8), np.float32)
    whole = TorchEngine(load_torch_model(manifest), "", "cpu", manifest.outputs)
    assert {name: value.shape for name, value in whole.outputs(batch).items()} == {
        "flows": (1, 2, 8, 8), "prob": (1, 1, 8, 8)}
    layer = TorchEngine(load_torch_model(manifest), "body", "cpu", manifest.outputs)
    assert list(layer.outputs(batch)) == ["body"] and layer.run(batch).shape == (1, 4, 8, 8)
    layer.close()
    with pytest.raises(RuntimeError, match="closed"):
        layer.run(batch)


def test_a_layer_of_a_multi_output_model_is_served_alone(tmp_path: Path, model_cache: Path) -> None:
    manifest = _manifest(tmp_path, channels=2, dynamic=True)
    hidden = build_engine(manifest, "body", "cpu", model_cache)
    assert hidden.run(np.ones((2, 2, 16, 24), np.float32)).shape == (2, 4, 16, 24)
    server = _server([manifest], model_cache)
    (values,) = server.run(manifest.name, np.ones((1, 2, 16, 24), np.float32), layer="body").values()
    assert values.shape == (1, 4, 16, 24)


def test_architectures_register_once_by_name(tmp_path: Path) -> None:
    assert "test-two-heads" in architecture_names()
    register_architecture("test-two-heads", two_heads)  # the same builder again: no change
    with pytest.raises(ValueError, match="'test-two-heads' is registered already"):
        register_architecture("test-two-heads", lambda manifest: TwoHeads(1))
    unknown = ModelManifest(**{**_manifest(tmp_path, 1, False).__dict__, "architecture": "no-such-net"})
    with pytest.raises(FailedPrecondition, match="architecture: unknown 'no-such-net'; known: .*'test-two-"):
        load_torch_model(unknown)
