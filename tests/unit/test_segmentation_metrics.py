"""Instance-segmentation scores on hand-made label images with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from labsight.segmentation_metrics import (
    DEFAULT_THRESHOLDS,
    as_labels,
    average_precision,
    pool_scores,
    score_segmentation,
)


def _squares(shape: tuple[int, int], boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    labels = np.zeros(shape, np.int32)
    for k, (r0, r1, c0, c1) in enumerate(boxes, start=1):
        labels[r0:r1, c0:c1] = k
    return labels


def test_identical_labels_score_one_at_every_threshold_whatever_the_ids():
    truth = _squares((40, 50), [(0, 10, 0, 10), (20, 30, 20, 35), (5, 8, 40, 49)])
    relabelled = np.where(truth > 0, truth * 7 + 100, 0)
    scores = score_segmentation(relabelled, truth)
    assert scores.thresholds == DEFAULT_THRESHOLDS
    assert scores.true_positives == (3,) * 10
    assert scores.mean_average_precision == 1.0
    assert scores.f1 == scores.precision == scores.recall == 1.0
    assert scores.mean_matched_iou == 1.0
    assert (scores.n_split, scores.n_merged) == (0, 0)


def test_known_iou_is_matched_below_and_missed_above_it():
    truth = _squares((10, 10), [(0, 10, 0, 10)])  # 100 px
    pred = _squares((10, 10), [(0, 10, 0, 7)])  # 70 px inside: IoU 0.7
    scores = score_segmentation(pred, truth)
    assert scores.average_precision(0.65) == 1.0
    assert scores.average_precision(0.7) == 0.0  # IoU must exceed the threshold
    assert scores.average_precision(0.75) == 0.0
    assert scores.mean_matched_iou == pytest.approx(0.7)
    assert scores.as_dict()["ap70"] == 0.0


def test_ap_counts_false_positives_and_negatives():
    truth = _squares((30, 30), [(0, 10, 0, 10), (15, 25, 15, 25), (0, 5, 20, 25)])
    pred = _squares((30, 30), [(0, 10, 0, 10), (15, 25, 15, 25), (26, 30, 0, 4), (26, 30, 10, 14)])
    scores = score_segmentation(pred, truth, thresholds=[0.5])
    assert (scores.true_positives, scores.false_positives, scores.false_negatives) == ((2,), (2,), (1,))
    assert scores.average_precision(0.5) == pytest.approx(2 / 5)
    assert scores.precision == pytest.approx(2 / 4)
    assert scores.recall == pytest.approx(2 / 3)
    assert scores.f1 == pytest.approx(4 / 7)
    assert average_precision(pred, truth) == pytest.approx(0.4)


def test_split_and_merge_are_counted():
    truth = _squares((20, 40), [(0, 10, 0, 20), (0, 10, 25, 30), (0, 10, 32, 37)])
    # truth 1 cut in two halves; truths 2 and 3 covered by one prediction
    pred = _squares((20, 40), [(0, 10, 0, 10), (0, 10, 10, 20), (0, 10, 24, 38)])
    scores = score_segmentation(pred, truth)
    assert scores.n_split == 1
    assert scores.n_merged == 1
    assert scores.true_positives[0] == 0


def test_below_half_the_hungarian_matching_is_one_to_one():
    truth = _squares((10, 20), [(0, 10, 0, 10), (0, 10, 10, 20)])
    pred = _squares((10, 20), [(0, 10, 3, 17)])  # IoU 0.7/1.7 ≈ 0.41 with each truth
    scores = score_segmentation(pred, truth, thresholds=[0.3, 0.5])
    assert scores.true_positives == (1, 0)
    assert scores.false_negatives == (1, 2)


def test_empty_images():
    empty = np.zeros((8, 9), np.uint16)
    both = score_segmentation(empty, empty)
    assert both.mean_average_precision == 1.0 and np.isnan(both.mean_matched_iou)
    one = _squares((8, 9), [(1, 4, 1, 4)])
    assert score_segmentation(empty, one).average_precision(0.5) == 0.0
    assert score_segmentation(one, empty).false_positives[0] == 1


def test_pooled_scores_sum_counts():
    truth = _squares((10, 10), [(0, 5, 0, 5)])
    good = score_segmentation(truth, truth)
    bad = score_segmentation(np.zeros_like(truth), truth)
    pooled = pool_scores([good, bad])
    assert pooled.true_positives[0] == 1 and pooled.false_negatives[0] == 1
    assert pooled.average_precision(0.5) == 0.5
    with pytest.raises(ValueError, match="no scores"):
        pool_scores([])


def test_object_without_background_and_float_whole_labels():
    truth = np.ones((4, 4), np.int64)
    assert score_segmentation(truth.astype(np.float32), truth).true_positives[0] == 1
    assert as_labels(np.ones((2, 2), bool), "GT").dtype == np.int64


@pytest.mark.parametrize(
    ("pred", "truth", "message"),
    [
        (np.full((3, 3), 0.5), np.zeros((3, 3), np.int32), "PRED.*non-integer"),
        (np.zeros((3, 3), np.int32), np.full((3, 3), -1), "GT.*>= 0"),
        (np.zeros((3, 3), np.int32), np.zeros((3, 4), np.int32), "PRED shape .* GT shape"),
        (np.zeros((3, 3, 2), np.int32), np.zeros((3, 3), np.int32), "PRED.*2-D"),
        (np.array([["a"]]), np.zeros((1, 1), np.int32), "PRED.*integers"),
    ],
)
def test_bad_input_names_pred_or_gt(pred, truth, message):
    with pytest.raises(ValueError, match=message):
        score_segmentation(pred, truth)


def _brute_force_ious(pred: np.ndarray, truth: np.ndarray) -> dict[tuple[int, int], float]:
    ious = {}
    for t in np.unique(truth[truth > 0]):
        for p in np.unique(pred[pred > 0]):
            inter = np.sum((truth == t) & (pred == p))
            if inter:
                ious[int(t), int(p)] = inter / np.sum((truth == t) | (pred == p))
    return ious


@pytest.mark.parametrize("seed", range(5))
def test_counts_equal_a_brute_force_matching_on_random_blobs(seed):
    rng = np.random.default_rng(seed)
    truth = _squares((60, 60), [(r, r + int(rng.integers(4, 12)), c, c + int(rng.integers(4, 12)))
                                for r, c in rng.integers(0, 50, (12, 2))])
    shift = np.roll(truth, (int(rng.integers(-2, 3)), int(rng.integers(-2, 3))), axis=(0, 1))
    pred = np.where(rng.random(truth.shape) < 0.05, 0, shift * 3)
    ious = _brute_force_ious(pred, truth)
    scores = score_segmentation(pred, truth)
    for level, tp in zip(scores.thresholds, scores.true_positives, strict=True):
        assert tp == sum(iou > level for iou in ious.values())  # IoU > 0.5: unique matches
    matched = [iou for iou in ious.values() if iou > 0.5]
    assert scores.mean_matched_iou == pytest.approx(np.mean(matched) if matched else np.nan,
                                                    nan_ok=True)
