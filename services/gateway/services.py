"""gRPC clients of the model services, shared by every pipeline run in a worker."""

from __future__ import annotations

from collections.abc import Mapping

import grpc

from labsight.v1 import classifier_pb2_grpc, features_pb2_grpc, segmentation_pb2_grpc


class ServiceClients:
    """Stubs to the segmentation, features and classifier services over shared channels."""

    def __init__(
        self,
        addresses: Mapping[str, str],
        options: list[tuple[str, int]] | None = None,
        call_timeout_s: float = 600.0,
    ) -> None:
        self.call_timeout_s = call_timeout_s
        # round_robin spreads calls over every address a (headless) service name resolves to.
        channel_options = [*(options or []), ("grpc.lb_policy_name", "round_robin")]
        self._channels = {
            name: grpc.insecure_channel(address, options=channel_options)
            for name, address in addresses.items()
        }
        self.segmentation = segmentation_pb2_grpc.SegmentationServiceStub(
            self._channels["segmentation"]
        )
        self.features = features_pb2_grpc.FeatureServiceStub(self._channels["features"])
        self.classifier = classifier_pb2_grpc.ClassifierServiceStub(self._channels["classifier"])

    def close(self) -> None:
        """Close every channel."""
        for channel in self._channels.values():
            channel.close()
