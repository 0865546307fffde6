"""Thin gRPC servicer of the FeatureService: protobuf in, fractal core, protobuf out."""

from __future__ import annotations

import grpc

from labsight.config import Settings
from labsight.errors import Unimplemented
from labsight.images import decode_image
from labsight.tables import feature_row
from labsight.v1 import features_pb2 as pb
from labsight.v1 import features_pb2_grpc as pb_grpc
from services.features.fractal import gliding_box, percolation
from services.features.fractal_columns import fractal_columns, percolation_columns

DEFAULT_BOX_SIZES = tuple(range(3, 42, 2))


class FeatureServicer(pb_grpc.FeatureServiceServicer):
    """Serves fractal features; deep features arrive with the deep-features issue."""

    def ComputeFractal(
        self, request: pb.ComputeFractalRequest, context: grpc.ServicerContext
    ) -> pb.ComputeFractalResponse:
        """Gliding-box features (and percolation when asked) of one image."""
        image = decode_image(request.image, "image")
        box_sizes = tuple(request.box_sizes) or DEFAULT_BOX_SIZES
        boxes = gliding_box(image, box_sizes=box_sizes)
        columns = fractal_columns(boxes)
        response = pb.ComputeFractalResponse(
            box_sizes=[int(r) for r in boxes.box_sizes],
            probabilities=[
                pb.MassProbability(box_size=int(r), probability=boxes.probability[int(r)].tolist())
                for r in boxes.box_sizes
            ],
            lacunarity=boxes.lacunarity.tolist(),
            box_count=boxes.box_count.tolist(),
            fractal_dimension=pb.FractalDimensionFit(
                dimension=boxes.fractal_dimension.dimension,
                r_min=boxes.fractal_dimension.r_min,
                r_max=boxes.fractal_dimension.r_max,
            ),
        )
        if request.percolation:
            perc = percolation(image, box_sizes=box_sizes)
            response.percolation.CopyFrom(
                pb.PercolationFeatures(
                    cluster_count=perc.cluster_count.tolist(),
                    largest_cluster_ratio=perc.largest_cluster_ratio.tolist(),
                    percolating_ratio=perc.percolating_ratio.tolist(),
                )
            )
            columns.update(percolation_columns(perc))
        response.features.CopyFrom(feature_row(columns, request.image.name or "image"))
        return response

    def ExtractDeepFeatures(
        self, request: pb.ExtractDeepFeaturesRequest, context: grpc.ServicerContext
    ) -> None:
        raise Unimplemented(
            "ExtractDeepFeatures: deep CNN features are not served yet (they arrive with the "
            "deep features issue)"
        )

    def ListModels(self, request: pb.ListModelsRequest, context: grpc.ServicerContext) -> None:
        raise Unimplemented(
            "ListModels: the model repository is not served yet (it arrives with the deep "
            "features issue)"
        )


def register(server: grpc.Server, settings: Settings) -> None:
    """Add the FeatureService to ``server``."""
    pb_grpc.add_FeatureServiceServicer_to_server(FeatureServicer(), server)
