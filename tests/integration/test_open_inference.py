"""The Open Inference Protocol of the model services, called by the official tritonclient.

tritonclient wants protobuf < 7 and LabSight protobuf >= 7, so the client
runs in a virtual environment of its own (created here once, from the
package registry, and kept under $LABSIGHT_TEST_CACHE or
~/.cache/labsight-test), as a lab system's would: it runs the plan of
tests/integration/open_inference_client.py against services on loopback.
The features and classifier services run in this process; the segmentation
service runs as ``python -m services.segmentation`` with an operator model
directory of its own.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnx
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from labsight import __version__
from labsight.catalog import CLASSIFIER, FEATURES
from labsight.config import Settings
from labsight.models import (
    ModelManifest,
    ModelRepository,
    ModelServer,
    ServingConfig,
    device_from_env,
    engine_backend,
)
from labsight.oip import grpc_predict_v2_pb2 as oip_pb
from labsight.oip.signatures import PLATFORMS
from labsight.redis_server import free_port
from labsight.runtime.server import RunningServer
from labsight.tables import table_values
from labsight.tensors import to_tensor
from labsight.v1 import features_pb2, features_pb2_grpc
from services.classifier.repository import classifier_repository
from services.classifier.servicer import register as register_classifier
from services.features.deep import preprocess
from services.features.models import feature_repository
from services.features.servicer import register as register_features
from services.segmentation.models.flow_models import SEGMENTATION_TASK, builtin_flow_manifests

pytestmark = pytest.mark.timeout(600)  # the first test may create the client's environment (pip)

TRITONCLIENT = "tritonclient[grpc]==2.73.0"
"""The official client, pinned; a changed pin makes a new environment."""

CACHE_ENV = "LABSIGHT_TEST_CACHE"
CLIENT = Path(__file__).with_name("open_inference_client.py")
TOKEN = "oip-test-token"

TINY_WEIGHTS = np.array([[0.5, -1.0], [2.0, 0.25], [-0.75, 1.5]], np.float32)
TINY_BIAS = np.array([0.1, -0.2, 0.3], np.float32)


@pytest.fixture(scope="session")
def tritonclient_python() -> Path:
    """The Python of a virtual environment with tritonclient[grpc], created once and kept."""
    base = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "labsight-test")
    venv = base / "tritonclient-venv"
    python = venv / "bin" / "python"
    marker = venv / "labsight-requirement.txt"
    base.mkdir(parents=True, exist_ok=True)
    with open(base / "tritonclient-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test session may be creating it
        if python.exists() and marker.exists() and marker.read_text() == TRITONCLIENT:
            return python
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        done = subprocess.run(
            [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", TRITONCLIENT],
            capture_output=True, text=True, timeout=240,
        )
        if done.returncode != 0:
            pytest.fail(f"pip install {TRITONCLIENT} into {venv} failed:\n{done.stderr[-3000:]}")
        marker.write_text(TRITONCLIENT)
    return python


@pytest.fixture
def tritonclient(tritonclient_python: Path, tmp_path: Path) -> Callable[..., list[dict[str, Any]]]:
    """Runs a plan of steps with tritonclient against a url; the answers, step by step."""

    def run(
        url: str, steps: list[dict[str, Any]], headers: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        out = tmp_path / f"client-{uuid.uuid4().hex[:8]}"
        out.mkdir()
        plan = out / "plan.json"
        plan.write_text(json.dumps({"url": url, "headers": headers, "steps": steps}))
        env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
        done = subprocess.run([str(tritonclient_python), str(CLIENT), str(plan), str(out)],
                              capture_output=True, text=True, timeout=240, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads((out / "results.json").read_text())

    return run


def _tiny_flow_model(directory: Path) -> Path:
    """An operator's ONNX model of the segmentation task: a 1x1 convolution from 2 to 3 channels,
    any height and width, input ``pixels`` and graph output ``conv_out`` (the manifest names it
    ``flows``)."""
    helper = onnx.helper
    graph = helper.make_graph(
        [helper.make_node("Conv", ["pixels", "w", "b"], ["conv_out"])],
        "tiny-flow",
        [helper.make_tensor_value_info("pixels", onnx.TensorProto.FLOAT, ["n", 2, "h", "w_"])],
        [helper.make_tensor_value_info("conv_out", onnx.TensorProto.FLOAT, ["n", 3, "h", "w_"])],
        [onnx.numpy_helper.from_array(TINY_WEIGHTS[:, :, None, None], "w"),
         onnx.numpy_helper.from_array(TINY_BIAS, "b")],
    )
    model_dir = directory / "tiny-flow"
    model_dir.mkdir(parents=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
              str(model_dir / "model.onnx"))
    (model_dir / "manifest.toml").write_text(
        'name = "tiny-flow"\nversion = "7"\nformat = "onnx"\nweights = "model.onnx"\n'
        'task = "segmentation"\ninput_channels = 2\ninput_size = [32, 32]\ndynamic_size = true\n'
        'outputs = ["flows"]\nlicence = "CC0-1.0"\nsource = "written by the test"\n'
    )
    return directory


@pytest.fixture(scope="module")
def segmentation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, ModelRepository]]:
    """``python -m services.segmentation`` with an operator model directory; (address, its repository)."""
    model_dir = _tiny_flow_model(tmp_path_factory.mktemp("segmentation-models"))
    port = free_port()
    env = {**os.environ, "LABSIGHT_PORT": str(port), "LABSIGHT_METRICS_PORT": "-1",
           "LABSIGHT_MODEL_DIR": str(model_dir)}
    env.pop("LABSIGHT_SEGMENTATION_PRELOAD", None)
    process = subprocess.Popen([sys.executable, "-m", "services.segmentation"], env=env,
                               cwd=Path(__file__).resolve().parents[2])
    address = f"127.0.0.1:{port}"
    try:
        with grpc.insecure_channel(address) as channel:
            ready = grpc.channel_ready_future(channel)
            ready.result(timeout=120)
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=30)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
        yield address, ModelRepository([model_dir], task=SEGMENTATION_TASK, builtins=builtin_flow_manifests)
    finally:
        process.terminate()
        process.wait(timeout=60)


def _public_layers(manifest: ModelManifest) -> list[str]:
    """The layers the metadata lists besides the outputs."""
    return [name for name, path in manifest.layers.items() if path and name not in manifest.outputs]


def _shape(spec: dict[str, Any]) -> list[int]:
    return [int(side) for side in spec["shape"]]  # JSON carries int64 as strings


def _check_service(answers: list[dict[str, Any]], repository: ModelRepository) -> dict[str, dict[str, Any]]:
    """Check the answers of :func:`_describe_steps`; each model's metadata by name."""
    live, server, index, *models, unknown, wrong_version = answers
    assert live == {"live": True, "ready": True}
    assert server == {"name": f"labsight-{repository.task}", "version": __version__}
    manifests = repository.list()
    assert [(m["name"], m["version"], m["state"]) for m in index["models"]] == [
        (m.name, m.version, "READY") for m in manifests
    ]
    described = {}
    for manifest, by_name, by_version in zip(manifests, models[::2], models[1::2], strict=True):
        assert by_name == by_version
        assert by_name["ready"] is True
        metadata = by_name["metadata"]
        assert metadata["name"] == manifest.name and metadata["versions"] == [manifest.version]
        assert metadata["platform"] == PLATFORMS[engine_backend(manifest, "", device_from_env())]
        (model_input,) = metadata["inputs"]
        sides = [-1, -1] if manifest.dynamic_size else list(manifest.input_size)
        assert model_input["datatype"] == "FP32"
        assert _shape(model_input) == [-1, manifest.input_channels, *sides]
        outputs = metadata["outputs"]
        assert [output["name"] for output in outputs] == [*manifest.outputs, *_public_layers(manifest)]
        assert all(output["datatype"] == "FP32" and _shape(output)[0] == -1 for output in outputs)
        described[manifest.name] = metadata
    assert unknown["error"]["code"] == "NOT_FOUND" and "'no-such-model'" in unknown["error"]["message"]
    assert wrong_version["error"]["code"] == "NOT_FOUND" and "'v0'" in wrong_version["error"]["message"]
    return described


def _describe_steps(repository: ModelRepository) -> list[dict[str, Any]]:
    """Server, index, every model by name and by name and version, then an unknown model and version."""
    models = [
        step for m in repository.list()
        for step in ({"op": "model", "name": m.name}, {"op": "model", "name": m.name, "version": m.version})
    ]
    first = repository.list()[0].name
    return [{"op": "live"}, {"op": "server"}, {"op": "index"}, *models,
            {"op": "model", "name": "no-such-model"}, {"op": "model", "name": first, "version": "v0"}]


def test_every_model_of_every_service_is_reachable_with_its_names_datatypes_and_shapes(
    serve: Callable[..., RunningServer],
    settings: Settings,
    segmentation: tuple[str, ModelRepository],
    tritonclient: Callable[..., list[dict[str, Any]]],
) -> None:
    features = serve(register_features, FEATURES.grpc_services, settings)
    classifier = serve(register_classifier, CLASSIFIER.grpc_services, settings)
    segmentation_address, segmentation_models = segmentation
    services = [(features.address, feature_repository(())), (classifier.address, classifier_repository(())),
                (segmentation_address, segmentation_models)]
    described: dict[str, dict[str, Any]] = {}
    for address, repository in services:
        described |= _check_service(tritonclient(address, _describe_steps(repository)), repository)

    shapes = {name: {o["name"]: _shape(o) for o in data["outputs"]} for name, data in described.items()}
    assert shapes["efficientnet-lite0"] == {
        "output": [-1, 1000], "avgpool": [-1, 1280, 1, 1], "block15": [-1, 320, 7, 7], "logits": [-1, 1000],
    }
    assert shapes["hpa-generated"] == {
        "probabilities": [-1, 19], "features": [-1, 128, 8, 8], "logits": [-1, 19],
    }
    # an operator's ONNX file: its own input name, its output named by the manifest, free sides
    assert described["tiny-flow"]["inputs"][0]["name"] == "pixels"
    assert shapes["tiny-flow"] == {"flows": [-1, 3, -1, -1]}


def test_model_infer_answers_the_numbers_of_the_labsight_api(
    serve: Callable[..., RunningServer],
    settings: Settings,
    segmentation: tuple[str, ModelRepository],
    tritonclient: Callable[..., list[dict[str, Any]]],
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(15)
    features = serve(register_features, FEATURES.grpc_services, settings)
    images = rng.integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    manifest = feature_repository(()).get("efficientnet-lite0")
    batch = preprocess(images, manifest.input_size, manifest.preprocessing)
    np.save(batch_file := tmp_path / "features.npy", batch)
    inputs = [{"name": "input", "datatype": "FP32", "npy": str(batch_file)}]
    raw, typed, default = tritonclient(features.address, [
        {"op": "infer", "model": "efficientnet-lite0", "inputs": inputs, "outputs": ["output", "avgpool"]},
        {"op": "typed_infer", "model": "efficientnet-lite0", "version": "1.0", "inputs": inputs,
         "outputs": ["output"]},
        {"op": "infer", "model": "efficientnet-lite0", "inputs": inputs},
    ])
    assert raw["model_version"] == "1.0" and raw["id"] == "0"
    assert raw["datatypes"] == {"output": "FP32", "avgpool": "FP32"}
    assert list(default["outputs"]) == ["output"]  # no outputs asked for: the model's own
    with grpc.insecure_channel(features.address) as channel:
        stub = features_pb2_grpc.FeatureServiceStub(channel)

        def labsight_features(layer: str, pooling: int) -> np.ndarray:
            answer = stub.ExtractDeepFeatures(features_pb2.ExtractDeepFeaturesRequest(
                model="efficientnet-lite0", layer=layer, pooling=pooling, image_stack=to_tensor(images)))
            return table_values(answer.features)

        logits = labsight_features("logits", features_pb2.POOLING_NONE)
        pooled = labsight_features("avgpool", features_pb2.POOLING_AVERAGE)
    for answer in (raw, typed, default):
        np.testing.assert_allclose(np.load(answer["outputs"]["output"]), logits, rtol=1e-5, atol=1e-5)
    avgpool = np.load(raw["outputs"]["avgpool"]).reshape(3, -1)
    np.testing.assert_allclose(avgpool, pooled, rtol=1e-5, atol=1e-5)

    classifier = serve(register_classifier, CLASSIFIER.grpc_services, settings)
    crops = rng.random((5, 4, 64, 64), dtype=np.float32)
    np.save(crops_file := tmp_path / "crops.npy", crops)
    (answer,) = tritonclient(classifier.address, [{
        "op": "infer", "model": "hpa-generated",
        "inputs": [{"name": "input", "datatype": "FP32", "npy": str(crops_file)}],
    }])
    stack = ModelServer(classifier_repository(()), ServingConfig.from_env())
    try:
        expected = stack.run("hpa-generated", crops)["probabilities"]
    finally:
        stack.close()
    np.testing.assert_allclose(np.load(answer["outputs"]["probabilities"]), expected, rtol=1e-5, atol=1e-5)

    pixels = rng.standard_normal((2, 2, 40, 56)).astype(np.float32)  # not the tile size: any size runs
    np.save(pixels_file := tmp_path / "pixels.npy", pixels)
    pixel_inputs = [{"name": "pixels", "datatype": "FP32", "npy": str(pixels_file)}]
    flows = tritonclient(segmentation[0], [
        {"op": "infer", "model": "tiny-flow", "inputs": pixel_inputs},
        {"op": "typed_infer", "model": "tiny-flow", "inputs": pixel_inputs},
    ])
    convolved = np.einsum("oc,nchw->nohw", TINY_WEIGHTS, pixels) + TINY_BIAS[None, :, None, None]
    for answer in flows:
        np.testing.assert_allclose(np.load(answer["outputs"]["flows"]), convolved, rtol=1e-5, atol=1e-5)


def test_model_infer_refuses_wrong_names_datatypes_and_lengths_naming_them(
    serve: Callable[..., RunningServer],
    settings: Settings,
    tritonclient: Callable[..., list[dict[str, Any]]],
    tmp_path: Path,
) -> None:
    classifier = serve(register_classifier, CLASSIFIER.grpc_services, settings)
    np.save(fp32 := tmp_path / "fp32.npy", np.zeros((1, 4, 64, 64), np.float32))
    np.save(fp64 := tmp_path / "fp64.npy", np.zeros((1, 4, 64, 64), np.float64))
    model = "hpa-generated"
    shape = [1, 4, 64, 64]
    answers = tritonclient(classifier.address, [
        {"op": "infer", "model": model, "inputs": [{"name": "image", "datatype": "FP32", "npy": str(fp32)}]},
        {"op": "infer", "model": model, "inputs": [{"name": "input", "datatype": "FP64", "npy": str(fp64)}]},
        {"op": "raw_request", "model": model,
         "inputs": [{"name": "input", "datatype": "FP32", "shape": shape, "raw_bytes": 100}]},
        {"op": "raw_request", "model": model,
         "inputs": [{"name": "input", "datatype": "FP32", "shape": shape, "fp32_count": 10}]},
        {"op": "raw_request", "model": model,
         "inputs": [{"name": "input", "datatype": "FP32", "shape": shape, "fp64_count": 16384}]},
        {"op": "raw_request", "model": model,
         "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 64, 64], "raw_bytes": 49152}]},
        {"op": "raw_request", "model": model,
         "inputs": [{"name": "input", "datatype": "FP32", "shape": shape, "raw_bytes": 65536},
                    {"name": "mask", "datatype": "FP32", "shape": shape, "raw_bytes": 65536}]},
        {"op": "infer", "model": model, "inputs": [{"name": "input", "datatype": "FP32", "npy": str(fp32)}],
         "outputs": ["probabilities", "logitz"]},
        {"op": "infer", "model": "no-such-model",
         "inputs": [{"name": "input", "datatype": "FP32", "npy": str(fp32)}]},
        {"op": "infer", "model": model, "version": "v0",
         "inputs": [{"name": "input", "datatype": "FP32", "npy": str(fp32)}]},
        {"op": "live"},
    ])
    *refused, still_serving = answers
    expected = [
        ("INVALID_ARGUMENT", ["inputs: unknown input 'image'", "takes one input 'input'"]),
        ("INVALID_ARGUMENT", ["inputs[0] ('input'): datatype 'FP64'", "(FP32, shape [-1, 4, 64, 64])"]),
        ("INVALID_ARGUMENT", ["inputs[0] ('input'): raw_input_contents holds 100 bytes", "takes 65536"]),
        ("INVALID_ARGUMENT", ["inputs[0] ('input'): contents.fp32_contents holds 10 elements",
                              "takes 16384"]),
        ("INVALID_ARGUMENT", ["contents.fp64_contents is set", "contents.fp32_contents"]),
        ("INVALID_ARGUMENT", ["inputs[0] ('input'): shape [1, 3, 64, 64] does not fit"]),
        ("INVALID_ARGUMENT", ["inputs: unknown input 'mask'"]),
        ("INVALID_ARGUMENT", ["outputs[1]: unknown output 'logitz'", "'probabilities'"]),
        ("NOT_FOUND", ["unknown model 'no-such-model'", "hpa-generated"]),
        ("NOT_FOUND", ["model_version: model 'hpa-generated' has no version 'v0'"]),
    ]
    for answer, (code, phrases) in zip(refused, expected, strict=True):
        assert answer["error"]["code"] == code, answer
        for phrase in phrases:
            assert phrase in answer["error"]["message"], (phrase, answer)
    assert still_serving == {"live": True, "ready": True}


def test_a_model_without_its_weights_is_unavailable_and_the_server_not_ready(
    serve: Callable[..., RunningServer],
    settings: Settings,
    tritonclient: Callable[..., list[dict[str, Any]]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "models" / "lost").mkdir(parents=True)
    (tmp_path / "models" / "lost" / "manifest.toml").write_text(
        'name = "lost"\nversion = "2"\nformat = "onnx"\nweights = "gone.onnx"\ntask = "classifier"\n'
        'input_channels = 4\ninput_size = [64, 64]\nlicence = "CC0-1.0"\nsource = "the test"\n'
    )
    monkeypatch.setenv("LABSIGHT_MODEL_DIR", str(tmp_path / "models"))
    classifier = serve(register_classifier, CLASSIFIER.grpc_services, settings)
    live, index, lost = tritonclient(classifier.address, [
        {"op": "live"}, {"op": "index"}, {"op": "model", "name": "lost"},
    ])
    assert live == {"live": True, "ready": False}
    states = {m["name"]: (m["state"], m.get("reason", "")) for m in index["models"]}
    assert states["hpa-generated"] == ("READY", "")
    assert states["lost"][0] == "UNAVAILABLE" and "gone.onnx" in states["lost"][1]
    assert lost["error"]["code"] == "FAILED_PRECONDITION" and "gone.onnx" in lost["error"]["message"]


def test_the_shared_service_token_guards_all_but_liveness_and_readiness(
    serve: Callable[..., RunningServer],
    settings: Settings,
    tritonclient: Callable[..., list[dict[str, Any]]],
) -> None:
    settings.service_token = TOKEN
    classifier = serve(register_classifier, CLASSIFIER.grpc_services, settings)
    live, index, model = tritonclient(
        classifier.address, [{"op": "live"}, {"op": "index"}, {"op": "model", "name": "hpa-generated"}]
    )
    assert live == {"live": True, "ready": True}
    for refused in (index, model):
        assert refused["error"]["code"] == "UNAUTHENTICATED", refused
        assert "authorization: Bearer" in refused["error"]["message"]
    headers = {"authorization": f"Bearer {TOKEN}"}
    (index,) = tritonclient(classifier.address, [{"op": "index"}], headers=headers)
    assert [m["name"] for m in index["models"]] == ["hpa-generated"]


def test_the_proto_is_wire_compatible_with_tritonclients(
    tritonclient: Callable[..., list[dict[str, Any]]],
) -> None:
    """Every message of ours has tritonclient's fields (numbers, types, names); every RPC of ours
    is one of its service's, with the same messages."""
    (described,) = tritonclient("127.0.0.1:1", [{"op": "describe"}])
    theirs = descriptor_pb2.FileDescriptorProto.FromString(base64.b64decode(described["file"]))
    ours = descriptor_pb2.FileDescriptorProto.FromString(oip_pb.DESCRIPTOR.serialized_pb)
    assert ours.package == theirs.package == "inference"

    def fields(message: descriptor_pb2.DescriptorProto) -> dict[str, Any]:
        return {
            "fields": [
                (f.name, f.number, f.type, f.label, f.type_name,
                 f.oneof_index if f.HasField("oneof_index") else None)
                for f in message.field
            ],
            "nested": {nested.name: fields(nested) for nested in message.nested_type},
        }

    their_messages = {message.name: fields(message) for message in theirs.message_type}
    assert {m.name: fields(m) for m in ours.message_type} == {
        m.name: their_messages[m.name] for m in ours.message_type
    }
    (our_service,) = ours.service
    their_service = {s.name: s for s in theirs.service}[our_service.name]
    their_methods = {m.name: (m.input_type, m.output_type) for m in their_service.method}
    assert {m.name: (m.input_type, m.output_type) for m in our_service.method} == {
        m.name: their_methods[m.name] for m in our_service.method
    }
