"""The classical nuclei on real annotated DAPI images of mnfinder's held-out test split.

The pixel size comes from the training split only (``training_pixel_size_um``);
the floor is the pooled AP@0.5 measured on these images (0.852 with the
defaults of 2026-12-03, see bench/segmentation_quality.py for every split)
less a margin of 0.05, so a change that makes real images worse fails here.
"""

from __future__ import annotations

import pytest

from labsight.segmentation_metrics import pool_scores, score_segmentation
from services.segmentation.cells import segment_nuclei
from services.segmentation.classical import NucleusSettings
from tests.segmentation_data import load_split, mask_paths, training_pixel_size_um

IMAGES = 4
"""The first test images in name order: U2OS (H2B, 20× widefield) and HFF (DAPI, 40× spinning disk)
nuclei and one more, 512² and 768×869."""

FLOOR_AP50 = 0.852 - 0.05

pytestmark = pytest.mark.skipif(not mask_paths("test"), reason="mnfinder's data is not installed")


def test_classical_nuclei_reach_the_measured_ap_on_held_out_images():
    pixel_size_um = training_pixel_size_um(NucleusSettings().diameter_um)
    data = list(load_split("test", IMAGES))
    assert len(data) == IMAGES
    scores = [score_segmentation(segment_nuclei(item.image, pixel_size_um=pixel_size_um,
                                                method="classical"),
                                 item.labels, [0.5, 0.7, 0.9]) for item in data]
    pooled = pool_scores(scores)
    assert pooled.n_true > 300
    assert pooled.average_precision(0.5) >= FLOOR_AP50, [s.average_precision(0.5) for s in scores]
    assert pooled.average_precision(0.5) > pooled.average_precision(0.7) > pooled.average_precision(0.9)
