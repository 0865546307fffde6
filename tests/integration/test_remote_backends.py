"""Models on external servers: a features service whose manifests point at a TorchServe and a TF Serving.

The servers are real gRPC servers on loopback implementing the published
TorchServe inference API and TF Serving PredictionService; their model is a
fixed linear map. They decode and encode with numpy and hand-built
TensorProtos, not with LabSight's codecs.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest

from labsight.catalog import FEATURES
from labsight.config import Settings
from labsight.images import image_from_array
from labsight.models import ModelServer, Preprocessing, ServingConfig, load_manifest
from labsight.oip import grpc_predict_v2_pb2 as oip_pb
from labsight.oip import grpc_predict_v2_pb2_grpc as oip_grpc
from labsight.oip.servicer import add_open_inference
from labsight.remote import tf_predict_pb2, tf_predict_pb2_grpc, tf_tensor_pb2, tf_tensor_shape_pb2
from labsight.remote import tf_types_pb2 as types
from labsight.remote import torchserve_inference_pb2 as ts_pb
from labsight.remote import torchserve_inference_pb2_grpc as ts_grpc
from labsight.runtime.server import RunningServer
from labsight.tables import table_values
from labsight.v1 import features_pb2, features_pb2_grpc
from services.features.deep import preprocess
from services.features.extractor import DeepFeatureExtractor, ExtractorConfig
from services.features.models import feature_repository
from services.features.servicer import FeatureServicer

SIZE = 8
WEIGHTS = np.random.default_rng(3).normal(size=(3 * SIZE * SIZE, 5)).astype(np.float32)
"""The remote model: a flattened (C, H, W) input (TF Serving's: (H, W, C)) times WEIGHTS."""
RNG = np.random.default_rng(4)
IMAGES = [RNG.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8), RNG.integers(0, 256, (12, 9, 3), np.uint8),
          RNG.integers(0, 256, (SIZE, SIZE), dtype=np.uint8)]


def _linear(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    embedding = batch.reshape(len(batch), -1) @ WEIGHTS
    return embedding, embedding.sum(axis=1, keepdims=True)


@dataclass
class Behaviour:
    """What a test server answers: the right outputs, or a fault chosen by the test."""

    fault: str = ""
    rows: list[int] = field(default_factory=list)


class TorchServe(ts_grpc.InferenceAPIsServiceServicer):
    """Model "linear": input "data" holds the batch (.npy or JSON); the prediction is .npz or JSON."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour

    def Predictions(self, request: ts_pb.PredictionsRequest, context: grpc.ServicerContext
                    ) -> ts_pb.PredictionResponse:
        if request.model_name != "linear":
            context.abort(grpc.StatusCode.NOT_FOUND, f"Model not found: {request.model_name}")
        raw = request.input["data"]
        is_json = raw.startswith(b"[")
        batch = np.asarray(json.loads(raw), np.float32) if is_json else np.load(io.BytesIO(raw))
        self.behaviour.rows.append(len(batch))
        if self.behaviour.fault == "crash":
            context.abort(grpc.StatusCode.INTERNAL, "handler raised: CUDA out of memory")
        if self.behaviour.fault == "garbage":
            return ts_pb.PredictionResponse(prediction=b"\x00not an array")
        embedding, score = _linear(batch)
        if self.behaviour.fault == "rows":
            embedding = embedding[:1]
        if is_json:
            return ts_pb.PredictionResponse(prediction=json.dumps(
                {"emb": embedding.tolist(), "score": score.tolist()}).encode())
        buffer = io.BytesIO()
        np.savez(buffer, emb=embedding, score=score)
        return ts_pb.PredictionResponse(prediction=buffer.getvalue())


class TfServing(tf_predict_pb2_grpc.PredictionServiceServicer):
    """Model "linear" version 3, signature "serving_default": input "images" (N, H, W, C) float32;
    outputs "embedding" as tensor_content and "score" as float_val."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour

    def Predict(self, request: tf_predict_pb2.PredictRequest, context: grpc.ServicerContext
                ) -> tf_predict_pb2.PredictResponse:
        spec = request.model_spec
        if (spec.name, spec.version.value, spec.signature_name) != ("linear", 3, "serving_default"):
            context.abort(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {spec}")
        tensor = request.inputs["images"]
        shape = [dim.size for dim in tensor.tensor_shape.dim]
        assert tensor.dtype == types.DT_FLOAT and shape[1:] == [SIZE, SIZE, 3]
        batch = np.frombuffer(tensor.tensor_content, "<f4").reshape(shape)
        self.behaviour.rows.append(len(batch))
        embedding, score = _linear(batch)
        if self.behaviour.fault == "rows":
            embedding = embedding[:1]

        def dims(array: np.ndarray) -> tf_tensor_shape_pb2.TensorShapeProto:
            return tf_tensor_shape_pb2.TensorShapeProto(
                dim=[tf_tensor_shape_pb2.TensorShapeProto.Dim(size=n) for n in array.shape])

        outputs = {
            "embedding": tf_tensor_pb2.TensorProto(
                dtype=types.DT_FLOAT, tensor_shape=dims(embedding),
                tensor_content=embedding.astype("<f4").tobytes()),
            "score": tf_tensor_pb2.TensorProto(
                dtype=types.DT_FLOAT, tensor_shape=dims(score), float_val=score.ravel().tolist()),
        }
        return tf_predict_pb2.PredictResponse(outputs={n: outputs[n] for n in request.output_filter})


@dataclass
class ModelServers:
    torchserve: str
    tfserving: str
    behaviour: Behaviour


@pytest.fixture
def model_servers() -> Iterator[ModelServers]:
    behaviour = Behaviour()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    ts_grpc.add_InferenceAPIsServiceServicer_to_server(TorchServe(behaviour), server)
    other = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    tf_predict_pb2_grpc.add_PredictionServiceServicer_to_server(TfServing(behaviour), other)
    ts_port = server.add_insecure_port("127.0.0.1:0")
    tf_port = other.add_insecure_port("127.0.0.1:0")
    server.start()
    other.start()
    yield ModelServers(f"127.0.0.1:{ts_port}", f"127.0.0.1:{tf_port}", behaviour)
    server.stop(0).wait()
    other.stop(0).wait()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _model_dir(root: Path, servers: ModelServers) -> Path:
    """Manifests of remote models (features task) pointing at the test servers or at a closed port."""
    common = f'version = "1"\ninput_size = [{SIZE}, {SIZE}]\nlicence = "test"\nsource = "test server"\n'
    manifests = {
        "ts-linear": f'format = "torchserve"\noutputs = ["embedding", "score"]\n[remote]\n'
                     f'endpoint = "{servers.torchserve}"\nmodel = "linear"\noutputs = ["emb", "score"]\n',
        "ts-json": f'format = "torchserve"\noutputs = ["emb", "score"]\n[remote]\n'
                   f'endpoint = "{servers.torchserve}"\nmodel = "linear"\nencoding = "json"\n',
        "ts-unknown": f'format = "torchserve"\noutputs = ["emb"]\n[remote]\n'
                      f'endpoint = "{servers.torchserve}"\nmodel = "resnet"\n',
        "tf-linear": f'format = "tfserving"\noutputs = ["embedding", "score"]\n[remote]\n'
                     f'endpoint = "{servers.tfserving}"\nmodel = "linear"\nversion = "3"\n'
                     f'input = "images"\nchannels_last = true\n',
        "tf-gone": f'format = "tfserving"\n[remote]\nendpoint = "127.0.0.1:{_closed_port()}"\n'
                   f'model = "linear"\ntimeout_s = 20\n',
    }
    return write_manifests(root, common, manifests)


def write_manifests(root: Path, common: str, manifests: dict[str, str]) -> Path:
    """``root/<name>/manifest.toml`` for each named manifest body, after its name and ``common``."""
    for name, body in manifests.items():
        (root / name).mkdir(parents=True)
        (root / name / "manifest.toml").write_text(f'name = "{name}"\n{common}{body}')
    return root


def serve_features(
    serve: Callable[..., RunningServer], settings: Settings, model_dir: Path
) -> Iterator[features_pb2_grpc.FeatureServiceStub]:
    """A features service (real gRPC) serving only the models of ``model_dir``; yields its stub."""
    extractor = DeepFeatureExtractor(feature_repository([model_dir], False), ExtractorConfig.from_env())

    def register(server: grpc.Server, _: Settings) -> None:
        features_pb2_grpc.add_FeatureServiceServicer_to_server(FeatureServicer(extractor), server)

    running = serve(register, FEATURES.grpc_services, settings)
    with grpc.insecure_channel(running.address) as channel:
        yield features_pb2_grpc.FeatureServiceStub(channel)
    extractor.close()


@pytest.fixture
def features(
    serve: Callable[..., RunningServer], settings: Settings, model_servers: ModelServers, tmp_path: Path
) -> Iterator[features_pb2_grpc.FeatureServiceStub]:
    """A features service whose model directory holds the remote manifests."""
    yield from serve_features(serve, settings, _model_dir(tmp_path, model_servers))


def _extract(stub: features_pb2_grpc.FeatureServiceStub, model: str, layer: str = "") -> np.ndarray:
    request = features_pb2.ExtractDeepFeaturesRequest(
        images=[image_from_array(image, f"img{i}") for i, image in enumerate(IMAGES)],
        model=model, layer=layer,
    )
    answer = stub.ExtractDeepFeatures(request, timeout=60)
    assert list(answer.features.row_ids) == ["img0", "img1", "img2"]
    return table_values(answer.features)


def _error(stub: features_pb2_grpc.FeatureServiceStub, model: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as error:
        _extract(stub, model)
    return error.value


def _expected() -> tuple[np.ndarray, np.ndarray]:
    """The linear map of the (N, 3, 8, 8) batch the service makes of IMAGES (identity normalisation)."""
    return _linear(preprocess(IMAGES, (SIZE, SIZE), Preprocessing.identity(3)))


def test_extract_deep_features_from_a_torchserve_model(
    features: features_pb2_grpc.FeatureServiceStub, model_servers: ModelServers
) -> None:
    embedding, score = _expected()
    np.testing.assert_allclose(_extract(features, "ts-linear"), embedding, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(_extract(features, "ts-linear", "score"), score, rtol=1e-5, atol=1e-4)
    assert sum(model_servers.behaviour.rows) == 2 * len(IMAGES)  # every image went to the server once


def test_extract_deep_features_from_a_tf_serving_model_channels_last(
    features: features_pb2_grpc.FeatureServiceStub,
) -> None:
    # The server flattens (H, W, C) images, so the expected map runs on the transposed batch.
    batch = preprocess(IMAGES, (SIZE, SIZE), Preprocessing.identity(3)).transpose(0, 2, 3, 1)
    embedding, score = _linear(np.ascontiguousarray(batch))
    np.testing.assert_allclose(_extract(features, "tf-linear"), embedding, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(_extract(features, "tf-linear", "score"), score, rtol=1e-5, atol=1e-4)


def test_model_server_runs_a_torchserve_model_with_json_bytes(
    model_servers: ModelServers, tmp_path: Path
) -> None:
    repository = feature_repository([_model_dir(tmp_path, model_servers)], include_builtin=False)
    server = ModelServer(repository, ServingConfig(max_batch_size=2, instances=1))
    try:
        batch = preprocess(IMAGES, (SIZE, SIZE), Preprocessing.identity(3))
        outputs = server.run("ts-json", batch)
        embedding, score = _linear(batch)
        assert sorted(outputs) == ["emb", "score"] and outputs["score"].shape == (3, 1)
        np.testing.assert_allclose(outputs["emb"], embedding, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(outputs["score"], score, rtol=1e-5, atol=1e-4)
        assert max(model_servers.behaviour.rows) <= 2  # the dynamic batcher's limit holds
    finally:
        server.close()


def test_an_unreachable_endpoint_is_unavailable_naming_it_and_the_model(
    features: features_pb2_grpc.FeatureServiceStub, model_servers: ModelServers, tmp_path: Path
) -> None:
    error = _error(features, "tf-gone")
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    remote = load_manifest(tmp_path / "tf-gone" / "manifest.toml").remote
    assert remote is not None
    assert f"model 'tf-gone': TF Serving at {remote.endpoint} (remote model 'linear')" in error.details()
    assert "cannot be reached" in error.details()
    embedding, _ = _expected()  # the service keeps serving
    np.testing.assert_allclose(_extract(features, "ts-linear"), embedding, rtol=1e-5, atol=1e-4)


def test_remote_errors_carry_the_servers_message(
    features: features_pb2_grpc.FeatureServiceStub, model_servers: ModelServers
) -> None:
    refused = _error(features, "ts-unknown")
    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"model 'ts-unknown': TorchServe at {model_servers.torchserve} (remote model 'resnet')" in (
        refused.details())
    assert "answered NOT_FOUND: Model not found: resnet" in refused.details()
    model_servers.behaviour.fault = "crash"
    crashed = _error(features, "ts-linear")
    assert crashed.code() == grpc.StatusCode.INTERNAL
    assert "model 'ts-linear'" in crashed.details()
    assert "answered INTERNAL: handler raised: CUDA out of memory" in crashed.details()


@pytest.mark.parametrize(("model", "fault", "message"), [
    ("ts-linear", "garbage", "answered an unreadable reply: the prediction is not a .npy or .npz file"),
    ("ts-linear", "rows", "answered output 'emb' with shape [1, 5] for a batch of 3; expected 3 rows"),
    ("tf-linear", "rows", "answered output 'embedding' with shape [1, 5] for a batch of 3; expected 3 rows"),
])
def test_a_bad_reply_is_a_failed_precondition_naming_the_model(
    features: features_pb2_grpc.FeatureServiceStub, model_servers: ModelServers,
    model: str, fault: str, message: str,
) -> None:
    model_servers.behaviour.fault = fault
    error = _error(features, model)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"model {model!r}" in error.details() and message in error.details()


TORCHSERVE = "torchserve==0.12.0"
"""The real TorchServe the last test runs (Java 17 frontend, Python workers), installed by the test."""

HANDLER = '''"""TorchServe handler: each request's "data" (.npy batch) times weights.npy, answered as .npz."""
import io
import os

import numpy as np


def handle(data, context):
    if data is None:
        return None
    weights = np.load(os.path.join(context.system_properties["model_dir"], "weights.npy"))
    answers = []
    for request in data:
        batch = np.load(io.BytesIO(bytes(request["data"])), allow_pickle=False)
        embedding = batch.reshape(len(batch), -1) @ weights
        buffer = io.BytesIO()
        np.savez(buffer, emb=embedding, score=embedding.sum(axis=1, keepdims=True))
        answers.append(buffer.getvalue())
    return answers
'''


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for probe in sockets:
        probe.bind(("127.0.0.1", 0))
    ports = [probe.getsockname()[1] for probe in sockets]
    for probe in sockets:
        probe.close()
    return ports


@pytest.fixture
def real_torchserve(tmp_path: Path) -> Iterator[str]:
    """A real TorchServe serving model "linear" with HANDLER; its gRPC inference address.

    Skipped without Java, or when pip cannot install TorchServe (into a folder of the test's own,
    run by this interpreter, whose torch and numpy its workers use).
    """
    if shutil.which("java") is None:
        pytest.skip("no java on PATH: TorchServe's frontend needs Java 17 (apt-get install openjdk-17-jre)")
    packages = tmp_path / "packages"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(packages), TORCHSERVE,
         "torch-model-archiver==0.12.0", "wheel", "enum-compat"], capture_output=True, text=True, timeout=600,
    )
    if installed.returncode != 0:
        pytest.skip(f"pip could not install {TORCHSERVE}: {installed.stderr[-300:]}")
    home = tmp_path / "ts"
    (home / "store").mkdir(parents=True)
    (home / "handler.py").write_text(HANDLER)
    np.save(home / "weights.npy", WEIGHTS)
    # TMPDIR: TorchServe's pid file (one per temporary folder) is this test's own.
    environment = {**os.environ, "PYTHONPATH": str(packages), "LOG_LOCATION": str(home / "logs"),
                   "METRICS_LOCATION": str(home / "logs"), "TMPDIR": str(home)}
    subprocess.run(
        [sys.executable, "-m", "model_archiver.model_packaging", "--model-name", "linear", "--version", "1.0",
         "--handler", "handler.py", "--extra-files", "weights.npy", "--export-path", "store"],
        cwd=home, env=environment, check=True, capture_output=True, timeout=120,
    )
    http, management, metrics, grpc_port, grpc_management, worker = _free_ports(6)
    (home / "config.properties").write_text(
        f"inference_address=http://127.0.0.1:{http}\nmanagement_address=http://127.0.0.1:{management}\n"
        f"metrics_address=http://127.0.0.1:{metrics}\ngrpc_inference_address=127.0.0.1\n"
        f"grpc_inference_port={grpc_port}\ngrpc_management_address=127.0.0.1\n"
        f"grpc_management_port={grpc_management}\ninitial_worker_port={worker}\n"
        "default_workers_per_model=1\ndisable_token_authorization=true\n"
    )
    server = subprocess.Popen(
        [sys.executable, "-c", "from ts.model_server import start; start()", "--start", "--foreground",
         "--ncs", "--model-store", "store", "--models", "linear=linear.mar", "--ts-config",
         "config.properties", "--disable-token-auth"],
        cwd=home, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield f"127.0.0.1:{grpc_port}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the launcher, its Java frontend and the Python worker
        server.wait(timeout=60)
        for _ in range(600):  # the frontend and worker leave after the launcher; wait for them
            try:
                os.killpg(server.pid, 0)
            except ProcessLookupError:
                break
            threading.Event().wait(0.1)


def test_a_real_torchserve_serves_extract_deep_features(
    real_torchserve: str, serve: Callable[..., RunningServer], settings: Settings, tmp_path: Path
) -> None:
    common = f'version = "1"\ninput_size = [{SIZE}, {SIZE}]\nlicence = "test"\nsource = "TorchServe 0.12"\n'
    for name, model in (("ts-real", "linear"), ("ts-real-unknown", "resnet")):
        (tmp_path / "models" / name).mkdir(parents=True)
        (tmp_path / "models" / name / "manifest.toml").write_text(
            f'name = "{name}"\n{common}format = "torchserve"\noutputs = ["embedding", "score"]\n'
            f'[remote]\nendpoint = "{real_torchserve}"\nmodel = "{model}"\noutputs = ["emb", "score"]\n'
        )
    extractor = DeepFeatureExtractor(
        feature_repository([tmp_path / "models"], False), ExtractorConfig.from_env()
    )

    def register(server: grpc.Server, _: Settings) -> None:
        features_pb2_grpc.add_FeatureServiceServicer_to_server(FeatureServicer(extractor), server)

    running = serve(register, FEATURES.grpc_services, settings)
    try:
        with grpc.insecure_channel(running.address) as channel:
            stub = features_pb2_grpc.FeatureServiceStub(channel)
            # TorchServe starts its Java frontend and a Python worker: wait (at most 3 min) until it answers.
            for _ in range(180):
                try:
                    values = _extract(stub, "ts-real")
                    break
                except grpc.RpcError as error:
                    starting = "Model not found" in error.details()
                    if not starting and error.code() != grpc.StatusCode.UNAVAILABLE:
                        raise
                    threading.Event().wait(1.0)
            else:
                pytest.fail(f"TorchServe at {real_torchserve} did not serve model 'linear' within 3 minutes")
            np.testing.assert_allclose(values, _expected()[0], rtol=1e-5, atol=1e-4)
            unknown = _error(stub, "ts-real-unknown")
    finally:
        extractor.close()
    # TorchServe 0.12 answers an unknown model with INTERNAL (ModelNotFoundException), passed on.
    assert unknown.code() == grpc.StatusCode.INTERNAL
    assert f"model 'ts-real-unknown': TorchServe at {real_torchserve}" in unknown.details()
    assert "Model not found: resnet" in unknown.details()


@pytest.fixture
def inference(
    serve: Callable[..., RunningServer], settings: Settings, model_servers: ModelServers, tmp_path: Path
) -> Iterator[oip_grpc.GRPCInferenceServiceStub]:
    """The Open Inference Protocol (real gRPC) over a model server of the remote manifests."""
    models = ModelServer(feature_repository([_model_dir(tmp_path, model_servers)], False), ServingConfig())

    def register(server: grpc.Server, service_settings: Settings) -> None:
        add_open_inference(server, models, service_settings)

    running = serve(register, FEATURES.grpc_services, settings)
    with grpc.insecure_channel(running.address) as channel:
        yield oip_grpc.GRPCInferenceServiceStub(channel)
    models.close()


def _infer(
    stub: oip_grpc.GRPCInferenceServiceStub, model: str, input_name: str, batch: np.ndarray,
    outputs: tuple[str, ...] = (),
) -> dict[str, np.ndarray]:
    request = oip_pb.ModelInferRequest(
        model_name=model, inputs=[oip_pb.ModelInferRequest.InferInputTensor(
            name=input_name, datatype="FP32", shape=list(batch.shape))],
        outputs=[oip_pb.ModelInferRequest.InferRequestedOutputTensor(name=name) for name in outputs],
        raw_input_contents=[batch.astype("<f4").tobytes()],
    )
    answer = stub.ModelInfer(request, timeout=60)
    return {tensor.name: np.frombuffer(data, "<f4").reshape(tensor.shape)
            for tensor, data in zip(answer.outputs, answer.raw_output_contents, strict=True)}


@pytest.mark.parametrize(("model", "platform", "input_name"), [
    ("ts-linear", "torchserve_remote", "data"), ("tf-linear", "tfserving_remote", "images"),
])
def test_open_inference_metadata_of_a_remote_model_comes_from_its_manifest(
    inference: oip_grpc.GRPCInferenceServiceStub, model_servers: ModelServers, model: str, platform: str,
    input_name: str,
) -> None:
    metadata = inference.ModelMetadata(oip_pb.ModelMetadataRequest(name=model), timeout=30)
    assert (metadata.name, list(metadata.versions), metadata.platform) == (model, ["1"], platform)
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        (input_name, "FP32", [-1, 3, SIZE, SIZE])]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs] == [
        ("embedding", "FP32", [-1]), ("score", "FP32", [-1])]
    assert model_servers.behaviour.rows == []  # the model server was not called
    gone = inference.ModelMetadata(oip_pb.ModelMetadataRequest(name="tf-gone"), timeout=30)
    assert gone.platform == "tfserving_remote" and [t.name for t in gone.outputs] == ["output"]


def test_open_inference_runs_a_remote_model_through_its_server(
    inference: oip_grpc.GRPCInferenceServiceStub, model_servers: ModelServers
) -> None:
    batch = preprocess(IMAGES, (SIZE, SIZE), Preprocessing.identity(3))
    embedding, score = _linear(batch)
    outputs = _infer(inference, "ts-linear", "data", batch)
    assert list(outputs) == ["embedding", "score"]
    np.testing.assert_allclose(outputs["embedding"], embedding, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(outputs["score"], score, rtol=1e-5, atol=1e-4)
    only = _infer(inference, "ts-linear", "data", batch[:2], ("score",))
    assert list(only) == ["score"]
    np.testing.assert_allclose(only["score"], score[:2], rtol=1e-5, atol=1e-4)
    assert sum(model_servers.behaviour.rows) == 5
    # TF Serving takes (H, W, C) images, so its map runs on the transposed batch.
    embedding, score = _linear(np.ascontiguousarray(batch.transpose(0, 2, 3, 1)))
    outputs = _infer(inference, "tf-linear", "images", batch)
    np.testing.assert_allclose(outputs["embedding"], embedding, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(outputs["score"], score, rtol=1e-5, atol=1e-4)


def test_open_inference_on_an_unreachable_endpoint_is_unavailable_naming_it(
    inference: oip_grpc.GRPCInferenceServiceStub, tmp_path: Path
) -> None:
    batch = preprocess(IMAGES, (SIZE, SIZE), Preprocessing.identity(3))
    with pytest.raises(grpc.RpcError) as error:
        _infer(inference, "tf-gone", "input", batch)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    remote = load_manifest(tmp_path / "tf-gone" / "manifest.toml").remote
    assert remote is not None
    details = error.value.details()
    assert f"model 'tf-gone': TF Serving at {remote.endpoint} (remote model 'linear')" in details
    embedding, _ = _linear(batch)  # the service keeps serving
    np.testing.assert_allclose(_infer(inference, "ts-linear", "data", batch)["embedding"], embedding,
                               rtol=1e-5, atol=1e-4)
