"""Thin gRPC servicer of the SegmentationService: patch extraction now, segmentation in later issues."""

from __future__ import annotations

import grpc

from labsight.config import Settings
from labsight.errors import InvalidArgument, Unimplemented
from labsight.images import decode_image
from labsight.patches import cell_patches, spot_patches
from labsight.tensors import from_tensor, to_tensor
from labsight.v1 import segmentation_pb2 as pb
from labsight.v1 import segmentation_pb2_grpc as pb_grpc


class SegmentationServicer(pb_grpc.SegmentationServiceServicer):
    """Answers every RPC of the contract; unserved algorithms say which issue brings them.

    Parameters
    ----------
    max_answer_bytes : int
        Most bytes of patches one ExtractPatches answer may carry (the message limit).
    """

    def __init__(self, max_answer_bytes: int) -> None:
        self.max_answer_bytes = max_answer_bytes

    def SegmentCells(self, request: pb.SegmentCellsRequest, context: grpc.ServicerContext) -> None:
        raise Unimplemented(
            "SegmentCells: HPA cell segmentation is not served yet (it arrives with the "
            "cell segmentation issue)"
        )

    def SegmentVesselContent(
        self, request: pb.SegmentVesselContentRequest, context: grpc.ServicerContext
    ) -> None:
        raise Unimplemented(
            "SegmentVesselContent: vessel-content segmentation is not served yet (it arrives "
            "with the vessel-content issue)"
        )

    def ExtractPatches(
        self, request: pb.ExtractPatchesRequest, context: grpc.ServicerContext
    ) -> pb.ExtractPatchesResponse:
        """Patches around spot centres or per labelled cell, resized to ``output_size``."""
        image = decode_image(request.image, "image")
        has_spots = request.HasField("spot_centres")
        if has_spots == request.HasField("cell_labels"):
            raise InvalidArgument("spot_centres, cell_labels: set exactly one of them")
        if has_spots:
            centres = from_tensor(request.spot_centres, "spot_centres")
            if request.spot_ids and len(request.spot_ids) != len(centres):
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
        return pb.ExtractPatchesResponse(
            patches=to_tensor(patches.pixels),
            patch_ids=ids,
            patch_centres=to_tensor(patches.centres),
            patch_at_edge=patches.at_edge.tolist(),
        )


def register(server: grpc.Server, settings: Settings) -> None:
    """Add the SegmentationService to ``server``."""
    # Room for the ids and centres next to the patches in the answer.
    answer_room = settings.max_message_bytes - 1024 * 1024
    pb_grpc.add_SegmentationServiceServicer_to_server(SegmentationServicer(answer_room), server)
