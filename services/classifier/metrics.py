"""Multi-label scores: per-class average precision, F1 at thresholds, and thresholds chosen for F1."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["MultiLabelScores", "average_precision", "best_thresholds", "f1_scores", "score_predictions"]

THRESHOLD_GRID = np.round(np.arange(0.05, 0.96, 0.01), 2)
"""Thresholds tried per class by :func:`best_thresholds`."""


@dataclass(frozen=True)
class MultiLabelScores:
    """Scores of one labelled set, one entry per class (NaN for a class without positives)."""

    average_precision: np.ndarray
    f1: np.ndarray
    positives: np.ndarray

    @property
    def mean_average_precision(self) -> float:
        """Mean AP over the classes that have positives."""
        return float(np.nanmean(self.average_precision))

    @property
    def macro_f1(self) -> float:
        """Mean F1 over the classes that have positives."""
        return float(np.nanmean(self.f1))


def _check(probabilities: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(probabilities, np.float64)
    labels = np.asarray(truth, bool)
    if scores.ndim != 2 or scores.shape != labels.shape:
        raise ValueError(
            f"probabilities, truth: expected two (N, classes) arrays of one shape, got "
            f"{list(scores.shape)} and {list(labels.shape)}"
        )
    return scores, labels


def average_precision(probabilities: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Average precision of each class (columns), NaN where a class has no positive.

    Notes
    -----
    AP = Σ_k P(k) · rel(k) / positives over the ranking by decreasing score,
    with tied scores ranked together (all of a tie counted at its last rank),
    as scikit-learn's ``average_precision_score``.
    """
    scores, labels = _check(probabilities, truth)
    result = np.full(scores.shape[1], np.nan)
    for column in range(scores.shape[1]):
        positive = labels[:, column]
        if not positive.any():
            continue
        order = np.argsort(-scores[:, column], kind="stable")
        ranked_scores = scores[order, column]
        hits = np.cumsum(positive[order])
        # Evaluate precision and recall only at the last row of each tie.
        last = np.r_[ranked_scores[1:] != ranked_scores[:-1], True]
        precision = hits[last] / (np.flatnonzero(last) + 1)
        recall = hits[last] / positive.sum()
        result[column] = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    return result


def f1_scores(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """F1 of each class (columns) of boolean predictions, NaN where a class has no positive."""
    predicted, labels = np.asarray(predicted, bool), np.asarray(truth, bool)
    true_positive = (predicted & labels).sum(axis=0)
    denominator = predicted.sum(axis=0) + labels.sum(axis=0)
    f1 = 2 * true_positive / np.maximum(denominator, 1)
    return np.where(labels.any(axis=0), f1, np.nan)


def best_thresholds(probabilities: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-class threshold from :data:`THRESHOLD_GRID` maximising that class's F1 (0.5 without positives).

    Among equally good thresholds the middle one is taken, away from both edges of the plateau.
    """
    scores, labels = _check(probabilities, truth)
    thresholds = np.full(scores.shape[1], 0.5)
    for column in range(scores.shape[1]):
        if not labels[:, column].any():
            continue
        predicted = scores[:, column, None] >= THRESHOLD_GRID[None, :]
        positive = labels[:, column, None]
        f1 = 2 * (predicted & positive).sum(axis=0) / (predicted.sum(axis=0) + positive.sum())
        best = np.flatnonzero(f1 >= f1.max() - 1e-12)
        thresholds[column] = THRESHOLD_GRID[best[len(best) // 2]]
    return thresholds


def score_predictions(
    probabilities: np.ndarray, truth: np.ndarray, thresholds: np.ndarray
) -> MultiLabelScores:
    """Per-class AP, and F1 of the predictions ``probabilities >= thresholds``."""
    scores, labels = _check(probabilities, truth)
    predicted = scores >= np.asarray(thresholds)[None, :]
    return MultiLabelScores(
        average_precision(scores, labels), f1_scores(predicted, labels), labels.sum(axis=0)
    )
