"""Model manifests and the repository: operator directories, built-ins and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from labsight.errors import FailedPrecondition, NotFound
from labsight.models import ManifestError, load_manifest, load_torch_model
from services.features.models import DEFAULT_MODEL, SPOT_MODEL, feature_repository

MANIFEST = """
name = "{name}"
version = "2"
format = "torchscript"
weights = "model.pt"
input_size = [64, 48]
default_layer = "pool"
licence = "CC-BY-4.0"
source = "trained in the lab"

[preprocessing]
mean = [0.5, 0.5, 0.5]
std = [0.25, 0.25, 0.25]

[layers]
pool = ""
"""


def _write_model(root: Path, name: str, text: str = MANIFEST, weights: bool = True) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "manifest.toml").write_text(text.format(name=name))
    if weights:
        (folder / "model.pt").write_bytes(b"not really torchscript")
    return folder / "manifest.toml"


def test_a_manifest_is_read_with_weights_relative_to_its_folder(tmp_path: Path) -> None:
    manifest = load_manifest(_write_model(tmp_path, "lab-net"))
    assert manifest.name == "lab-net" and manifest.version == "2"
    assert manifest.weights == (tmp_path / "lab-net" / "model.pt").resolve()
    assert manifest.input_size == (64, 48)
    assert manifest.preprocessing.std == (0.25, 0.25, 0.25)
    assert manifest.module_path("pool") == "" and manifest.module_path("net.block3") == "net.block3"
    assert "CC-BY-4.0" in manifest.weights_description()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("format = \"torchscript\"", "format = \"pickle\""), "format: 'pickle' is not one of"),
        (("name = \"{name}\"\n", ""), "name: expected a non-empty string"),
        (("input_size = [64, 48]", "input_size = [64]"), "input_size: expected 2 int values"),
        (("default_layer = \"pool\"", "default_layer = \"fc\""), "default_layer: 'fc' is not one of"),
        (("std = [0.25, 0.25, 0.25]", "std = [0.25, 0, 0.25]"), "preprocessing.std: must be > 0"),
        (("format = \"torchscript\"", "format = \"state_dict\""), "architecture: expected"),
        (("[layers]\npool = \"\"", ""), "[layers]: missing table"),
        (("version = \"2\"", "version = 2 2"), "cannot read manifest"),
    ],
)
def test_manifest_errors_name_the_file_and_the_field(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    path = _write_model(tmp_path, "broken", MANIFEST.replace(*change))
    with pytest.raises(ManifestError) as error:
        load_manifest(path)
    assert str(path) in str(error.value) and message in str(error.value)


def test_a_missing_weight_file_is_an_error_naming_the_file(tmp_path: Path) -> None:
    manifest = load_manifest(_write_model(tmp_path, "no-weights", weights=False))
    with pytest.raises(FailedPrecondition, match=r"weights file not found: .*no-weights/model\.pt"):
        load_torch_model(manifest)


def test_the_repository_offers_built_ins_and_operator_models(tmp_path: Path) -> None:
    _write_model(tmp_path, "lab-net")
    repository = feature_repository([tmp_path])
    names = [m.name for m in repository.list()]
    assert {DEFAULT_MODEL, SPOT_MODEL, "lab-net"} <= set(names)
    assert repository.get("lab-net").origin.endswith("lab-net/manifest.toml")
    assert repository.get(DEFAULT_MODEL).weights.is_file()


def test_a_model_registered_later_is_found_without_a_restart(tmp_path: Path) -> None:
    repository = feature_repository([tmp_path], include_builtin=False)
    with pytest.raises(NotFound, match="model: unknown model 'late'"):
        repository.get("late")
    _write_model(tmp_path, "late")
    assert repository.get("late").name == "late"


def test_a_missing_model_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="model directory does not exist"):
        feature_repository([tmp_path / "nowhere"])


def test_the_digest_changes_with_the_weights(tmp_path: Path) -> None:
    path = _write_model(tmp_path, "lab-net")
    before = load_manifest(path).digest()
    (tmp_path / "lab-net" / "model.pt").write_bytes(b"other weights, other size")
    assert load_manifest(path).digest() != before
