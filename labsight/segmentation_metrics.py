"""Instance-segmentation scores of a predicted label image against a ground-truth one.

The scores are those of the 2018 Data Science Bowl and the Cell Tracking
Challenge literature: objects are matched one to one at an IoU threshold, and
average precision at that threshold is TP / (TP + FP + FN). Overlaps are
counted once, in a sparse contingency table of (truth, prediction) label pairs,
so the cost grows with the number of pixels, not with the product of the
object counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import linear_sum_assignment

__all__ = [
    "DEFAULT_THRESHOLDS",
    "SegmentationScores",
    "as_labels",
    "average_precision",
    "pool_scores",
    "score_segmentation",
]

DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
"""IoU thresholds 0.5, 0.55, ..., 0.95 of the DSB-2018 mean average precision."""

MAJORITY = 0.5
"""Share of an object's area that makes it lie "mostly" inside another (splits and merges)."""


@dataclass(frozen=True)
class SegmentationScores:
    """Match counts of one image (or of several pooled), see :func:`score_segmentation`.

    ``true_positives[i]`` (and the FP, FN counts) belong to ``thresholds[i]``; the
    matched IoU sum and the precision, recall and F1 belong to the first threshold.
    """

    thresholds: tuple[float, ...]
    true_positives: tuple[int, ...]
    false_positives: tuple[int, ...]
    false_negatives: tuple[int, ...]
    n_true: int
    n_predicted: int
    matched_iou_sum: float
    n_split: int
    n_merged: int

    def average_precision(self, threshold: float) -> float:
        """TP / (TP + FP + FN) at ``threshold`` (one of ``thresholds``); 1.0 if both are empty."""
        i = self._index(threshold)
        tp, fp, fn = self.true_positives[i], self.false_positives[i], self.false_negatives[i]
        return _ratio(tp, tp + fp + fn)

    @property
    def mean_average_precision(self) -> float:
        """Mean of the average precision over every threshold."""
        return float(np.mean([self.average_precision(t) for t in self.thresholds]))

    @property
    def precision(self) -> float:
        """TP / (TP + FP) at the first threshold; 1.0 when nothing was predicted nor expected."""
        return _ratio(self.true_positives[0], self.true_positives[0] + self.false_positives[0])

    @property
    def recall(self) -> float:
        """TP / (TP + FN) at the first threshold; 1.0 when nothing was expected nor predicted."""
        return _ratio(self.true_positives[0], self.true_positives[0] + self.false_negatives[0])

    @property
    def f1(self) -> float:
        """2 TP / (2 TP + FP + FN) at the first threshold."""
        tp = self.true_positives[0]
        return _ratio(2 * tp, 2 * tp + self.false_positives[0] + self.false_negatives[0])

    @property
    def mean_matched_iou(self) -> float:
        """Mean IoU of the pairs matched at the first threshold; NaN when none matched."""
        tp = self.true_positives[0]
        return self.matched_iou_sum / tp if tp else float("nan")

    def as_dict(self) -> dict[str, float | int]:
        """Every score by a flat name (``ap50``, ``ap75``, ``mean_ap``, ``f1``, ...), for tables and JSON."""
        out: dict[str, float | int] = {
            f"ap{round(t * 100):d}": self.average_precision(t) for t in self.thresholds
        }
        out.update(
            mean_ap=self.mean_average_precision,
            f1=self.f1,
            precision=self.precision,
            recall=self.recall,
            mean_iou=self.mean_matched_iou,
            n_true=self.n_true,
            n_predicted=self.n_predicted,
            true_positives=self.true_positives[0],
            false_positives=self.false_positives[0],
            false_negatives=self.false_negatives[0],
            splits=self.n_split,
            merges=self.n_merged,
        )
        return out

    def _index(self, threshold: float) -> int:
        for i, t in enumerate(self.thresholds):
            if abs(t - threshold) < 1e-9:
                return i
        raise ValueError(f"threshold {threshold} was not scored; scored: {list(self.thresholds)}")


def as_labels(labels: ArrayLike, name: str) -> np.ndarray:
    """Check a label image and return it as a 2-D int64 array.

    Parameters
    ----------
    labels : array_like
        Integer labels (0 = background), or floats that are all whole numbers, or booleans
        (one object).
    name : str
        What the array is (``"PRED"``, ``"GT"``, a file name), for the error message.

    Raises
    ------
    ValueError
        If the array is not 2-D, holds non-integer or non-finite values, or negative labels.
    """
    array = np.asarray(labels)
    if array.ndim != 2:
        raise ValueError(f"{name}: a label image must be 2-D, got shape {array.shape}")
    if array.dtype == bool:
        return array.astype(np.int64)
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise ValueError(f"{name}: labels must be whole numbers, got non-integer values "
                             f"(dtype {array.dtype})")
    elif not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name}: labels must be integers, got dtype {array.dtype}")
    if array.size and array.min() < 0:
        raise ValueError(f"{name}: labels must be >= 0 (0 = background), got {array.min()}")
    return array.astype(np.int64, copy=False)


def score_segmentation(
    predicted: ArrayLike,
    truth: ArrayLike,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> SegmentationScores:
    """Match predicted objects to true ones and count hits, misses, splits and merges.

    Parameters
    ----------
    predicted, truth : array_like, shape (H, W)
        Label images, 0 = background; ids need not be consecutive.
    thresholds : sequence of float
        IoU thresholds in (0, 1); the first one is used for F1, precision, recall,
        the mean matched IoU.

    Returns
    -------
    SegmentationScores

    Raises
    ------
    ValueError
        Naming PRED or GT: not 2-D, non-integer or negative labels, shapes that differ.

    Notes
    -----
    A pair matches at threshold t when IoU > t. For t >= 0.5 at most one pair per object
    can exceed t (two objects cannot each cover more than half of a third's union), so the
    matching is unique; below 0.5 the one-to-one matching of largest total IoU is found by
    the Hungarian algorithm on the candidate pairs. Then

    .. math:: AP_t = \\frac{TP_t}{TP_t + FP_t + FN_t}, \\quad
              F_1 = \\frac{2 TP}{2 TP + FP + FN}

    (Caicedo et al. 2019, Nature Methods 16:1247, the DSB-2018 score). A true object is
    **split** when two or more predicted objects each lie mostly (at least half of the
    predicted object's area) inside it; a predicted object is a **merge** when two or more
    true objects each lie mostly (at least half of their area) inside it; the counts are
    the numbers of such true and predicted objects.

    Examples
    --------
    Prediction 3 covers half of true object 2: IoU 0.5, not above 0.5, so no match.

    >>> truth = np.array([[1, 1, 0, 2, 2]])
    >>> scores = score_segmentation(np.array([[1, 1, 0, 0, 3]]), truth, thresholds=[0.5])
    >>> scores.true_positives, scores.false_positives, scores.false_negatives
    ((1,), (1,), (1,))
    >>> round(scores.average_precision(0.5), 3)
    0.333
    """
    pred = as_labels(predicted, "PRED")
    true = as_labels(truth, "GT")
    if pred.shape != true.shape:
        raise ValueError(f"PRED shape {pred.shape} differs from GT shape {true.shape}")
    levels = tuple(float(t) for t in thresholds)
    if not levels or any(not 0.0 < t < 1.0 for t in levels):
        raise ValueError(f"thresholds must be in (0, 1), got {list(levels)}")

    true_ids, true_flat = np.unique(true, return_inverse=True)
    pred_ids, pred_flat = np.unique(pred, return_inverse=True)
    # Index 0 is the background whenever the image has any; shift so that it always is.
    true_index = true_flat.ravel() + (0 if true_ids[0] == 0 else 1)
    pred_index = pred_flat.ravel() + (0 if pred_ids[0] == 0 else 1)
    n_true = int(true_ids.size - (true_ids[0] == 0))
    n_pred = int(pred_ids.size - (pred_ids[0] == 0))

    true_area = np.bincount(true_index, minlength=n_true + 1)
    pred_area = np.bincount(pred_index, minlength=n_pred + 1)
    pair_code, overlap = np.unique(true_index * (n_pred + 1) + pred_index, return_counts=True)
    pair_true, pair_pred = np.divmod(pair_code, n_pred + 1)
    both = (pair_true > 0) & (pair_pred > 0)
    pair_true, pair_pred, overlap = pair_true[both], pair_pred[both], overlap[both]
    iou = overlap / (true_area[pair_true] + pred_area[pair_pred] - overlap)

    tps, ious = [], 0.0
    for k, level in enumerate(levels):
        matched_iou = _matched(pair_true, pair_pred, iou, level)
        tps.append(int(matched_iou.size))
        if k == 0:
            ious = float(matched_iou.sum())
    n_split = _count_mostly_inside(pair_true, overlap / pred_area[pair_pred])
    n_merged = _count_mostly_inside(pair_pred, overlap / true_area[pair_true])
    return SegmentationScores(
        thresholds=levels,
        true_positives=tuple(tps),
        false_positives=tuple(n_pred - tp for tp in tps),
        false_negatives=tuple(n_true - tp for tp in tps),
        n_true=n_true,
        n_predicted=n_pred,
        matched_iou_sum=ious,
        n_split=n_split,
        n_merged=n_merged,
    )


def average_precision(predicted: ArrayLike, truth: ArrayLike, threshold: float = 0.5) -> float:
    """TP / (TP + FP + FN) at one IoU threshold (see :func:`score_segmentation`)."""
    return score_segmentation(predicted, truth, [threshold]).average_precision(threshold)


def pool_scores(scores: Iterable[SegmentationScores]) -> SegmentationScores:
    """Scores of several images together: every count summed, so each object weighs the same.

    Raises
    ------
    ValueError
        If there are no scores or they were made at different thresholds.
    """
    items = list(scores)
    if not items:
        raise ValueError("no scores to pool")
    levels = items[0].thresholds
    if any(s.thresholds != levels for s in items):
        raise ValueError("scores to pool were made at different thresholds")

    def summed(field: str) -> tuple[int, ...]:
        return tuple(int(v) for v in np.sum([getattr(s, field) for s in items], axis=0))

    return SegmentationScores(
        thresholds=levels,
        true_positives=summed("true_positives"),
        false_positives=summed("false_positives"),
        false_negatives=summed("false_negatives"),
        n_true=sum(s.n_true for s in items),
        n_predicted=sum(s.n_predicted for s in items),
        matched_iou_sum=float(sum(s.matched_iou_sum for s in items)),
        n_split=sum(s.n_split for s in items),
        n_merged=sum(s.n_merged for s in items),
    )


def _matched(pair_true: np.ndarray, pair_pred: np.ndarray, iou: np.ndarray, level: float) -> np.ndarray:
    """IoUs of the one-to-one matched pairs with IoU > level."""
    keep = iou > level
    if level >= 0.5 or not keep.any():
        return iou[keep]
    rows, row_of = np.unique(pair_true[keep], return_inverse=True)
    cols, col_of = np.unique(pair_pred[keep], return_inverse=True)
    gain = np.zeros((rows.size, cols.size))
    gain[row_of, col_of] = iou[keep]
    r, c = linear_sum_assignment(gain, maximize=True)
    chosen = gain[r, c]
    return chosen[chosen > level]


def _count_mostly_inside(container: np.ndarray, share: np.ndarray) -> int:
    """How many containers hold two or more objects that each lie mostly inside them."""
    inside = container[share >= MAJORITY]
    if inside.size == 0:
        return 0
    return int(np.count_nonzero(np.bincount(inside) >= 2))


def _ratio(numerator: int, denominator: int) -> float:
    return float(numerator) / denominator if denominator else 1.0
