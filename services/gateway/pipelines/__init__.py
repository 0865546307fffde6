"""The pipelines a job can name."""

from __future__ import annotations

from labsight.errors import InvalidArgument, echo
from labsight.v1 import gateway_pb2 as pb
from services.gateway.pipelines.base import Pipeline
from services.gateway.pipelines.cell_tracks import CellTracksPipeline
from services.gateway.pipelines.cells import CellsPipeline
from services.gateway.pipelines.deep_features import DeepFeaturesPipeline
from services.gateway.pipelines.fractal import FractalPipeline
from services.gateway.pipelines.hpa_cells import HpaCellsPipeline
from services.gateway.pipelines.spot_features import SpotFeaturesPipeline
from services.gateway.pipelines.vessel_content import VesselContentPipeline

PIPELINES: dict[str, Pipeline] = {
    p.name: p for p in (FractalPipeline(), DeepFeaturesPipeline(), SpotFeaturesPipeline(),
                        CellsPipeline(), HpaCellsPipeline(), VesselContentPipeline(),
                        CellTracksPipeline())
}
"""Pipelines served, by name."""


def get_pipeline(name: str) -> Pipeline:
    """The pipeline called ``name``.

    Raises InvalidArgument for an unknown one, listing the known pipelines.
    """
    if name in PIPELINES:
        return PIPELINES[name]
    raise InvalidArgument(f"pipeline: unknown pipeline {echo(name)}; known pipelines: "
                          f"{sorted(PIPELINES)}")


def pipeline_infos() -> list[pb.PipelineInfo]:
    """Every pipeline of the contract."""
    return [p.info() for p in PIPELINES.values()]
