"""Per-cell organelle classification of an RGBY image: crops → a batched model → label sets per cell."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from labsight.cell_crops import CellCrops, cell_crops
from services.classifier.classes import CLASS_NAMES, NUM_CLASSES

__all__ = ["CellClassification", "Predict", "classify_cells", "classify_crops"]

Predict = Callable[[np.ndarray], np.ndarray]
"""A batched model: (N, 4, S, S) float32 crops → (N, 19) probabilities."""

CHANNELS = 4
"""Red microtubules, green protein, blue nuclei, yellow ER."""


@dataclass(frozen=True)
class CellClassification:
    """The classes of every cell of one image and the image-level summary.

    Attributes
    ----------
    cell_ids : ndarray of int64, shape (N,)
        Cell labels, increasing.
    boxes : ndarray of int64, shape (N, 4)
        Bounding boxes (top, left, bottom, right), bottom and right exclusive.
    probabilities : ndarray of float32, shape (N, 19)
        Independent class probabilities, HPA order.
    predicted : ndarray of bool, shape (N, 19)
        ``probabilities >= thresholds``: each cell's predicted label set.
    thresholds : ndarray of float64, shape (19,)
        The per-class thresholds used.
    image_probabilities : ndarray of float32, shape (19,)
        Per class, the highest probability of any cell (0 without cells).
    class_counts : ndarray of int64, shape (19,)
        Per class, the number of cells predicted to carry it.
    class_names : tuple of str
        Names of the 19 classes.
    """

    cell_ids: np.ndarray
    boxes: np.ndarray
    probabilities: np.ndarray
    predicted: np.ndarray
    thresholds: np.ndarray
    image_probabilities: np.ndarray
    class_counts: np.ndarray
    class_names: tuple[str, ...] = CLASS_NAMES

    @property
    def top_classes(self) -> np.ndarray:
        """Index of each cell's most probable class, shape (N,)."""
        return np.argmax(self.probabilities, axis=1) if len(self.cell_ids) else np.zeros(0, np.int64)

    @property
    def image_labels(self) -> np.ndarray:
        """The classes predicted in at least one cell, as a boolean (19,) array."""
        return self.class_counts > 0

    def label_sets(self) -> list[list[str]]:
        """Each cell's predicted label set as class names."""
        return [[self.class_names[c] for c in np.flatnonzero(row)] for row in self.predicted]


def classify_cells(
    image: np.ndarray,
    cell_labels: np.ndarray,
    predict: Predict,
    *,
    thresholds: np.ndarray | float = 0.5,
    input_size: int = 64,
    batch_size: int = 64,
    blank_other_cells: bool = True,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    max_bytes: int | None = None,
) -> CellClassification:
    """Classify every labelled cell of an RGBY image into the 19 HPA localisation classes.

    Parameters
    ----------
    image : ndarray of uint8 or uint16, shape (H, W, 4)
        Red microtubules, green protein, blue nuclei, yellow ER.
    cell_labels : ndarray of int, shape (H, W)
        Cell mask (from the segmentation); 0 is background.
    predict : callable
        The model, batched: (N, 4, S, S) float32 → (N, 19) probabilities. It
        may be a local torch module's wrapper, an ONNX session or a client
        of a model server; this function needs none of them.
    thresholds : float or array_like of shape (19,)
        Per-class decision thresholds (one number: the same for all).
    input_size : int
        Side S of the model's square input.
    batch_size : int
        Crops per ``predict`` call.
    blank_other_cells : bool
        Zero neighbouring cells' pixels in each crop.
    mean, std : tuple of float, optional
        The model's per-channel normalisation of [0, 1]-scaled pixels.
    max_bytes : int, optional
        Refuse images whose crops would take more memory than this.

    Returns
    -------
    CellClassification
        Empty (no rows, zero image probabilities) when the mask holds no cell.

    Raises
    ------
    ValueError
        Naming ``image`` (not (H, W, 4), wrong dtype), ``cell_labels`` (not
        integer, another shape), ``thresholds`` or ``batch_size``; naming
        ``predict`` when the model answers with the wrong shape.

    Examples
    --------
    >>> image = np.zeros((32, 32, 4), np.uint8)
    >>> labels = np.zeros((32, 32), np.int32)
    >>> labels[4:20, 6:22] = 3
    >>> constant = lambda batch: np.full((len(batch), 19), 0.7, np.float32)
    >>> result = classify_cells(image, labels, constant, thresholds=0.6, input_size=16)
    >>> result.cell_ids.tolist(), int(result.predicted.sum())
    ([3], 19)
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != CHANNELS:
        raise ValueError(
            f"image: expected (H, W, 4) red, green, blue, yellow channels, got shape {list(image.shape)}"
        )
    _check_thresholds_and_batch(thresholds, batch_size)
    crops = cell_crops(
        image, cell_labels, input_size, channels=CHANNELS, mean=mean, std=std,
        blank_other_cells=blank_other_cells, max_bytes=max_bytes,
    )
    return classify_crops(crops, predict, thresholds=thresholds, batch_size=batch_size)


def classify_crops(
    crops: CellCrops,
    predict: Predict,
    *,
    thresholds: np.ndarray | float = 0.5,
    batch_size: int = 64,
) -> CellClassification:
    """Classify cells already cut into crops: the model half of :func:`classify_cells`.

    For callers that cut the crops apart from running the model (the classifier service cuts
    one call's crops at a time per process while other calls' crops are in the model).

    Parameters
    ----------
    crops : CellCrops
        The cells' crops as :func:`labsight.cell_crops.cell_crops` cuts them for the model.
    predict, thresholds, batch_size
        As for :func:`classify_cells`.

    Returns
    -------
    CellClassification
        Empty (no rows, zero image probabilities) when there are no crops.

    Raises
    ------
    ValueError
        Naming ``thresholds`` or ``batch_size``; naming ``predict`` when the model answers
        with the wrong shape.
    """
    limits = _check_thresholds_and_batch(thresholds, batch_size)
    probabilities = np.zeros((len(crops.cell_ids), NUM_CLASSES), np.float32)
    for start in range(0, len(crops.cell_ids), batch_size):
        batch = crops.pixels[start : start + batch_size]
        answer = np.asarray(predict(batch), dtype=np.float32)
        if answer.shape != (len(batch), NUM_CLASSES):
            raise ValueError(
                f"predict: returned shape {list(answer.shape)} for {len(batch)} crops; "
                f"expected ({len(batch)}, {NUM_CLASSES})"
            )
        probabilities[start : start + len(batch)] = answer
    predicted = probabilities >= limits[None, :]
    if len(probabilities):
        image_probabilities = probabilities.max(axis=0)
    else:
        image_probabilities = np.zeros(NUM_CLASSES, np.float32)
    return CellClassification(
        cell_ids=crops.cell_ids,
        boxes=crops.boxes,
        probabilities=probabilities,
        predicted=predicted,
        thresholds=limits,
        image_probabilities=image_probabilities,
        class_counts=predicted.sum(axis=0).astype(np.int64),
    )


def _check_thresholds_and_batch(thresholds: np.ndarray | float, batch_size: int) -> np.ndarray:
    """The 19 per-class thresholds (one number repeated); ValueError for thresholds outside
    [0, 1] or of another count, and for a batch size below 1."""
    limits = np.asarray(thresholds, np.float64)
    if limits.ndim == 0:
        limits = np.full(NUM_CLASSES, float(limits))
    if limits.shape != (NUM_CLASSES,) or not np.all((limits >= 0) & (limits <= 1)):
        raise ValueError(f"thresholds: expected one number or {NUM_CLASSES} numbers in [0, 1]")
    if batch_size < 1:
        raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
    return limits
