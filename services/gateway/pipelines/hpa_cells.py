"""The ``hpa-cells`` pipeline: segment the cells of a 4-channel HPA image, then classify each cell's
protein localisation into the 19 HPA classes."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from labsight.columns import cell_class_column_names, image_class_column_names
from labsight.errors import echo
from labsight.tables import feature_table, table_values
from labsight.tensors import from_tensor
from labsight.v1 import classifier_pb2
from labsight.v1 import gateway_pb2 as pb
from services.gateway.pipelines.base import Parameter, RunContext
from services.gateway.pipelines.cells import CELL_PARAMETERS, CellsPipeline, with_cell_image

SEGMENTATION_SHARE = 0.5
"""Part of the job's progress taken by the segmentation."""


def parse_model(text: str) -> str:
    """A classifier model name (checked by the classifier service), or empty for its default."""
    if text != text.strip() or any(ord(c) < 32 for c in text):
        raise ValueError(f"expected a model name, got {echo(text)}")
    return text


class HpaCellsPipeline(CellsPipeline):
    """SegmentCells, then ClassifierService.ClassifyCells on the same channels and cell labels."""

    name = "hpa-cells"
    description = (
        "Cells of a Human Protein Atlas image and where their protein sits: nuclei and cells "
        "as the cells pipeline finds them (same inputs: one 4-channel image red, green, blue, "
        "yellow, or one grey image per channel as inputs red, green, blue, yellow), then each "
        "cell classified into the 19 HPA localisation classes (multi-label). Result: the cells "
        "pipeline's tensors and 'cells' table; table 'classes' (per cell: bounding box, top "
        "class, 19 probabilities p_<class>, the predicted label set is_<class> at the model's "
        "per-class thresholds); table 'image_classes' (per class: the highest cell probability "
        "and the cells carrying it); tensor 'probabilities' (cells, 19) float32; tensor "
        "'crops' (cells, 64, 64, 4) uint8, each cell as the classifier saw it; `labsight "
        "columns hpa-cells` explains each column. `labsight explain JOB_ID -o DIR` draws why."
    )
    parameters = (
        *CELL_PARAMETERS,
        Parameter("model", "Classifier model; empty: the classifier service's default "
                  "(hpa-generated, trained on generated cells).", "", parse_model),
    )

    def run(self, context: RunContext) -> pb.JobResult:
        """The cells pipeline's segmentation, then one ClassifyCells call on its cell labels.

        Progress is reported twice, each a status read and a write to Redis: segmentation at
        0, classification at SEGMENTATION_SHARE (the worker's DONE records 1). The
        segmentation's own end (the same fraction as the classification's start) and a
        classification end just before DONE would tell a watcher nothing new.
        """
        def segmentation_progress(fraction: float, step: str, done: int = 0, total: int = 0,
                                  unit: str = "") -> None:
            if fraction < 1.0:
                context.report_progress(SEGMENTATION_SHARE * fraction, step, done, total, unit)

        result = super().run(replace(context, report_progress=segmentation_progress))
        result.pipeline = self.name
        # The label tensor as SegmentCells sent it (uint16 when it fits): one copy into the
        # request, no decoding; the crops, probabilities and tables are small beside it.
        request = classifier_pb2.ClassifyCellsRequest(
            cell_labels=result.tensors["cell_labels"], model=context.params.get("model", ""),
            return_crops=True,
        )
        context.report_progress(SEGMENTATION_SHARE, "classification")
        answer: classifier_pb2.ClassifyCellsResponse = context.services.classifier.ClassifyCells(
            with_cell_image(request, context), timeout=context.services.call_timeout_s
        )
        probabilities = from_tensor(answer.probabilities, "probabilities")
        thresholds = np.asarray(answer.thresholds, np.float32)
        predicted = probabilities >= thresholds[None, :]
        cells = result.tables["cells"]
        box = table_values(cells, "cells")[:, [list(cells.columns).index(c) for c in
                                              ("label", "bbox_min_x", "bbox_min_y", "bbox_max_x",
                                               "bbox_max_y")]]
        if [str(i) for i in answer.cell_ids] != list(cells.row_ids):
            raise RuntimeError(f"classifier: cells {list(answer.cell_ids)[:10]} differ from the "
                               f"segmentation's {list(cells.row_ids)[:10]}")
        names = list(answer.class_names)
        top = probabilities.argmax(axis=1) if len(probabilities) else np.zeros(0, np.int64)
        per_cell = np.column_stack([
            box, top, probabilities.max(axis=1, initial=0), predicted.sum(axis=1),
            probabilities, predicted,
        ]) if len(probabilities) else np.zeros((0, 8 + 2 * len(names)))
        result.tables["classes"].CopyFrom(
            feature_table(cell_class_column_names(names), per_cell, list(cells.row_ids)))
        summary = np.concatenate([np.asarray(answer.image_probabilities), predicted.sum(axis=0)])
        result.tables["image_classes"].CopyFrom(feature_table(
            image_class_column_names(names), summary[None], ["image"]))
        result.tensors["probabilities"].CopyFrom(answer.probabilities)
        result.tensors["crops"].CopyFrom(answer.crops)
        result.scalars["classes_found"] = float(predicted.any(axis=0).sum())
        result.provenance["classifier_model"] = answer.model
        result.provenance["classifier_classes"] = "; ".join(names)
        result.provenance["classifier_thresholds"] = ",".join(f"{t:.4g}" for t in answer.thresholds)
        return result
