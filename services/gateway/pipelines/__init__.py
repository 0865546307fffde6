"""The pipelines a job can name, and the ones the contract promises for later issues."""

from __future__ import annotations

from labsight.errors import InvalidArgument, Unimplemented, echo
from labsight.v1 import gateway_pb2 as pb
from services.gateway.pipelines.base import Pipeline
from services.gateway.pipelines.cells import CellsPipeline
from services.gateway.pipelines.deep_features import DeepFeaturesPipeline
from services.gateway.pipelines.fractal import FractalPipeline
from services.gateway.pipelines.spot_features import SpotFeaturesPipeline
from services.gateway.pipelines.vessel_content import VesselContentPipeline

PIPELINES: dict[str, Pipeline] = {
    p.name: p for p in (FractalPipeline(), DeepFeaturesPipeline(), SpotFeaturesPipeline(),
                        CellsPipeline(), VesselContentPipeline())
}
"""Pipelines served now, by name."""

PLANNED_PIPELINES: dict[str, str] = {
    "hpa-cells": "segment nuclei and cells of a 4-channel HPA image, classify each cell's "
    "organelle (19 classes); planned, arrives with cell segmentation and the classifier",
}
"""Pipelines in the contract whose algorithms are not served yet, with what they will do."""


def get_pipeline(name: str) -> Pipeline:
    """The served pipeline called ``name``.

    Raises Unimplemented for a planned pipeline and InvalidArgument for an unknown one.
    """
    if name in PIPELINES:
        return PIPELINES[name]
    if name in PLANNED_PIPELINES:
        raise Unimplemented(f"pipeline {name!r} is not served yet: {PLANNED_PIPELINES[name]}")
    known = sorted([*PIPELINES, *PLANNED_PIPELINES])
    raise InvalidArgument(f"pipeline: unknown pipeline {echo(name)}; known pipelines: {known}")


def pipeline_infos() -> list[pb.PipelineInfo]:
    """Every pipeline of the contract, served or planned."""
    planned = [
        pb.PipelineInfo(name=name, description=text, available=False)
        for name, text in PLANNED_PIPELINES.items()
    ]
    return [p.info() for p in PIPELINES.values()] + planned
