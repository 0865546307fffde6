"""The learned flow method on real annotated DAPI images of mnfinder's held-out test split.

Nothing was tuned on the test split: the defaults of ``segment_nuclei_flows`` were chosen on
the training split, and the images get the one pixel size that makes the training nuclei's
median diameter the expected 12 µm (as for the classical method). The floor is the pooled
AP@0.5 measured on these two images with ONNX Runtime (0.908 on 2026-12-03; 0.866 on the
whole test split, see ``services/segmentation/models/MODEL_CARD.md``) less a margin of 0.05.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from labsight.models import ModelRepository, ModelServer, ServingConfig
from labsight.segmentation_metrics import pool_scores, score_segmentation
from services.segmentation.flows import NUCLEUS_DIAMETER_UM, segment_nuclei_flows
from services.segmentation.models.flow_models import (
    NUCLEI_MODEL,
    SEGMENTATION_TASK,
    FlowPredictor,
    builtin_flow_manifests,
)
from tests.segmentation_data import load_split, mask_paths, training_pixel_size_um

NAMES = ("2023-05-31_misc/HFF-revt-01_s18", "2023-05-31_misc/MCC13_rfpcyto_w1cDAPI_s43")
"""Two 512² test images: HFF nuclei (DAPI, 40× spinning disk) and MCC13 nuclei in a cytoplasmic haze."""

MEASURED_AP50 = 0.908
FLOOR_AP50 = MEASURED_AP50 - 0.05

pytestmark = [
    pytest.mark.skipif(not mask_paths("test"), reason="mnfinder's data is not installed"),
    pytest.mark.skipif(not builtin_flow_manifests(), reason="the scellseg weight package is not installed"),
]


def test_flow_nuclei_reach_the_measured_ap_on_held_out_images(model_cache: Path) -> None:
    repository = ModelRepository((), task=SEGMENTATION_TASK, builtins=builtin_flow_manifests)
    config = ServingConfig(cache_dir=model_cache, device="cpu", threads=1, instances=1)
    server = ModelServer(repository, config)
    predict = FlowPredictor(server, NUCLEI_MODEL)
    pixel_size_um = training_pixel_size_um(NUCLEUS_DIAMETER_UM)
    data = [item for item in load_split("test") if item.name in NAMES]
    assert len(data) == len(NAMES)
    scores = [
        score_segmentation(segment_nuclei_flows(item.image, pixel_size_um=pixel_size_um, predict=predict),
                           item.labels, [0.5, 0.7, 0.9])
        for item in data
    ]
    pooled = pool_scores(scores)
    assert pooled.n_true == 71
    assert pooled.average_precision(0.5) >= FLOOR_AP50, [s.average_precision(0.5) for s in scores]
    assert pooled.average_precision(0.5) >= pooled.average_precision(0.7) >= pooled.average_precision(0.9)
