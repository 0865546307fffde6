"""The model stack's settings: the device policy, manifests' new fields, repositories per task."""

from __future__ import annotations

from pathlib import Path

import pytest

from labsight.errors import NotFound
from labsight.models import (
    ManifestError,
    ModelManifest,
    ModelRepository,
    ModelServer,
    Preprocessing,
    ServingConfig,
    cuda_available,
    load_manifest,
    parse_device,
    resolve_device,
)
from services.features.extractor import ExtractorConfig
from services.features.models import DEFAULT_MODEL, feature_repository

MANIFEST = """
name = "{name}"
version = "1"
format = "onnx"
weights = "model.onnx"
input_size = [32, 32]
licence = "test"
source = "test"
{extra}
"""


def _write(root: Path, name: str, extra: str = "") -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "manifest.toml").write_text(MANIFEST.format(name=name, extra=extra))
    return folder / "manifest.toml"


@pytest.mark.parametrize(
    ("value", "device"), [("", "auto"), ("auto", "auto"), (" CPU ", "cpu"), ("cuda", "cuda")]
)
def test_the_device_policy_reads_auto_cpu_and_cuda(value: str, device: str) -> None:
    assert parse_device(value) == device


def test_an_unknown_device_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="LABSIGHT_DEVICE must be auto, cpu or cuda, got 'gpu'"):
        parse_device("gpu")
    monkeypatch.setenv("LABSIGHT_DEVICE", "gpu")
    for config in (ServingConfig, ExtractorConfig):
        with pytest.raises(ValueError, match="LABSIGHT_DEVICE must be auto, cpu or cuda"):
            config.from_env()
    monkeypatch.setenv("LABSIGHT_DEVICE", "cpu")
    assert ServingConfig.from_env().device == ExtractorConfig.from_env().device == "cpu"


def test_auto_resolves_to_cuda_only_when_torch_sees_a_device() -> None:
    assert resolve_device("cpu") == "cpu" and resolve_device("cuda") == "cuda"
    assert resolve_device("auto") == ("cuda" if cuda_available() else "cpu")


def test_a_manifest_reads_channels_outputs_size_policy_and_task(tmp_path: Path) -> None:
    manifest = load_manifest(_write(tmp_path, "flow", extra="""
task = "segmentation"
input_channels = 2
dynamic_size = true
outputs = ["flows", "cellprob"]
"""))
    assert (manifest.task, manifest.input_shape, manifest.dynamic_size) == ("segmentation", (2, 32, 32), True)
    assert manifest.outputs == ("flows", "cellprob")
    assert manifest.preprocessing == Preprocessing.identity(2) and manifest.default_layer == ""
    plain = load_manifest(_write(tmp_path, "plain"))
    assert (plain.task, plain.input_channels, plain.outputs, plain.dynamic_size) == (
        "features", 3, ("output",), False)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("input_channels = 1\n[preprocessing]\nmean = [0.5, 0.5, 0.5]\nstd = [1.0]",
         "preprocessing: mean: expected 1 float values"),
        ("input_channels = 0", "input_channels: expected a positive integer"),
        ("outputs = [\"a\", \"a\"]", "outputs: expected distinct non-empty names"),
        ("outputs = \"a\"", "outputs: expected a list of strings"),
        ("dynamic_size = \"yes\"", "dynamic_size: expected true or false"),
    ],
)
def test_manifest_errors_name_the_new_fields(tmp_path: Path, extra: str, message: str) -> None:
    path = _write(tmp_path, "broken", extra)
    with pytest.raises(ManifestError) as error:
        load_manifest(path)
    assert str(path) in str(error.value) and message in str(error.value)


def _builtin(name: str, task: str, tmp_path: Path) -> ModelManifest:
    return ModelManifest(
        name=name, version="1", format="onnx", weights=tmp_path / f"{name}.onnx", input_size=(8, 8),
        preprocessing=Preprocessing.identity(3), licence="test", source="test", task=task,
    )


def test_a_repository_lists_only_its_own_built_ins_and_directory_models(tmp_path: Path) -> None:
    shared = tmp_path / "models"
    _write(shared, "seg-net", extra='task = "segmentation"')
    _write(shared, "lab-features")  # no task: a features model, as every manifest before tasks
    segmentation = ModelRepository(
        [shared], task="segmentation", builtins=lambda: [_builtin("flow-net", "segmentation", tmp_path)]
    )
    assert [m.name for m in segmentation.list()] == ["flow-net", "seg-net"]
    with pytest.raises(NotFound, match="model: unknown model 'lab-features'"):
        segmentation.get("lab-features")
    features = feature_repository([shared])
    names = {m.name for m in features.list()}
    assert {DEFAULT_MODEL, "lab-features"} <= names and not names & {"flow-net", "seg-net"}
    with pytest.raises(NotFound):
        features.get("seg-net")


def test_a_built_in_of_another_task_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="built-in model 'x': task 'features', not this repository"):
        ModelRepository(task="segmentation", builtins=lambda: [_builtin("x", "features", tmp_path)])


def test_preload_errors_name_the_service_s_own_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LABSIGHT_SEGMENTATION_PRELOAD_MODELS", "flow-net, nowhere")
    monkeypatch.setenv("LABSIGHT_PRELOAD_MODELS", f"{DEFAULT_MODEL}")
    config = ServingConfig.from_env(preload_env="LABSIGHT_SEGMENTATION_PRELOAD_MODELS")
    assert config.preload == ("flow-net", "nowhere")
    server = ModelServer(ModelRepository(task="segmentation"), config)
    with pytest.raises(NotFound, match="LABSIGHT_SEGMENTATION_PRELOAD_MODELS entry 'flow-net': model"):
        server.preload()
