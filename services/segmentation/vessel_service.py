"""SegmentVesselContent behind the servicer: checks, the method, the answer.

The method is the LabPics vessel-content network when the segmentation model
repository holds one (an operator supplied its weights, architecture
``labpics-vessel-content``), else the classical default of
:mod:`services.segmentation.vessels`.
"""

from __future__ import annotations

import threading

import grpc
import numpy as np

from labsight.errors import InvalidArgument
from labsight.images import decode_image, image_info
from labsight.models import ModelManifest, ModelServer
from labsight.runtime.progress_stream import raise_if_gone
from labsight.tensors import to_tensor
from labsight.v1 import segmentation_pb2 as pb
from labsight.vessel_inputs import check_vessel_headers
from services.segmentation.models.vessel_net import ARCHITECTURES, network_content
from services.segmentation.vessels import VesselContent, segment_vessel_content

_FIELDS = {"photo": "image", "vessel_mask": "vessel_mask"}
"""The core's argument names and the request's field names."""

CLASSICAL_TURNS = threading.Lock()
"""Calls of the classical method take turns in a process. It is thousands of small numpy and
OpenCV calls per photo, each releasing and taking back the GIL, so threads running it at once
hand the GIL over at every call and spend their CPU switching: 20 generated photos on 2 CPUs
(2026-12-06) took 44 ms CPU per photo on 1 thread, 105 on 2 threads, 152 on 4, and 51 on 4
taking turns, which also finished 2.4x sooner than 4 at once. A service uses more CPUs through
more processes (LABSIGHT_REPLICAS)."""


def vessel_network(server: ModelServer) -> ModelManifest | None:
    """The first (by name) LabPics vessel-content model of the server's repository, if any."""
    found = sorted((m for m in server.repository.list() if m.architecture in ARCHITECTURES.values()),
                   key=lambda m: m.name)
    return found[0] if found else None


def segment_vessel_request(request: pb.SegmentVesselContentRequest, context: grpc.ServicerContext,
                           max_answer_bytes: int, server: ModelServer | None = None
                           ) -> pb.SegmentVesselContentResponse:
    """Answer one SegmentVesselContent request.

    Parameters
    ----------
    request : SegmentVesselContentRequest
        The photo (``image``) and the vessel mask.
    context : grpc.ServicerContext
        The call; segmentation does not start when its caller has gone.
    max_answer_bytes : int
        Most bytes of masks the answer may carry.
    server : ModelServer, optional
        Serves the segmentation repository; its vessel-content network, if it
        has one, segments instead of the classical default.

    Raises
    ------
    InvalidArgument
        Naming ``image`` or ``vessel_mask``: a photo that is not 8-bit RGB, a
        mask with several channels, of another size or empty, or an answer that
        would not fit.
    """
    photo_info = image_info(request.image, "image")
    mask_info = image_info(request.vessel_mask, "vessel_mask")
    check_vessel_headers(photo_info, mask_info, "image", "vessel_mask", max_answer_bytes)
    photo = decode_image(request.image, "image")
    mask = decode_image(request.vessel_mask, "vessel_mask")
    raise_if_gone(context, "vessel-content")
    manifest = vessel_network(server) if server is not None else None
    try:
        if manifest is None:
            with CLASSICAL_TURNS:
                content = segment_vessel_content(photo, mask)
        else:
            name = manifest.name

            def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
                outputs = server.run(name, batch)  # type: ignore[union-attr]
                return outputs["semantic"], outputs["instances"]

            content = network_content(photo, mask, run, f"{manifest.name}:{manifest.version}")
    except ValueError as error:
        argument, _, reason = str(error).partition(": ")
        raise InvalidArgument(f"{_FIELDS.get(argument, argument)}: {reason}") from None
    return vessel_response(content, max_answer_bytes)


def vessel_response(content: VesselContent, max_answer_bytes: int) -> pb.SegmentVesselContentResponse:
    """The answer of a segmented vessel; InvalidArgument if its masks exceed ``max_answer_bytes``."""
    semantic = dict(content.semantic_masks)
    size = content.instance_masks.nbytes + sum(mask.nbytes for mask in semantic.values())
    if size > max_answer_bytes:
        raise InvalidArgument(f"image: its {len(content.instance_masks)} instance and "
                              f"{len(semantic)} class masks take {size} bytes, over the answer's "
                              f"{max_answer_bytes}: shrink the photo and its mask")
    response = pb.SegmentVesselContentResponse(
        instance_masks=to_tensor(np.ascontiguousarray(content.instance_masks, np.uint8)),
        model=content.method,
    )
    for index, (classes, probabilities) in enumerate(
            zip(content.classes, content.class_probabilities, strict=True)):
        response.instances.append(pb.VesselInstance(
            index=index, classes=list(classes), class_probabilities=list(probabilities)))
    for name, mask in semantic.items():
        response.semantic_masks[name].CopyFrom(to_tensor(np.ascontiguousarray(mask, np.uint8)))
    return response
