"""Remote-model manifests, the TorchServe byte convention, TensorProto reading, and the generated stubs."""

from __future__ import annotations

import filecmp
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from labsight.models import ManifestError, build_layer_index, engine_backend, manifest_from_dict
from labsight.remote import tf_tensor_pb2, tf_tensor_shape_pb2
from labsight.remote import tf_types_pb2 as types
from labsight.remote.protogen import generate
from labsight.remote.tensors import from_tensor_proto, to_tensor_proto
from labsight.remote.tfserving import model_spec
from labsight.remote.torchserve import decode_prediction, encode_batch


def _manifest(fmt: str = "tfserving", **remote: Any) -> dict[str, Any]:
    return {
        "name": "lab-net", "version": "1", "format": fmt, "input_size": [8, 8], "licence": "x",
        "source": "y", "outputs": ["embedding", "logits"],
        "remote": {"endpoint": "models.lab:8500", **remote},
    }


def test_a_remote_manifest_needs_no_weights_and_fills_its_defaults(tmp_path: Path) -> None:
    manifest = manifest_from_dict(_manifest(), tmp_path, "m.toml")
    remote = manifest.remote
    assert remote is not None
    assert (remote.protocol, remote.endpoint, remote.model, remote.version) == (
        "tfserving", "models.lab:8500", "lab-net", "")
    assert (remote.input, remote.signature, remote.outputs) == ("input", "serving_default", manifest.outputs)
    assert manifest.weights == (tmp_path / "manifest.toml").resolve()  # a remote model has no weights
    assert manifest_from_dict(_manifest("torchserve"), tmp_path, "m.toml").remote.input == "data"  # type: ignore[union-attr]
    assert engine_backend(manifest, "", "cuda") == "remote"
    index = build_layer_index(manifest, "remote", tmp_path)
    assert (index.target(""), index.target("logits")) == ("", "logits")
    assert manifest_from_dict({**_manifest("onnx"), "weights": "w.onnx"}, tmp_path, "m").remote is None


@pytest.mark.parametrize(("data", "message"), [
    ({**_manifest(), "remote": None}, "m.toml: [remote]: a tfserving manifest needs a [remote] table"),
    (_manifest(endpoint="models.lab"), "m.toml: remote.endpoint: expected host:port, got 'models.lab'"),
    (_manifest(outputs=["a"]), "m.toml: remote.outputs: expected 2 names (one per output"),
    (_manifest("torchserve", encoding="pickle"), "m.toml: remote.encoding: 'pickle' is not one of"),
    (_manifest(timeout_s=0), "m.toml: remote.timeout_s: expected a positive number, got 0"),
    (_manifest(host="x"), "m.toml: remote: unknown fields ['host']"),
    (_manifest(tls=False, ca_file="ca.pem"), "m.toml: remote.tls: false, but remote.ca_file only work"),
    (_manifest(cert_file="c.pem"), "m.toml: remote.cert_file, remote.key_file: give both"),
    (_manifest(token_env="Bearer abc"), "m.toml: remote.token_env: expected an environment variable's"),
    (_manifest(tls="yes"), "m.toml: remote.tls: expected true or false, got 'yes'"),
    ({**_manifest("onnx")}, "m.toml: weights: expected a non-empty string"),
])
def test_bad_remote_fields_name_the_manifest_and_field(
    data: dict[str, Any], message: str, tmp_path: Path
) -> None:
    with pytest.raises(ManifestError, match=None) as error:
        manifest_from_dict(data, tmp_path, "m.toml")
    assert message in str(error.value)


def test_tls_fields_imply_tls_and_plaintext_stays_the_default(tmp_path: Path) -> None:
    plain = manifest_from_dict(_manifest(), tmp_path, "m").remote
    assert plain is not None and not plain.tls and plain.token_env == ""
    secured = manifest_from_dict(_manifest(ca_file="ca.pem", token_env="TS_TOKEN"), tmp_path, "m").remote
    assert secured is not None and secured.tls
    assert (secured.ca_file, secured.token_env) == ("ca.pem", "TS_TOKEN")
    system_roots = manifest_from_dict(_manifest(tls=True), tmp_path, "m").remote
    assert system_roots is not None and system_roots.tls and system_roots.ca_file == ""


def test_tf_serving_versions_are_numbers_or_labels(tmp_path: Path) -> None:
    numbered = model_spec(manifest_from_dict(_manifest(version="3"), tmp_path, "m").remote)  # type: ignore[arg-type]
    assert numbered.WhichOneof("version_choice") == "version" and numbered.version.value == 3
    labelled = model_spec(manifest_from_dict(_manifest(version="stable"), tmp_path, "m").remote)  # type: ignore[arg-type]
    assert labelled.WhichOneof("version_choice") == "version_label" and labelled.version_label == "stable"


def test_torchserve_bytes_are_npy_or_json_both_ways() -> None:
    batch = np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2) / 7
    np.testing.assert_array_equal(np.load(io.BytesIO(encode_batch(batch, "npy"))), batch)
    np.testing.assert_allclose(json.loads(encode_batch(batch, "json")), batch, rtol=1e-7)
    buffer = io.BytesIO()
    np.savez(buffer, a=np.ones((2, 3)), b=np.zeros((2, 1)))
    decoded = decode_prediction(buffer.getvalue(), "npy", ("b", "a"))
    assert decoded["a"].dtype == np.float32 and decoded["b"].shape == (2, 1)
    assert decode_prediction(b'{"x": [[1, 2]], "y": [3]}', "json", ("x",))["x"].tolist() == [[1, 2]]
    assert decode_prediction(b"[[1.5], [2]]", "json", ("out",))["out"].tolist() == [[1.5], [2.0]]


@pytest.mark.parametrize(("data", "encoding", "names", "message"), [
    (b"PK\x03\x04nonsense", "npy", ("a",), "the prediction is not a .npy or .npz file"),
    (b"[1, 2", "json", ("a",), "the prediction is not JSON"),
    (b'{"x": [1]}', "json", ("y",), "no output 'y' in the prediction; it has ['x']"),
    (b"[[1], [2, 3]]", "json", ("a",), "output 'a' is not an array of numbers"),
    (b"[1, 2]", "json", ("a", "b"), "expected a JSON object with the outputs ['a', 'b'], got a list"),
])
def test_unreadable_predictions_say_what_is_wrong(
    data: bytes, encoding: str, names: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ValueError) as error:
        decode_prediction(data, encoding, names)
    assert message in str(error.value)


def _tensor(dtype: int, shape: tuple[int, ...], **values: Any) -> tf_tensor_pb2.TensorProto:
    dims = [tf_tensor_shape_pb2.TensorShapeProto.Dim(size=n) for n in shape]
    return tf_tensor_pb2.TensorProto(
        dtype=dtype, tensor_shape=tf_tensor_shape_pb2.TensorShapeProto(dim=dims), **values)


def test_tensor_protos_read_content_and_typed_fields_as_tensorflow_does() -> None:
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(from_tensor_proto(to_tensor_proto(array)), array)
    # A short typed field repeats its last value; int16 values live in int_val; half in half_val bits.
    np.testing.assert_array_equal(from_tensor_proto(_tensor(types.DT_FLOAT, (2, 2), float_val=[1, 2])),
                                  [[1, 2], [2, 2]])
    assert from_tensor_proto(_tensor(types.DT_INT16, (3,), int_val=[-4, 5, 6])).tolist() == [-4, 5, 6]
    half_bits = np.array([1.5, -2], np.float16).view(np.uint16).astype(np.int32).tolist()
    assert from_tensor_proto(_tensor(types.DT_HALF, (2,), half_val=half_bits)).tolist() == [1.5, -2]
    assert from_tensor_proto(_tensor(types.DT_INT64, (2,))).tolist() == [0, 0]


@pytest.mark.parametrize(("tensor", "message"), [
    (_tensor(types.DT_STRING, (1,), string_val=[b"a"]), "dtype DT_STRING is not a numeric type"),
    (_tensor(types.DT_FLOAT, (-1, 3)), "the tensor's shape is not fully known"),
    (_tensor(types.DT_FLOAT, (2, 3), tensor_content=b"\0" * 20), "tensor_content has 20 bytes; shape [2, 3]"),
    (_tensor(types.DT_DOUBLE, (2,), double_val=[1, 2, 3]), "3 values for shape [2]"),
])
def test_unreadable_tensor_protos_say_why(tensor: tf_tensor_pb2.TensorProto, message: str) -> None:
    with pytest.raises(ValueError) as error:
        from_tensor_proto(tensor)
    assert message in str(error.value)


def test_regenerating_the_remote_stubs_changes_nothing(repo_root: Path, tmp_path: Path) -> None:
    generate(tmp_path)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*_pb2*"))
    committed = sorted(p.relative_to(repo_root) for p in (repo_root / "labsight" / "remote").glob("*_pb2*"))
    assert generated == committed
    different = [str(p) for p in generated if not filecmp.cmp(tmp_path / p, repo_root / p, shallow=False)]
    assert different == [], f"stale generated code; run python -m labsight.remote.protogen: {different}"
