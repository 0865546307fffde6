"""Thin gRPC servicer of the ClassifierService (the classifier arrives in a later issue)."""

from __future__ import annotations

import grpc

from labsight.config import Settings
from labsight.errors import Unimplemented
from labsight.v1 import classifier_pb2 as pb
from labsight.v1 import classifier_pb2_grpc as pb_grpc


class ClassifierServicer(pb_grpc.ClassifierServiceServicer):
    """Answers every RPC of the contract; unserved algorithms say which issue brings them."""

    def ClassifyCells(self, request: pb.ClassifyCellsRequest, context: grpc.ServicerContext) -> None:
        raise Unimplemented(
            "ClassifyCells: the organelle classifier is not served yet (it arrives with the "
            "organelle classifier issue)"
        )

    def ExplainCells(self, request: pb.ExplainCellsRequest, context: grpc.ServicerContext) -> None:
        raise Unimplemented(
            "ExplainCells: classifier explanations are not served yet (they arrive with the "
            "organelle classifier issue)"
        )


def register(server: grpc.Server, settings: Settings) -> None:
    """Add the ClassifierService to ``server``."""
    pb_grpc.add_ClassifierServiceServicer_to_server(ClassifierServicer(), server)
