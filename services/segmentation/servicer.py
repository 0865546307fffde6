"""Thin gRPC servicer of the SegmentationService (algorithms arrive in later issues)."""

from __future__ import annotations

import grpc

from labsight.config import Settings
from labsight.errors import Unimplemented
from labsight.v1 import segmentation_pb2 as pb
from labsight.v1 import segmentation_pb2_grpc as pb_grpc


class SegmentationServicer(pb_grpc.SegmentationServiceServicer):
    """Answers every RPC of the contract; unserved algorithms say which issue brings them."""

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
    ) -> None:
        raise Unimplemented(
            "ExtractPatches: patch extraction is not served yet (it arrives with the deep "
            "features issue)"
        )


def register(server: grpc.Server, settings: Settings) -> None:
    """Add the SegmentationService to ``server``."""
    pb_grpc.add_SegmentationServiceServicer_to_server(SegmentationServicer(), server)
