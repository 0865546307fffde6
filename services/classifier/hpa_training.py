"""Training the organelle classifier on labelled HPA-format images (cells with weak labels).

Every cell of an image takes the image's label set, as in the HPA single-cell
challenge. Whole images are split into training, validation and test images;
the network is fitted on the training cells, per-class thresholds are chosen on
the validation cells, and the test cells give the held-out per-class AP, mAP
and macro-F1 (and, taking each class's highest cell probability per image, the
image-level scores). The model directory written is what the classifier's
model repository serves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from services.classifier.classes import CLASS_NAMES
from services.classifier.hpa_data import split_ids
from services.classifier.metrics import best_thresholds
from services.classifier.training import (
    DEFAULT_LEARNING_RATES,
    INPUT_SIZE,
    LabelledCrops,
    backbone_architecture,
    fit,
    licence_of,
    new_network,
    predict_crops,
    split_report,
    write_model_files,
)

__all__ = ["HpaTrainingConfig", "HpaTrainingReport", "ImageCells", "image_scores", "train_hpa_classifier"]

@dataclass(frozen=True)
class ImageCells:
    """The cell crops of labelled images, one entry per image.

    Attributes
    ----------
    ids : tuple of str
        Image ids.
    classes : ndarray of bool, shape (images, 19)
        Each image's label set, given to all its cells.
    crops : tuple of ndarray of uint8, shape (cells, 4, S, S)
        Each image's RGBY cell crops (none for an image without cells).
    """

    ids: tuple[str, ...]
    classes: np.ndarray
    crops: tuple[np.ndarray, ...]

    def cells(self, images: Sequence[int] | np.ndarray) -> LabelledCrops:
        """The crops of the given images with their images' label sets."""
        crops = [self.crops[i] for i in images]
        labels = [np.repeat(self.classes[i][None, :], len(self.crops[i]), axis=0) for i in images]
        if not crops:
            return LabelledCrops(np.zeros((0, 4, INPUT_SIZE, INPUT_SIZE), np.uint8),
                                 np.zeros((0, len(CLASS_NAMES)), bool))
        return LabelledCrops(np.concatenate(crops), np.concatenate(labels))


@dataclass(frozen=True)
class HpaTrainingConfig:
    """Settings of one training run on HPA-format data (all recorded in the model card)."""

    seed: int = 0
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 0.0
    """0 takes the backbone's :data:`DEFAULT_LEARNING_RATES`."""
    weight_decay: float = 1e-4
    time_budget: float = 1800.0
    threads: int = 1
    backbone: str = "hpa-cell-cnn"
    held_out: float = 0.2
    validation: float = 0.1
    device: str = "cpu"

    def resolved(self) -> HpaTrainingConfig:
        """The config with the learning rate filled in."""
        if self.learning_rate > 0:
            return self
        return HpaTrainingConfig(**{**asdict(self), "learning_rate": DEFAULT_LEARNING_RATES[self.backbone]})


@dataclass(frozen=True)
class HpaTrainingReport:
    """What a run on HPA-format data measured; written as ``metrics.json`` and into the model card."""

    config: dict[str, object]
    data: dict[str, object]
    split_images: dict[str, list[str]]
    split_cells: dict[str, int]
    thresholds: list[float]
    test: dict[str, object]
    test_images: dict[str, object]
    epochs_run: float
    train_seconds: float
    parameters: int
    history: list[float] = field(default_factory=list)


def image_scores(probabilities: np.ndarray, cells_per_image: Sequence[int]) -> np.ndarray:
    """Each image's class probabilities: the highest of its cells' (0 for an image without cells)."""
    rows = np.zeros((len(cells_per_image), probabilities.shape[1]), np.float32)
    start = 0
    for index, count in enumerate(cells_per_image):
        if count:
            rows[index] = probabilities[start : start + count].max(axis=0)
        start += count
    return rows


def train_hpa_classifier(
    images: ImageCells,
    destination: Path,
    config: HpaTrainingConfig = HpaTrainingConfig(),
    *,
    name: str,
    data: dict[str, object] | None = None,
    log: Callable[[str], None] = print,
) -> HpaTrainingReport:
    """Train on the cells of labelled images, score held-out images and write the model directory.

    Parameters
    ----------
    images : ImageCells
        Cell crops and label sets of every image.
    destination : Path
        The model directory to write (``manifest.toml``, ``weights.pt``,
        ``thresholds.json``, ``metrics.json``, ``MODEL_CARD.md``).
    config : HpaTrainingConfig
        Split fractions, seed, backbone, optimisation and time bound.
    name : str
        The model's name in the repository.
    data : dict, optional
        Where the images came from (CSV, folder, segmentation), for the model card.
    log : callable
        Receives one line per stage and epoch.

    Returns
    -------
    HpaTrainingReport

    Raises
    ------
    ValueError
        If the split leaves the training, validation or test images without cells.
    """
    import torch

    config = config.resolved()
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    indices = split_ids(len(images.ids), config.held_out, config.validation, config.seed)
    splits = dict(zip(("train", "validation", "test"), indices, strict=True))
    sets = {split: images.cells(indices) for split, indices in splits.items()}
    empty = [split for split, cells in sets.items() if not len(cells.classes)]
    if empty:
        raise ValueError(f"images: the {' and '.join(empty)} images hold no cells; label more images "
                         "or check the segmentation (pixel size)")
    log(f"{len(images.ids)} images: cells {', '.join(f'{s} {len(c.classes)}' for s, c in sets.items())}")
    model = new_network(config.backbone)
    history, epochs_run, train_seconds = fit(model, sets["train"], config, config.time_budget, log)
    thresholds = best_thresholds(predict_crops(model, sets["validation"].crops), sets["validation"].classes)
    test_probabilities = predict_crops(model, sets["test"].crops)
    test_ids = splits["test"]
    per_image = image_scores(test_probabilities, [len(images.crops[i]) for i in test_ids])
    report = HpaTrainingReport(
        config=asdict(config),
        data=dict(data or {}),
        split_images={split: [images.ids[i] for i in indices] for split, indices in splits.items()},
        split_cells={split: len(cells.classes) for split, cells in sets.items()},
        thresholds=[float(t) for t in thresholds],
        test=split_report(test_probabilities, sets["test"].classes, thresholds),
        test_images=split_report(per_image, images.classes[test_ids], thresholds),
        epochs_run=epochs_run,
        train_seconds=train_seconds,
        parameters=sum(p.numel() for p in model.parameters()),  # type: ignore[attr-defined]
        history=history,
    )
    log(f"held-out cells: mAP {report.test['mean_average_precision']:.3f}, macro-F1 "
        f"{report.test['macro_f1']:.3f}")
    write_model_files(
        destination, model, name=name, version=f"hpa-seed-{config.seed}", backbone=config.backbone,
        source=(f"labsight train-classifier on HPA-format data ({len(images.ids)} images, weak cell "
                f"labels); held-out cell macro-F1 {report.test['macro_f1']:.3f}"),
        licence=licence_of(config.backbone, "the user's labelled images (their terms apply)"),
        thresholds=report.thresholds, metrics=asdict(report), card=hpa_model_card(report, name),
    )
    return report


def hpa_model_card(report: HpaTrainingReport, name: str) -> str:
    """The model card of a model trained on HPA-format data, from its report."""
    config, test, images = report.config, report.test, report.test_images
    rows = "\n".join(
        f"| {i} | {c} | {test['positives'][i]} | {_cell(test['average_precision'][i])} | "  # type: ignore[index]
        f"{_cell(test['f1'][i])} | {report.thresholds[i]:.2f} | {_cell(images['average_precision'][i])} |"  # type: ignore[index]
        for i, c in enumerate(CLASS_NAMES)
    )
    sources = "\n".join(f"- {key}: {value}" for key, value in report.data.items())
    counts = report.split_images
    return f"""# Model card: {name}

Trained by `labsight train-classifier` on HPA-format labelled images. Cells carry their image's
label set (weak labels, as in the HPA single-cell challenge), so cell scores below count a cell
as positive for every class of its image.

## What it is
- Architecture `{backbone_architecture(str(config['backbone']))}` (backbone `{config['backbone']}`),
  {report.parameters:,} parameters. Input: (N, 4, {INPUT_SIZE}, {INPUT_SIZE}) RGBY cell crops in [0, 1]
  (other cells blanked). Output: 19 independent sigmoid probabilities in HPA order.
- Per-class thresholds (`thresholds.json`) chosen on the validation images' cells for F1.

## Data
{sources}
- Images: {len(counts['train'])} training, {len(counts['validation'])} validation,
  {len(counts['test'])} held-out test (whole images per split, seed {config['seed']}); cells:
  {report.split_cells['train']} / {report.split_cells['validation']} / {report.split_cells['test']}.
- Optimisation: AdamW, peak learning rate {config['learning_rate']} (warm-up, cosine decay), batch
  {config['batch_size']}, {report.epochs_run:.1f} epochs with rotations and flips,
  {report.train_seconds:.0f} s on {config['threads']} CPU thread(s).

## Held-out scores
Cells: mAP **{_cell(test['mean_average_precision'])}**, macro-F1 **{_cell(test['macro_f1'])}** over
{test['cells']} cells. Images (each class's highest cell probability): mAP
{_cell(images['mean_average_precision'])}, macro-F1 {_cell(images['macro_f1'])} over {images['cells']}
images. Classes without a held-out positive have no score.

| # | class | test cell positives | cell AP | cell F1 | threshold | image AP |
|---|---|---|---|---|---|---|
{rows}
"""


def _cell(value: object) -> str:
    return "n/a" if value is None or value != value else f"{float(value):.3f}"  # type: ignore[arg-type]
