"""SegmentVesselContent and vessel-content submissions refuse bad inputs on real gRPC servers."""

from __future__ import annotations

import io
from collections.abc import Callable

import grpc
import numpy as np
import pytest
from PIL import Image

from labsight.catalog import GATEWAY, SEGMENTATION
from labsight.client import build_request
from labsight.config import Settings
from labsight.images import image_from_array
from labsight.runtime.server import RunningServer
from labsight.v1 import gateway_pb2_grpc, segmentation_pb2, segmentation_pb2_grpc, tensor_pb2
from services.gateway.servicer import register as register_gateway
from services.segmentation.generated_vessels import GeneratedVessel, generate_vessels
from services.segmentation.servicer import register as register_segmentation


@pytest.fixture(scope="module")
def vessel() -> GeneratedVessel:
    return generate_vessels(1, seed=3)[0]


@pytest.fixture
def segmentation(serve: Callable[..., RunningServer], settings: Settings
                 ) -> segmentation_pb2_grpc.SegmentationServiceStub:
    server = serve(register_segmentation, SEGMENTATION.grpc_services, settings)
    return segmentation_pb2_grpc.SegmentationServiceStub(grpc.insecure_channel(server.address))


def _encoded(pixels: np.ndarray, fmt: str) -> tensor_pb2.Image:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    return tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=buffer.getvalue()))


def _bad_inputs(vessel: GeneratedVessel) -> dict[str, tuple[tensor_pb2.Image, tensor_pb2.Image]]:
    """Reason expected in the answer -> (photo, mask)."""
    photo, mask = vessel.photo, vessel.vessel_mask
    height, width = mask.shape
    opaque = np.dstack([photo, np.full((height, width), 255, np.uint8)])
    see_through = np.dstack([photo, np.full((height, width), 100, np.uint8)])
    good_photo, good_mask = image_from_array(photo), image_from_array(mask)
    return {
        f"vessel_mask: {height}×{width + 1} px, the photo (image) is {height}×{width}":
            (good_photo, image_from_array(np.ones((height, width + 1), np.uint8))),
        f"vessel_mask: {width}×{height} px":
            (good_photo, image_from_array(np.ascontiguousarray(mask.T))),
        "vessel_mask: empty (no pixel inside the vessel)":
            (good_photo, image_from_array(np.zeros_like(mask))),
        "vessel_mask: 2 channels; the vessel mask must have one channel":
            (good_photo, image_from_array(np.ones((height, width, 2), np.uint8))),
        "vessel_mask: 3 channels; the vessel mask must have one channel":
            (good_photo, _encoded(np.dstack([mask * 255] * 3), "PNG")),
        "vessel_mask: dtype int64 not supported":
            (good_photo, tensor_pb2.Image(tensor=image_from_array(mask.astype(np.int64)).tensor)),
        "image: 1 channel(s) of shape": (_encoded(photo[..., 0], "JPEG"), good_mask),
        "image: 4 channel(s) of shape": (image_from_array(opaque), good_mask),
        "image: the alpha channel is not opaque": (_encoded(see_through, "PNG"), good_mask),
        "image: uint16 pixels; the photo must be 8-bit RGB":
            (image_from_array(photo.astype(np.uint16) * 257), good_mask),
        "image.encoded.data: not a PNG, TIFF or JPEG file":
            (tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=b"not a photo")), good_mask),
    }


def test_bad_inputs_are_refused_naming_the_field_and_the_service_keeps_answering(
    segmentation: segmentation_pb2_grpc.SegmentationServiceStub, vessel: GeneratedVessel
) -> None:
    for reason, (photo, mask) in _bad_inputs(vessel).items():
        request = segmentation_pb2.SegmentVesselContentRequest(image=photo, vessel_mask=mask)
        with pytest.raises(grpc.RpcError) as refusal:
            segmentation.SegmentVesselContent(request, timeout=60)
        assert refusal.value.code() == grpc.StatusCode.INVALID_ARGUMENT, reason
        assert reason in refusal.value.details()
    answer = segmentation.SegmentVesselContent(segmentation_pb2.SegmentVesselContentRequest(
        image=image_from_array(vessel.photo), vessel_mask=image_from_array(vessel.vessel_mask)),
        timeout=60)
    assert len(answer.instances) == len(vessel.kinds)


def test_accepted_variants_give_the_same_answer(
    segmentation: segmentation_pb2_grpc.SegmentationServiceStub, vessel: GeneratedVessel
) -> None:
    """An opaque alpha, a palette PNG, a 0/255, 16-bit or 0/1 float mask or one with a channel axis
    are fine."""
    photo, mask = vessel.photo, vessel.vessel_mask
    opaque = np.dstack([photo, np.full(mask.shape, 255, np.uint8)])
    variants = [
        (image_from_array(photo), image_from_array(mask)),
        (_encoded(opaque, "PNG"), image_from_array(mask * 255)),
        (_encoded(photo, "PNG"), image_from_array(mask.astype(np.uint16) * 65535)),
        (image_from_array(photo), image_from_array(mask[..., None])),
        (image_from_array(photo), image_from_array(mask.astype(np.float32))),  # read as 0/65535
    ]
    answers = [segmentation.SegmentVesselContent(segmentation_pb2.SegmentVesselContentRequest(
        image=p, vessel_mask=m), timeout=60) for p, m in variants]
    assert all(answer.instance_masks == answers[0].instance_masks for answer in answers)


def test_submission_refuses_a_four_channel_photo_from_its_header(
    serve: Callable[..., RunningServer], settings: Settings, vessel: GeneratedVessel
) -> None:
    """A 4-channel tensor is not a photo: refused at submit, before any job exists."""
    gateway = serve(register_gateway, GATEWAY.grpc_services, settings)
    stub = gateway_pb2_grpc.GatewayServiceStub(grpc.insecure_channel(gateway.address))
    opaque = np.dstack([vessel.photo, np.full(vessel.vessel_mask.shape, 255, np.uint8)])
    request = build_request("vessel-content", image_from_array(opaque),
                            images={"vessel_mask": image_from_array(vessel.vessel_mask)})
    with pytest.raises(grpc.RpcError) as refusal:
        stub.SubmitJob(request, timeout=30)
    assert refusal.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input.image: 4 channel(s) of shape" in refusal.value.details()


def test_concurrent_calls_of_the_classical_method_take_turns_and_all_answer(
    segmentation: segmentation_pb2_grpc.SegmentationServiceStub, vessel: GeneratedVessel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Threads running the classical method at once spend their CPU handing the GIL over, so
    a service runs one call's method at a time (vessel_service.CLASSICAL_TURNS)."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Lock

    from services.segmentation import vessel_service

    running, most, guard = 0, 0, Lock()
    method = vessel_service.segment_vessel_content

    def counted(photo: np.ndarray, mask: np.ndarray) -> object:
        nonlocal running, most
        with guard:
            running += 1
            most = max(most, running)
        try:
            return method(photo, mask)
        finally:
            with guard:
                running -= 1

    monkeypatch.setattr(vessel_service, "segment_vessel_content", counted)
    request = segmentation_pb2.SegmentVesselContentRequest(
        image=image_from_array(vessel.photo), vessel_mask=image_from_array(vessel.vessel_mask))
    alone = segmentation.SegmentVesselContent(request, timeout=60)
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: segmentation.SegmentVesselContent(request, timeout=60),
                                range(8)))
    assert most == 1
    assert all(answer == alone for answer in answers)
