"""The ``vessel-content`` pipeline and SegmentVesselContent through real gRPC servers and Redis."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from labsight.cli import main
from labsight.client import build_request
from labsight.images import encode_png, image_from_array
from labsight.plots.vessels import vessel_figure
from labsight.result import Result
from labsight.tensors import from_tensor
from labsight.v1 import gateway_pb2 as pb
from labsight.v1 import segmentation_pb2, segmentation_pb2_grpc, tensor_pb2
from services.segmentation.generated_vessels import GeneratedVessel, generate_vessels
from services.segmentation.vessel_metrics import match_instances

from .conftest import InProcessStack


@pytest.fixture(scope="module")
def vessel() -> GeneratedVessel:
    """A generated vessel with two phases (liquid under foam or two liquids)."""
    return next(v for v in generate_vessels(12, seed=77) if len(v.kinds) == 2 and "powder" not in v.kinds)


def _png(pixels: np.ndarray) -> tensor_pb2.Image:
    return tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=encode_png(pixels)))


def _refusal(call: object, *args: object, **kwargs: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as error:
        call(*args, **kwargs)  # type: ignore[operator]
    return error.value


def test_cli_submits_a_photo_and_its_mask_and_gets_layers_and_fill_levels(
    stack: InProcessStack, vessel: GeneratedVessel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack.start_worker()
    photo, mask = tmp_path / "tube.png", tmp_path / "tube_mask.png"
    Image.fromarray(vessel.photo).save(photo)
    Image.fromarray(vessel.vessel_mask * 255).save(mask)
    assert main(["submit", "vessel-content", str(photo), "--mask", str(mask), "--wait", "--json",
                 "--gateway", stack.gateway.address, "--token", ""]) == 0
    (line,) = [json.loads(text) for text in capsys.readouterr().out.splitlines()]
    assert line["status"] == "done"
    result = Result(stack.client.result(line["job_id"]))
    assert result.provenance["vessel_content_model"] == "classical-layers"
    masks = result.tensor("instance_masks")
    assert masks.dtype == np.uint8 and masks.shape == (2, *vessel.vessel_mask.shape)
    predicted, truth, ious = match_instances(masks, vessel.instance_masks)
    assert len(ious) == 2 and ious.min() >= 0.8
    table = result.to_pandas("instances")
    assert list(table.index) == ["0", "1"]
    levels = table["fill_level"].to_numpy()[predicted]
    np.testing.assert_allclose(levels, vessel.fill_levels[truth], atol=0.03)
    assert table["area_px"].tolist() == masks.reshape(2, -1).sum(axis=1).tolist()
    assert (table["p_Filled"] == 1).all()
    assert result.scalars["filled"] == pytest.approx(vessel.filled, abs=0.03)
    assert result.scalars["instance_count"] == 2
    np.testing.assert_array_equal(result.tensor("semantic_Filled"), masks.max(axis=0))
    assert "semantic_Powder" not in result.message.tensors  # only the classes present

    figure = vessel_figure(result.message, vessel.photo)
    figure.savefig(tmp_path / "tube.svg")
    svg = (tmp_path / "tube.svg").read_text()
    assert "2 instances" in svg and "outlines over the photo" in svg
    assert f"{round(100 * levels[0])}% of the height" in svg.replace("\u2009", "")
    with pytest.raises(ValueError, match="not the masks'"):
        vessel_figure(result.message, vessel.photo[:-1])


def _request(photo: np.ndarray, mask: np.ndarray) -> pb.SubmitJobRequest:
    return build_request("vessel-content", image_from_array(photo),
                         images={"vessel_mask": _png(mask)})


@pytest.mark.parametrize(("photo", "mask", "field", "message"), [
    (np.zeros((40, 30, 3), np.uint8), np.ones((40, 31), np.uint8), "input.images[vessel_mask]",
     "40×31 px, the photo (input.image) is 40×30"),
    (np.zeros((40, 30, 3), np.uint8), np.ones((40, 30, 3), np.uint8), "input.images[vessel_mask]",
     "3 channels; the vessel mask must have one channel"),
    (np.zeros((40, 30), np.uint8), np.ones((40, 30), np.uint8), "input.image",
     "1 channel(s) of shape [40, 30]; the photo must be RGB"),
    (np.zeros((40, 30, 3), np.uint16), np.ones((40, 30), np.uint8), "input.image",
     "uint16 pixels; the photo must be 8-bit RGB"),
])
def test_bad_inputs_are_refused_at_submit_naming_the_field(
    stack: InProcessStack, photo: np.ndarray, mask: np.ndarray, field: str, message: str
) -> None:
    error = _refusal(stack.client.submit_request, _request(photo, mask))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"{field}: {message}" in error.details()
    assert stack.client.list_jobs() == []


def test_a_job_without_a_mask_is_refused(stack: InProcessStack) -> None:
    request = build_request("vessel-content", _png(np.zeros((20, 20, 3), np.uint8)))
    error = _refusal(stack.client.submit_request, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "needs inputs ['vessel_mask']" in error.details()


def test_an_empty_mask_fails_the_job_saying_why(stack: InProcessStack) -> None:
    stack.start_worker()
    job = stack.client.submit_request(_request(np.zeros((40, 30, 3), np.uint8),
                                               np.zeros((40, 30), np.uint8)))
    done = stack.client.wait(job.job_id, timeout_s=120)
    assert done.status == pb.JOB_STATUS_FAILED
    assert done.error.startswith("INVALID_ARGUMENT: vessel_mask: empty")


def test_segment_vessel_content_names_the_bad_field(
    stack: InProcessStack, vessel: GeneratedVessel
) -> None:
    stub = segmentation_pb2_grpc.SegmentationServiceStub(
        grpc.insecure_channel(stack.segmentation.address))  # type: ignore[union-attr]
    photo = image_from_array(vessel.photo)
    height, width = vessel.vessel_mask.shape
    cases = {
        f"vessel_mask: {height}×{width + 1} px": image_from_array(np.ones((height, width + 1), np.uint8)),
        "vessel_mask: empty": image_from_array(np.zeros((height, width), np.uint8)),
        "vessel_mask: 2 channels": image_from_array(np.ones((height, width, 2), np.uint8)),
    }
    for message, mask in cases.items():
        error = _refusal(stub.SegmentVesselContent, segmentation_pb2.SegmentVesselContentRequest(
            image=photo, vessel_mask=mask), timeout=30)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, message
        assert message in error.details()
    grey = segmentation_pb2.SegmentVesselContentRequest(
        image=image_from_array(vessel.photo[..., 0]), vessel_mask=image_from_array(vessel.vessel_mask))
    error = _refusal(stub.SegmentVesselContent, grey, timeout=30)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("image: 1 channel(s)")
    answer = stub.SegmentVesselContent(segmentation_pb2.SegmentVesselContentRequest(
        image=photo, vessel_mask=image_from_array(vessel.vessel_mask)), timeout=60)
    masks = from_tensor(answer.instance_masks, "instance_masks")
    assert masks.shape[0] == len(answer.instances) == 2
    assert [list(i.classes)[-1] for i in answer.instances] == ["Filled", "Filled"]
    assert set(answer.semantic_masks) >= {"Filled", "Liquid"}
    assert set(answer.semantic_masks) <= {"Filled", "Liquid", "Foam", "Powder", "Solid"}
    assert answer.model == "classical-layers"
