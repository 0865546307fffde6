"""Thin gRPC servicer of the SegmentationService: cells (nuclei + cell bodies) and patch extraction."""

from __future__ import annotations

import os
import threading
from contextlib import AbstractContextManager, nullcontext

import grpc

from labsight.cell_images import ChannelParts, cell_image_pixel_size, read_cell_image, read_role_image
from labsight.columns import CELL_CHANNELS, channel_column_names
from labsight.config import MESSAGE_RESERVE_BYTES, Settings
from labsight.errors import InvalidArgument, echo
from labsight.images import decode_image
from labsight.oip.servicer import add_open_inference
from labsight.patches import cell_patches, spot_patches
from labsight.pixel_size import choose_pixel_size
from labsight.runtime.progress_stream import raise_if_gone
from labsight.tables import feature_table
from labsight.tensor_wire import EncodedMessage, serialize_with_arrays
from labsight.tensors import from_tensor, narrow_labels, write_tensor
from labsight.v1 import segmentation_pb2 as pb
from labsight.v1 import segmentation_pb2_grpc as pb_grpc
from services.segmentation.cells import (
    CELL_METHODS,
    DEFAULT_METHOD,
    DEFAULT_PIXEL_SIZE_UM,
    segment_cells,
)
from services.segmentation.measure import measure_cells
from services.segmentation.models.flow_models import default_server
from services.segmentation.roles import ChannelRoles, segment_by_roles
from services.segmentation.vessel_service import segment_vessel_request

SEGMENTATION_PRELOAD_ENV = "LABSIGHT_SEGMENTATION_PRELOAD"
"""Models the service loads before it serves (the flow models' server reads the same variable)."""

MODEL_FREE_METHODS = frozenset({"classical"})
"""Cell methods with no model: numpy and scipy work only, of which one SegmentCells call at a time
computes in each process (the other calls wait their turn). Two at once in one process contended
for the GIL: hpa-cells jobs through `bench/classifier.py` part 2 (classical, 2 segmentation
processes, 4 worker slots), alternating with calls at once, 3 rounds each: medians 0.747, 0.717,
0.793, 0.739 against 0.624, 0.702, 0.631, 0.628 (2026-12-07, Zen 4, 2 CPUs). Calls of the model
methods still run at once, so their tiles share the model server's batches."""

RED, BLUE, YELLOW = 0, 2, 3
"""Channel positions of a cells image (HPA order red, green, blue, yellow; green is only measured)."""


class SegmentationServicer(pb_grpc.SegmentationServiceServicer):
    """Answers every RPC of the contract; unserved algorithms say which issue brings them.

    Parameters
    ----------
    max_answer_bytes : int
        Most bytes of patches one ExtractPatches answer, or of label masks one SegmentCells
        answer, may carry (the message limit).
    """

    def __init__(self, max_answer_bytes: int) -> None:
        self.max_answer_bytes = max_answer_bytes
        self._model_free = threading.Lock()

    def SegmentCells(
        self, request: pb.SegmentCellsRequest, context: grpc.ServicerContext
    ) -> EncodedMessage:
        """Nucleus and cell labels of one 4-channel image (or of an image of any channels by
        their ``roles``), and the table of its cells (answered serialized, a
        SegmentCellsResponse); stops before segmenting when the caller cancelled meanwhile."""
        method = request.method or DEFAULT_METHOD
        if method not in CELL_METHODS:  # before the image is decoded
            raise InvalidArgument(f"method: unknown method {echo(request.method)}; methods: "
                                  f"{sorted(CELL_METHODS)}")
        parts = _channel_parts(request)
        roles, names = _roles(request)
        if roles is None:
            channels = read_cell_image(parts, max_answer_bytes=self.max_answer_bytes)
        else:
            channels = read_role_image(*parts[0], self.max_answer_bytes)
            names = _role_channel_names(request.roles, channels.shape[2])
        # float32 on the wire: 0.1 arrives as 0.10000000149; its 7 digits are what was meant
        given = float(f"{request.pixel_size_um:.7g}") or None
        pixel_size = choose_pixel_size(
            given, None if given else cell_image_pixel_size(parts), DEFAULT_PIXEL_SIZE_UM,
            "pixel_size_um").um
        raise_if_gone(context, "cells")  # a cancelled job's call stops before segmenting
        turn: AbstractContextManager[object] = (
            self._model_free if method in MODEL_FREE_METHODS else nullcontext())
        with turn:
            if roles is None:
                nuclei, cells = segment_cells(
                    channels[..., RED], channels[..., YELLOW], channels[..., BLUE],
                    pixel_size_um=pixel_size, method=method,
                )
            else:
                nuclei, cells = segment_by_roles(channels, roles, pixel_size_um=pixel_size,
                                                 method=method)
            table = measure_cells(nuclei, cells, channels, pixel_size_um=pixel_size,
                                  channel_names=names)
        answer = pb.SegmentCellsResponse(
            model=method,
            cells=feature_table(table.columns, table.values, [str(label) for label in table.labels]),
            method=method,
            pixel_size_um=pixel_size,
        )
        # uint16 below 65536 labels (half of int32's bytes), else int32; copied once, into the answer
        masks = {"nucleus_labels": narrow_labels(nuclei), "cell_labels": narrow_labels(cells)}
        return EncodedMessage(serialize_with_arrays(answer, masks))

    def SegmentVesselContent(
        self, request: pb.SegmentVesselContentRequest, context: grpc.ServicerContext
    ) -> pb.SegmentVesselContentResponse:
        """Instances, classes and semantic masks of what one vessel of a photo holds (the LabPics
        network when the model repository has one, else the classical default)."""
        return segment_vessel_request(request, context, self.max_answer_bytes, default_server())

    def ExtractPatches(
        self, request: pb.ExtractPatchesRequest, context: grpc.ServicerContext
    ) -> EncodedMessage:
        """Patches around spot centres or per labelled cell, resized to ``output_size``
        (answered serialized: the patches' bytes are copied once, into the answer)."""
        image = decode_image(request.image, "image")
        has_spots = request.HasField("spot_centres")
        if has_spots == request.HasField("cell_labels"):
            raise InvalidArgument("spot_centres, cell_labels: set exactly one of them")
        if has_spots:
            centres = from_tensor(request.spot_centres, "spot_centres")
            # a malformed centres tensor (not (N, 2)) is refused by spot_patches, naming it
            if request.spot_ids and centres.ndim == 2 and len(request.spot_ids) != len(centres):
                raise InvalidArgument(
                    f"spot_ids: {len(request.spot_ids)} ids for {len(centres)} spot centres"
                )
            patches = spot_patches(
                image, centres, request.spot_diameter, request.output_size, self.max_answer_bytes,
                request.spot_edge or "pad-constant",
            )
            # labels are the kept spots' indices (spot_edge=drop leaves some out)
            ids = [request.spot_ids[i] if request.spot_ids else str(i) for i in patches.labels]
        else:
            labels = from_tensor(request.cell_labels, "cell_labels")
            patches = cell_patches(
                image, labels, request.output_size, request.blank_other_cells,
                request.cell_label_ids, self.max_answer_bytes,
            )
            ids = [str(label) for label in patches.labels]
        response = pb.ExtractPatchesResponse(patch_ids=ids, patch_at_edge=patches.at_edge.tolist())
        write_tensor(response.patch_centres, patches.centres)
        return EncodedMessage(serialize_with_arrays(response, {"patches": patches.pixels}))


def _channel_parts(request: pb.SegmentCellsRequest) -> ChannelParts:
    """The request's channels as (field, image) pairs: its image, or its four channel images."""
    if request.HasField("image") == bool(request.channel_images):
        raise InvalidArgument("image, channel_images: give exactly one of them (a 4-channel image, "
                              "or four one-channel images red, green, blue, yellow)")
    if request.HasField("image"):
        return [("image", request.image)]
    return [(f"channel_images[{i}]", image) for i, image in enumerate(request.channel_images)]


def _roles(request: pb.SegmentCellsRequest) -> tuple[ChannelRoles | None, tuple[str, ...]]:
    """The request's channel roles (None for HPA's four channels) and, for HPA's, the channels'
    column names; refuses roles with channel images."""
    if not request.HasField("roles"):
        return None, CELL_CHANNELS
    if request.channel_images:
        raise InvalidArgument("roles: name the channels of one image (image); channel_images are "
                              "HPA's red, green, blue, yellow")
    given = request.roles
    return ChannelRoles(given.nucleus, tuple(given.cytoplasm), float(given.expand_um)), ()


def _role_channel_names(roles: pb.ChannelRoles, count: int) -> tuple[str, ...]:
    """The column names of an image's ``count`` channels from ``roles.channel_names``."""
    try:
        return channel_column_names(list(roles.channel_names), count)
    except ValueError as error:
        raise InvalidArgument(f"roles.channel_names: {error}") from None


def register(server: grpc.Server, settings: Settings) -> None:
    """Add the SegmentationService to ``server``.

    Models named in $LABSIGHT_SEGMENTATION_PRELOAD (e.g. scellseg-flow,cellpose-flow) are
    loaded here, before the server starts, so a first request does not wait for them.
    """
    if os.environ.get(SEGMENTATION_PRELOAD_ENV):
        default_server().preload()
    # Room for the ids and centres next to the patches (the cells table next to the masks).
    answer_room = settings.max_message_bytes - MESSAGE_RESERVE_BYTES
    pb_grpc.add_SegmentationServiceServicer_to_server(SegmentationServicer(answer_room), server)
    add_open_inference(server, default_server(), settings)
