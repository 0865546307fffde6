"""Training and evaluation of the vessel-content network on a small generated set in the LabPics V2 layout."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from labsight.cli import main
from labsight.images import image_from_array
from labsight.models import ModelRepository, ModelServer, ServingConfig, load_manifest, load_torch_model
from labsight.tensors import from_tensor
from labsight.v1 import segmentation_pb2
from services.segmentation.generated_vessels import generate_vessels
from services.segmentation.models.vessel_net import (
    ARCHITECTURES,
    VesselContentNet,
    network_content,
    torch_runner,
)
from services.segmentation.vessel_service import segment_vessel_request, vessel_network
from services.segmentation.vessel_training import match_heads, read_labpics, write_labpics


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four generated photos in the LabPics V2 layout, written by the CLI."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("labpics") / "Train"
    assert main(["generate-vessels", str(root), "--count", "4", "--seed", "3"]) == 0
    return root


def test_the_layout_reads_back_what_was_written(data: Path) -> None:
    vessels = generate_vessels(4, seed=3)
    examples = list(read_labpics(data.parent))
    assert [e.name for e in examples] == [f"Train/generated_{i:04d}/1" for i in range(4)]
    for example, vessel in zip(examples, vessels, strict=True):
        np.testing.assert_array_equal(example.vessel_mask, vessel.vessel_mask > 0)
        np.testing.assert_array_equal(example.instance_masks, vessel.instance_masks > 0)
        assert example.instance_classes == vessel.classes
        assert np.abs(example.photo.astype(int) - vessel.photo).mean() < 3  # JPEG
        np.testing.assert_array_equal(example.semantic["Filled"], vessel.instance_masks.max(axis=0) > 0)
    folder = data / "generated_0000"
    assert {p.name for p in folder.iterdir()} == {
        "Image.jpg", "Data.json", "Ignore.png", "Vessels", "MaterialsAndParts", "SemanticMaps"}
    meta = json.loads((folder / "Data.json").read_text())
    assert meta["Vessels"]["1"]["VesselContentAll_Indx"] == [1, 2][:len(vessels[0].kinds)]


def test_labpics_instance_codes_and_unsegmentable_materials(tmp_path: Path) -> None:
    vessel = generate_vessels(1, seed=8)[0]
    (folder,) = write_labpics([vessel], tmp_path)
    # LabPics codes: 4 = inside another vessel, 7 = behind; all are inside the instance
    mask = cv2.imread(str(folder / "MaterialsAndParts" / "1.png"), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(folder / "MaterialsAndParts" / "1.png"), (mask * 4).astype(np.uint8))
    meta = json.loads((folder / "Data.json").read_text())
    meta["MaterialsAndParts"]["9"] = {"MaskFilePath": "MaterialsAndParts/1.png",
                                      "All_ClassesList": ["Liquid"], "ASegmentableInstance": False}
    meta["Vessels"]["1"]["VesselContentAll_Indx"].append(9)
    (folder / "Data.json").write_text(json.dumps(meta))
    (example,) = read_labpics(tmp_path)
    assert len(example.instance_masks) == len(vessel.kinds)
    np.testing.assert_array_equal(example.instance_masks[0], vessel.instance_masks[0] > 0)
    (folder / "Vessels" / "1.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"Vessels/1.png: missing or not an image"):
        list(read_labpics(tmp_path))


def test_heads_are_matched_to_instances_by_iou() -> None:
    instances = torch.zeros((2, 4, 4), dtype=torch.bool)
    instances[0, :2], instances[1, 2:] = True, True
    logits = torch.zeros((10, 2, 4, 4))
    logits[:, 0] = 1.0  # every head empty ...
    logits[7, 1, 2:], logits[3, 1, :2] = 2.0, 2.0  # ... but head 7 finds the bottom, head 3 the top
    heads, truths = match_heads(logits, instances, torch.ones((4, 4), dtype=torch.bool))
    assert dict(zip(truths.tolist(), heads.tolist(), strict=True)) == {0: 3, 1: 7}


def test_train_then_evaluate_end_to_end(data: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    model_dir = tmp_path / "model"
    assert main(["train-vessel", str(data), "--model-dir", str(model_dir), "--steps", "6",
                 "--width", "0.25", "--max-side", "128", "--learning-rate", "1e-3",
                 "--device", "cpu"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["vessels"] == 4 and summary["steps"] == 6 and summary["device"] == "cpu"
    assert np.isfinite(summary["first_loss"]) and summary["last_loss"] < summary["first_loss"]
    manifest = load_manifest(model_dir / "manifest.toml")
    assert manifest.architecture == ARCHITECTURES[0.25] and manifest.task == "segmentation"
    trained = load_torch_model(manifest)  # strict load into the registered architecture
    assert not torch.equal(trained.state_dict()["OutLayersList.0.weight"],
                           VesselContentNet(0.25).state_dict()["OutLayersList.0.weight"])

    assert main(["evaluate-vessel", str(data), "--model-dir", str(model_dir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["method"] == "labpics-vessel:1" and report["vessels"] == 4
    assert 0 <= report["panoptic_quality"] <= 1 and "Filled" in report["class_iou"]

    assert main(["evaluate-vessel", str(data)]) == 0
    lines = capsys.readouterr().out.splitlines()
    classical = json.loads(lines[-1])
    assert classical["method"] == "classical-layers" and classical["panoptic_quality"] > 0.8
    assert lines[0].startswith("method classical-layers: 4 vessels, panoptic quality")
    assert set(classical["class_iou"]) >= {"Filled", "Liquid"}


def test_bad_data_exits_2_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate-vessel", str(tmp_path)]) == 2
    assert "no LabPics photo folders" in capsys.readouterr().err
    assert main(["train-vessel", str(tmp_path), "--model-dir", str(tmp_path / "m")]) == 2
    assert main(["train-vessel", str(tmp_path), "--model-dir", str(tmp_path / "m"),
                 "--device", "tpu"]) == 2
    assert "--device must be auto, cpu or cuda" in capsys.readouterr().err


def test_a_trained_model_in_the_repository_answers_segment_vessel_content(
    data: Path, tmp_path: Path, model_cache: Path
) -> None:
    model_dir = tmp_path / "models" / "labpics-vessel"
    assert main(["train-vessel", str(data), "--model-dir", str(model_dir), "--steps", "1",
                 "--width", "0.25", "--max-side", "64"]) == 0
    repository = ModelRepository([tmp_path / "models"], task="segmentation")
    server = ModelServer(repository, ServingConfig(cache_dir=model_cache, device="cpu", threads=1,
                                                   instances=1))
    try:
        assert vessel_network(server).name == "labpics-vessel"  # type: ignore[union-attr]
        vessel = generate_vessels(1, seed=3)[0]
        request = segmentation_pb2.SegmentVesselContentRequest(
            image=image_from_array(vessel.photo), vessel_mask=image_from_array(vessel.vessel_mask))
        answer = segment_vessel_request(request, _Live(), 64 << 20, server)
        assert answer.model == "labpics-vessel:1"
        masks = from_tensor(answer.instance_masks, "instance_masks")
        assert masks.shape[1:] == vessel.vessel_mask.shape and len(answer.instances) == len(masks)
        assert not (masks.astype(bool) & ~vessel.vessel_mask.astype(bool)).any()
        # the served network gives what the torch network gives
        net = load_torch_model(load_manifest(model_dir / "manifest.toml"))
        direct = network_content(vessel.photo, vessel.vessel_mask, torch_runner(net), "x")
        assert direct.instance_masks.shape == masks.shape
        assert (direct.instance_masks != masks).mean() < 0.001
    finally:
        server.close()


class _Live:
    """A call that is still active."""

    def is_active(self) -> bool:
        return True
