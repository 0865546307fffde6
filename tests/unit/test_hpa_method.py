"""The ``hpa`` segmentation method: found in the model repository, or refused saying how to add it.

Running the two 139M-parameter networks is tested in test_hpa_unet.py (random weights of the
released layout, through the converter and the repository); here only the method's wiring.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from labsight.errors import FailedPrecondition
from labsight.models import ModelRepository, ModelServer, ServingConfig
from services.segmentation import cells
from services.segmentation.hpa_method import CELL_MODEL, NUCLEI_MODEL, hpa_networks
from services.segmentation.models.flow_models import SEGMENTATION_TASK


def _server(model_dir: Path) -> ModelServer:
    repository = ModelRepository([model_dir], task=SEGMENTATION_TASK)
    return ModelServer(repository, ServingConfig(model_dirs=(model_dir,), cache_dir=model_dir / "cache"))


def _register(model_dir: Path, name: str) -> None:
    directory = model_dir / name
    directory.mkdir(parents=True)
    (directory / "model.pt").write_bytes(b"not run in this test")
    (directory / "manifest.toml").write_text(
        f'name = "{name}"\nversion = "1"\nformat = "torchscript"\nweights = "model.pt"\n'
        'task = "segmentation"\ninput_size = [512, 512]\ndynamic_size = true\n'
        'outputs = ["probabilities"]\nlicence = "CC-BY-4.0"\nsource = "test"\n'
    )


def test_hpa_is_a_method_of_both_functions() -> None:
    assert "hpa" in cells.CELL_METHODS and "hpa" in cells.NUCLEUS_METHODS


def test_a_missing_network_is_named_with_the_converter_command(tmp_path: Path) -> None:
    _register(tmp_path, NUCLEI_MODEL)
    with pytest.raises(FailedPrecondition) as refused:
        hpa_networks(_server(tmp_path))
    message = str(refused.value)
    assert CELL_MODEL in message and f"{NUCLEI_MODEL}," not in message
    assert "convert-hpa-weights" in message


def test_both_networks_in_an_operator_directory_are_served_by_name(tmp_path: Path) -> None:
    _register(tmp_path, NUCLEI_MODEL)
    _register(tmp_path, CELL_MODEL)
    server = _server(tmp_path)
    nuclei_network, cell_network = hpa_networks(server)
    assert (nuclei_network.model, cell_network.model) == ("hpa-nuclei", "hpa-cell")
    assert nuclei_network.server is server is cell_network.server


def test_segment_cells_with_hpa_and_no_weights_is_refused_before_any_work(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LABSIGHT_MODEL_DIR", str(tmp_path))
    monkeypatch.setattr("services.segmentation.models.flow_models._default_server", _server(tmp_path))
    zeros = np.zeros((40, 40), np.uint8)
    with pytest.raises(FailedPrecondition, match="hpa-nuclei, hpa-cell"):
        cells.segment_cells(zeros, zeros, zeros, method="hpa")
    with pytest.raises(FailedPrecondition, match="method: 'hpa'"):
        cells.segment_nuclei(zeros, method="hpa")
