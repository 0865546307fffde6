"""Scores of vessel-content segmentations: matched instance IoU, panoptic quality, class IoU, fill levels.

Instances are matched one to one by the Hungarian method on their IoU (as the
seed matches its instance heads to the annotated instances). Panoptic quality
(Kirillov et al., CVPR 2019) counts a match as a true positive at IoU > 0.5:
PQ = Σ IoU(TP) / (|TP| + |FP|/2 + |FN|/2).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["ClassIoU", "PanopticCounts", "iou_matrix", "match_instances"]

PQ_THRESHOLD = 0.5
"""IoU above which a matched pair is a true positive in panoptic quality."""


def iou_matrix(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """IoU of every mask of ``first`` (K, H, W) with every mask of ``second`` (L, H, W): (K, L)."""
    if not len(first) or not len(second):
        return np.zeros((len(first), len(second)))
    a = (np.asarray(first) > 0).reshape(len(first), -1).astype(np.float64)
    b = (np.asarray(second) > 0).reshape(len(second), -1).astype(np.float64)
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def match_instances(predicted: np.ndarray, truth: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one matching of predicted to true instances maximising the total IoU.

    Parameters
    ----------
    predicted, truth : numpy.ndarray
        (K, H, W) and (L, H, W) masks.

    Returns
    -------
    predicted_index, truth_index : numpy.ndarray
        Matched pairs (pairs of IoU 0 left out).
    ious : numpy.ndarray
        IoU of each pair.
    """
    ious = iou_matrix(predicted, truth)
    if not ious.size:
        empty = np.zeros(0, int)
        return empty, empty, np.zeros(0)
    rows, cols = linear_sum_assignment(-ious)
    keep = ious[rows, cols] > 0
    return rows[keep], cols[keep], ious[rows[keep], cols[keep]]


@dataclass
class PanopticCounts:
    """Panoptic quality accumulated over images (class-agnostic instances)."""

    iou_sum: float = 0.0
    true_positives: int = 0
    false_positives: int = 0
    false_negatives: int = 0

    def add(self, predicted: np.ndarray, truth: np.ndarray) -> None:
        """Count one image's instances ((K, H, W) predicted, (L, H, W) true)."""
        _, _, ious = match_instances(predicted, truth)
        hits = ious > PQ_THRESHOLD
        self.iou_sum += float(ious[hits].sum())
        self.true_positives += int(hits.sum())
        self.false_positives += len(predicted) - int(hits.sum())
        self.false_negatives += len(truth) - int(hits.sum())

    @property
    def quality(self) -> float:
        """PQ in [0, 1] (1 when there was nothing to find and nothing was found)."""
        denominator = self.true_positives + (self.false_positives + self.false_negatives) / 2
        return self.iou_sum / denominator if denominator else 1.0


@dataclass
class ClassIoU:
    """Per-class IoU of semantic masks, intersections and unions summed over images."""

    intersection: dict[str, int] = field(default_factory=dict)
    union: dict[str, int] = field(default_factory=dict)

    def add(self, predicted: Mapping[str, np.ndarray], truth: Mapping[str, np.ndarray],
            classes: Iterable[str]) -> None:
        """Count one image; a class missing from a mapping is an empty mask there."""
        for name in classes:
            p, t = predicted.get(name), truth.get(name)
            if p is None and t is None:
                continue
            shape = (p if p is not None else t).shape  # type: ignore[union-attr]
            p = np.zeros(shape, bool) if p is None else p > 0
            t = np.zeros(shape, bool) if t is None else t > 0
            self.intersection[name] = self.intersection.get(name, 0) + int((p & t).sum())
            self.union[name] = self.union.get(name, 0) + int((p | t).sum())

    def scores(self) -> dict[str, float]:
        """IoU of every class seen with a non-empty union."""
        return {name: self.intersection[name] / union for name, union in self.union.items() if union}


@dataclass
class LayerScores:
    """Matched instance IoU and fill-level errors over generated vessels of known contents.

    Each true instance counts: unmatched ones with IoU 0 and the whole of their
    fill level as error.
    """

    ious: list[float] = field(default_factory=list)
    fill_errors: list[float] = field(default_factory=list)
    filled_errors: list[float] = field(default_factory=list)

    def add(self, predicted_masks: np.ndarray, predicted_levels: np.ndarray, predicted_filled: float,
            true_masks: np.ndarray, true_levels: np.ndarray, true_filled: float) -> None:
        """Count one vessel: its predicted and true (K, H, W) masks, per-instance levels and totals."""
        rows, cols, ious = match_instances(predicted_masks, true_masks)
        per_truth = np.zeros(len(true_masks))
        errors = np.asarray(true_levels, np.float64).copy()
        per_truth[cols] = ious
        errors[cols] = np.abs(np.asarray(predicted_levels)[rows] - np.asarray(true_levels)[cols])
        self.ious.extend(per_truth.tolist())
        self.fill_errors.extend(errors.tolist())
        self.filled_errors.append(abs(predicted_filled - true_filled))

    def summary(self, tolerance: float = 0.03) -> dict[str, float]:
        """Means, worst cases and the shares within 0.8 IoU / ``tolerance`` of the height."""
        ious, fills, filled = (np.asarray(v) for v in (self.ious, self.fill_errors, self.filled_errors))
        return {
            "instances": float(len(ious)),
            "vessels": float(len(filled)),
            "mean_instance_iou": float(ious.mean()),
            "share_instances_iou_0.8": float((ious >= 0.8).mean()),
            "mean_fill_error": float(fills.mean()),
            "share_fill_within_tolerance": float((fills <= tolerance).mean()),
            "mean_filled_error": float(filled.mean()),
            "share_filled_within_tolerance": float((filled <= tolerance).mean()),
        }
