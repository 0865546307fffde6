"""The ``vessel-content`` pipeline: what one vessel of a photo holds, and how full it is."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from labsight.config import answer_room
from labsight.images import ImageInfo, decode_image, image_info, read_image
from labsight.tables import feature_table
from labsight.tensors import from_tensor
from labsight.v1 import gateway_pb2 as pb
from labsight.v1 import segmentation_pb2, tensor_pb2
from labsight.vessel_fill import fill_levels
from labsight.vessel_inputs import check_vessel_headers
from services.gateway.pipelines.base import InputReading, Pipeline, RunContext, main_image_info

VESSEL_MASK = "vessel_mask"
"""Role of the vessel mask among the job's input images."""

MASK_FIELD = f"input.images[{VESSEL_MASK}]"


class VesselContentPipeline(Pipeline):
    """Runs SegmentationService.SegmentVesselContent on the job's photo and vessel mask."""

    name = "vessel-content"
    description = (
        "What one vessel of a photo holds (LabPics classes): input.image an 8-bit RGB photo, "
        f"input.images[{VESSEL_MASK}] a one-channel mask of the same size, non-zero inside the "
        "vessel (`labsight submit vessel-content PHOTO --mask MASK.png`). Result: tensor "
        "'instance_masks' (K, H, W) uint8, bottom instance first; tensors 'semantic_<Class>' "
        "(H, W) uint8 per class present; table 'instances' (one row per instance: "
        "fill_level, the share of the vessel's height it fills, its area, and the probability "
        "of each class, 0 where it does not have the class); scalars 'filled' (share of the "
        "height filled altogether) and 'instance_count'. Without supplied LabPics weights a "
        "classical layer segmentation answers (Filled, Liquid, Foam, Powder, Solid)."
    )
    required_inputs = (VESSEL_MASK,)

    def check_input(
        self, params: dict[str, str], job_input: pb.JobInput, info: ImageInfo | None
    ) -> None:
        """An 8-bit RGB photo and a one-channel mask of its size whose masks fit an answer, from
        their headers."""
        photo = main_image_info(job_input, info)
        mask = image_info(job_input.images[VESSEL_MASK], MASK_FIELD)
        check_vessel_headers(photo, mask, "input.image", MASK_FIELD, answer_room())

    def read_input(self, job_input: pb.JobInput, params: Mapping[str, str]) -> InputReading:
        """The photo as every pipeline reads it, and the mask (its warnings named after it)."""
        photo = super().read_input(job_input, params)
        mask = read_image(job_input.images[VESSEL_MASK], MASK_FIELD)
        return replace(photo, warnings=photo.warnings + [f"{MASK_FIELD}: {w}" for w in mask.warnings])

    def run(self, context: RunContext) -> pb.JobResult:
        """One SegmentVesselContent call; masks, the instances table and fill levels."""
        job_input = context.job_input
        request = segmentation_pb2.SegmentVesselContentRequest(
            image=job_input.image, vessel_mask=job_input.images[VESSEL_MASK])
        context.report_progress(0.0, "vessel-content")
        answer: segmentation_pb2.SegmentVesselContentResponse = (
            context.services.segmentation.SegmentVesselContent(
                request, timeout=context.services.call_timeout_s))
        result = pb.JobResult(pipeline=self.name, provenance={"vessel_content_model": answer.model})
        result.tensors["instance_masks"].CopyFrom(answer.instance_masks)
        for name, mask in sorted(answer.semantic_masks.items()):
            result.tensors[f"semantic_{name}"].CopyFrom(mask)
        masks = from_tensor(answer.instance_masks, "instance_masks")
        vessel = decode_image(job_input.images[VESSEL_MASK], MASK_FIELD)
        vessel = vessel.reshape(vessel.shape[:2]) if vessel.ndim == 3 else vessel
        levels, filled = fill_levels(masks, vessel)
        result.tables["instances"].CopyFrom(instances_table(answer, levels, masks))
        result.scalars["filled"] = filled
        result.scalars["instance_count"] = float(len(answer.instances))
        return result  # the worker records progress 1.0 with the result


def instances_table(answer: segmentation_pb2.SegmentVesselContentResponse, levels: np.ndarray,
                    masks: np.ndarray) -> tensor_pb2.FeatureTable:
    """One row per instance: fill level, area in pixels, then ``p_<Class>`` per class any has."""
    classes = sorted({name for instance in answer.instances for name in instance.classes})
    columns = ["fill_level", "area_px", *(f"p_{name}" for name in classes)]
    values = np.zeros((len(answer.instances), len(columns)))
    for row, instance in enumerate(answer.instances):
        values[row, 0] = levels[instance.index]
        values[row, 1] = float((masks[instance.index] > 0).sum())
        for name, probability in zip(instance.classes, instance.class_probabilities, strict=True):
            values[row, 2 + classes.index(name)] = probability
    return feature_table(columns, values, [str(instance.index) for instance in answer.instances])

