"""The classical vessel-content default on generated vessels of known layers, and its input checks."""

from __future__ import annotations

import numpy as np
import pytest

from labsight.vessel_fill import fill_levels
from services.segmentation.generated_vessels import PHASE_CLASSES, generate_vessel, generate_vessels
from services.segmentation.vessel_metrics import (
    ClassIoU,
    LayerScores,
    PanopticCounts,
    iou_matrix,
    match_instances,
)
from services.segmentation.vessels import SEMANTIC_CLASSES, segment_vessel_content


@pytest.fixture(scope="module")
def held_out() -> list:
    """Vessels from a seed the method's settings were not chosen on."""
    return generate_vessels(30, seed=31337)


def test_generator_is_seeded_and_consistent() -> None:
    first, again = generate_vessels(3, seed=5), generate_vessels(3, seed=5)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a.photo, b.photo)
    for vessel in first:
        assert vessel.photo.dtype == np.uint8 and vessel.photo.shape[2] == 3
        assert vessel.instance_masks.shape[1:] == vessel.vessel_mask.shape
        # phases lie inside the vessel and do not overlap
        assert not (vessel.instance_masks.astype(bool) & ~vessel.vessel_mask.astype(bool)).any()
        assert vessel.instance_masks.sum(axis=0).max() == 1
        assert vessel.classes == tuple(PHASE_CLASSES[kind] for kind in vessel.kinds)
        assert 0 < vessel.filled <= 1
        assert vessel.filled == pytest.approx(vessel.fill_levels.sum(), abs=0.03)


def test_default_meets_its_targets_on_held_out_vessels(held_out: list) -> None:
    scores, panoptic = LayerScores(), PanopticCounts()
    for vessel in held_out:
        content = segment_vessel_content(vessel.photo, vessel.vessel_mask)
        scores.add(content.instance_masks, content.fill_levels, content.filled,
                   vessel.instance_masks, vessel.fill_levels, vessel.filled)
        panoptic.add(content.instance_masks, vessel.instance_masks)
    summary = scores.summary()
    assert summary["mean_instance_iou"] >= 0.8
    assert summary["mean_fill_error"] <= 0.03
    assert summary["share_fill_within_tolerance"] >= 0.8
    assert panoptic.quality >= 0.7


def test_layers_kinds_and_semantic_masks() -> None:
    rng = np.random.default_rng(0)
    while True:  # a vessel with liquid under foam
        vessel = generate_vessel(rng)
        if vessel.kinds == ("liquid", "foam"):
            break
    content = segment_vessel_content(vessel.photo, vessel.vessel_mask)
    assert [names[0] for names in content.classes] == ["Liquid", "Foam"]
    assert all("Filled" in names for names in content.classes)
    assert all(len(p) == len(c) and all(0 <= x <= 1 for x in p)
               for p, c in zip(content.class_probabilities, content.classes, strict=True))
    assert set(content.semantic_masks) == {"Filled", "Liquid", "Foam"} <= set(SEMANTIC_CLASSES)
    np.testing.assert_array_equal(content.semantic_masks["Filled"],
                                  content.instance_masks.max(axis=0))
    np.testing.assert_array_equal(content.semantic_masks["Foam"], content.instance_masks[1])
    assert content.fill_levels == pytest.approx(vessel.fill_levels, abs=0.03)


def test_an_empty_vessel_has_no_instances() -> None:
    rng = np.random.default_rng(3)
    photo = rng.normal(120, 30, (120, 100, 3)).clip(0, 255).astype(np.uint8)  # clutter behind glass
    mask = np.zeros((120, 100), np.uint8)
    mask[10:110, 30:70] = 1
    content = segment_vessel_content(photo, mask)
    assert content.instance_masks.shape == (0, 120, 100)
    assert content.filled == 0.0 and content.semantic_masks == {}


@pytest.mark.parametrize(("photo", "mask", "field", "reason"), [
    (np.zeros((40, 30, 3), np.uint8), np.ones((40, 31), np.uint8), "vessel_mask", "photo is 40×30"),
    (np.zeros((40, 30, 3), np.uint8), np.zeros((40, 30), np.uint8), "vessel_mask", "empty"),
    (np.zeros((40, 30, 3), np.uint8), np.ones((40, 30, 2), np.uint8), "vessel_mask", "one channel"),
    (np.zeros((40, 30), np.uint8), np.ones((40, 30), np.uint8), "photo", "RGB"),
    (np.zeros((40, 30, 4), np.uint8), np.ones((40, 30), np.uint8), "photo", "RGB"),
    (np.zeros((40, 30, 3), np.uint16), np.ones((40, 30), np.uint8), "photo", "8-bit"),
])
def test_bad_inputs_are_refused_naming_the_argument(photo: np.ndarray, mask: np.ndarray, field: str,
                                                    reason: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}: .*{reason}"):
        segment_vessel_content(photo, mask)


def test_a_one_channel_mask_with_a_channel_axis_is_accepted() -> None:
    vessel = generate_vessels(1, seed=9)[0]
    plain = segment_vessel_content(vessel.photo, vessel.vessel_mask)
    boxed = segment_vessel_content(vessel.photo, vessel.vessel_mask[..., None] * 255)
    np.testing.assert_array_equal(plain.instance_masks, boxed.instance_masks)


def test_fill_levels_count_rows_a_phase_mostly_covers() -> None:
    vessel = np.zeros((10, 6), np.uint8)
    vessel[:, 1:5] = 1
    masks = np.zeros((2, 10, 6), np.uint8)
    masks[0, 6:] = 1
    masks[1, 4:6, 1:5] = 1
    masks[1, 3, 1:2] = 1  # a meniscus touching the wall: a quarter of the row, not counted
    levels, filled = fill_levels(masks * vessel, vessel)
    np.testing.assert_allclose(levels, [0.4, 0.2])
    assert filled == pytest.approx(0.6)
    assert fill_levels(np.zeros((0, 10, 6)), vessel) == (pytest.approx([]), 0.0)


def test_metrics_match_pq_and_class_iou() -> None:
    truth = np.zeros((2, 4, 4), np.uint8)
    truth[0, :2], truth[1, 2:] = 1, 1
    predicted = np.zeros((3, 4, 4), np.uint8)
    predicted[0, 2:] = 1       # = truth 1
    predicted[1, :1] = 1       # half of truth 0
    predicted[2, 0, 0] = 1     # a stray pixel
    np.testing.assert_allclose(iou_matrix(predicted, truth)[:, 1], [1, 0, 0])
    rows, cols, ious = match_instances(predicted, truth)
    assert dict(zip(cols.tolist(), rows.tolist(), strict=True)) == {0: 1, 1: 0}
    np.testing.assert_allclose(sorted(ious), [0.5, 1.0])
    counts = PanopticCounts()
    counts.add(predicted, truth)  # IoU 0.5 is not above 0.5: one TP, two FP, one FN
    assert counts.quality == pytest.approx(1.0 / (1 + 1.5))
    class_iou = ClassIoU()
    class_iou.add({"Liquid": predicted[0]}, {"Liquid": truth[1], "Foam": truth[0]}, ["Liquid", "Foam"])
    assert class_iou.scores() == {"Liquid": 1.0, "Foam": 0.0}


@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (5, 1), (7, 3), (33, 9), (40, 12)])
def test_tiny_thin_and_broken_masks_give_an_answer(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    photo = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    for mask in (np.ones(shape, np.uint8), (rng.random(shape) < 0.3).astype(np.uint8) | _corner(shape)):
        content = segment_vessel_content(photo, mask)
        assert content.instance_masks.shape[1:] == shape
        assert not (content.instance_masks.astype(bool) & ~mask.astype(bool)).any()


def _corner(shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[0, 0] = 1
    return mask
