"""Training and evaluation of the vessel-content network on the LabPics V2 folder layout.

LabPics V2 (Eppel et al.) keeps one folder per photo::

    <root>/<id>/Image.jpg
               Data.json                      "Vessels" and "MaterialsAndParts", keyed by index
               Ignore.png                     pixels to leave out of the loss
               Vessels/<i>.png                one mask per vessel
               MaterialsAndParts/<i>.png      one mask per material or part instance
               SemanticMaps/FullImage/<Class>.png
               SemanticMaps/PerVessel/<v>/<Class>.png

Instance PNGs hold 0 outside and 1, 4, 5, 6 or 7 inside (visible, inside another,
containing another, in front, behind); semantic PNGs are read as BGR, channel 0
marks membership. ``Data.json`` gives each vessel the indices of its contents
(``VesselContentAll_Indx``) and each material its classes (``All_ClassesList``)
and whether it is an instance of its own (``ASegmentableInstance``).

One training example is one vessel of a photo: the photo, that vessel's mask,
its content instances and its per-vessel class maps. As the seed trains: the 10
instance heads are matched to the true instances by the Hungarian method on the
IoU of hard masks, matched heads learn their instance and unmatched heads an
empty map, each class head its map, by pixel cross-entropy inside the vessel
(``Ignore.png`` left out); Adam, learning rate 1e-5.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from labsight.vessel_fill import fill_levels
from services.segmentation.generated_vessels import GeneratedVessel
from services.segmentation.models.vessel_net import (
    ARCHITECTURES,
    CLASSES,
    INPUT_CHANNELS,
    INSTANCE_HEADS,
    OUTPUTS,
    STRIDE,
    VesselContentNet,
    network_content,
    network_input,
    torch_runner,
)
from services.segmentation.vessel_metrics import ClassIoU, LayerScores, PanopticCounts
from services.segmentation.vessels import segment_vessel_content

__all__ = [
    "VesselExample",
    "evaluate_vessels",
    "read_labpics",
    "train_vessel_net",
    "write_labpics",
]

WEIGHTS_FILE = "weights.pt"
MANIFEST_FILE = "manifest.toml"

LEARNING_RATE = 1e-5
"""The seed's learning rate (Adam)."""


@dataclass(frozen=True)
class VesselExample:
    """One vessel of a LabPics photo and what it holds.

    Attributes
    ----------
    name : str
        ``<photo folder>/<vessel index>``.
    photo : numpy.ndarray
        (H, W, 3) uint8 RGB.
    vessel_mask : numpy.ndarray
        (H, W) bool.
    instance_masks : numpy.ndarray
        (K, H, W) bool, the vessel's content instances.
    instance_classes : tuple of tuple of str
        Classes of each instance.
    semantic : dict of str to numpy.ndarray
        (H, W) bool map of each class present in the vessel.
    ignore : numpy.ndarray
        (H, W) bool, pixels left out of the loss.
    """

    name: str
    photo: np.ndarray
    vessel_mask: np.ndarray
    instance_masks: np.ndarray
    instance_classes: tuple[tuple[str, ...], ...]
    semantic: dict[str, np.ndarray]
    ignore: np.ndarray


def read_labpics(root: Path) -> Iterator[VesselExample]:
    """Every vessel of every photo folder under ``root`` (folders holding a ``Data.json``), sorted.

    Raises
    ------
    ValueError
        Naming the file, for a folder whose Data.json or masks cannot be read.
    """
    folders = sorted(path.parent for path in Path(root).rglob("Data.json"))
    if not folders:
        raise ValueError(f"{root}: no LabPics photo folders (with Data.json) under it")
    for folder in folders:
        yield from _folder_examples(folder, Path(root))


def _folder_examples(folder: Path, root: Path) -> Iterator[VesselExample]:
    try:
        data = json.loads((folder / "Data.json").read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{folder / 'Data.json'}: {error}") from None
    photo = _read(folder / "Image.jpg", cv2.IMREAD_COLOR)[..., ::-1].copy()
    shape = photo.shape[:2]
    ignore_path = folder / "Ignore.png"
    ignore = _mask(ignore_path, shape) if ignore_path.exists() else np.zeros(shape, bool)
    materials = data.get("MaterialsAndParts", {})
    for index, vessel in sorted(data.get("Vessels", {}).items(), key=lambda item: int(item[0])):
        masks, classes = [], []
        for content in vessel.get("VesselContentAll_Indx", []):
            material = materials.get(str(content))
            if material is None or not material.get("ASegmentableInstance", True):
                continue
            masks.append(_mask(folder / material["MaskFilePath"], shape))
            classes.append(tuple(material.get("All_ClassesList", [])))
        semantic = {}
        per_vessel = folder / "SemanticMaps" / "PerVessel" / str(index)
        for path in sorted(per_vessel.glob("*.png")) if per_vessel.is_dir() else []:
            if path.stem in CLASSES:
                semantic[path.stem] = _mask(path, shape)
        yield VesselExample(
            name=f"{folder.relative_to(root)}/{index}",
            photo=photo,
            vessel_mask=_mask(folder / vessel["MaskFilePath"], shape),
            instance_masks=np.stack(masks) if masks else np.zeros((0, *shape), bool),
            instance_classes=tuple(classes),
            semantic=semantic,
            ignore=ignore,
        )


def _read(path: Path, flags: int) -> np.ndarray:
    image = cv2.imread(str(path), flags)
    if image is None:
        raise ValueError(f"{path}: missing or not an image")
    return image


def _mask(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """A LabPics mask PNG as bool: channel 0 (of BGR) non-zero."""
    image = _read(path, cv2.IMREAD_UNCHANGED)
    plane = image[..., 0] if image.ndim == 3 else image
    if plane.shape != shape:
        raise ValueError(f"{path}: {plane.shape[0]}×{plane.shape[1]} px, the photo is "
                         f"{shape[0]}×{shape[1]}")
    return plane > 0


def write_labpics(vessels: Sequence[GeneratedVessel], root: Path, prefix: str = "generated") -> list[Path]:
    """Write generated vessels as LabPics V2 photo folders ``root/<prefix>_<i>``; their paths.

    Each folder has one vessel (index 1) and its phases as materials 1..K, with
    the classes of each phase, the per-vessel and full-image class maps and an
    empty Ignore.png.
    """
    written = []
    for number, vessel in enumerate(vessels):
        folder = Path(root) / f"{prefix}_{number:04d}"
        for sub in ("Vessels", "MaterialsAndParts", "SemanticMaps/FullImage", "SemanticMaps/PerVessel/1"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / "Image.jpg"), vessel.photo[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        cv2.imwrite(str(folder / "Ignore.png"), np.zeros(vessel.vessel_mask.shape, np.uint8))
        cv2.imwrite(str(folder / "Vessels" / "1.png"), vessel.vessel_mask.astype(np.uint8))
        materials = {}
        class_maps: dict[str, np.ndarray] = {}
        for k, (mask, classes) in enumerate(zip(vessel.instance_masks, vessel.classes, strict=True), 1):
            cv2.imwrite(str(folder / "MaterialsAndParts" / f"{k}.png"), mask.astype(np.uint8))
            materials[str(k)] = {"MaskFilePath": f"MaterialsAndParts/{k}.png",
                                 "All_ClassesList": list(classes), "IsPart": False,
                                 "ASegmentableInstance": True}
            for name in classes:
                class_maps[name] = class_maps.get(name, np.zeros(mask.shape, bool)) | (mask > 0)
        for name, plane in class_maps.items():
            bgr = np.zeros((*plane.shape, 3), np.uint8)
            bgr[..., 0] = plane * 255
            for sub in ("SemanticMaps/FullImage", "SemanticMaps/PerVessel/1"):
                cv2.imwrite(str(folder / sub / f"{name}.png"), bgr)
        data = {"Vessels": {"1": {"MaskFilePath": "Vessels/1.png", "All_ClassesList": ["Vessel"],
                                  "VesselContentAll_Indx": [int(k) for k in materials]}},
                "MaterialsAndParts": materials}
        (folder / "Data.json").write_text(json.dumps(data, indent=1))
        written.append(folder)
    return written


@dataclass(frozen=True)
class TrainingReport:
    """What a training run did: steps, the mean loss of its first and last tenth, where it wrote."""

    steps: int
    first_loss: float
    last_loss: float
    seconds: float
    model_dir: Path


def train_vessel_net(examples: Sequence[VesselExample], model_dir: Path, *, steps: int,
                     width_factor: float = 1.0, max_side: int = 512, learning_rate: float = LEARNING_RATE,
                     initial: Path | None = None, name: str = "labpics-vessel", seed: int = 0,
                     device: str = "cpu") -> TrainingReport:
    """Train the vessel-content network and write ``weights.pt`` + ``manifest.toml`` to ``model_dir``.

    Parameters
    ----------
    examples : sequence of VesselExample
        Training vessels, visited in a seeded random order, one per step.
    model_dir : Path
        Where the model is written (a model directory of the segmentation repository).
    steps : int
        Optimiser steps (batch of one vessel).
    width_factor : float
        1 for the seed's network; 0.5 or 0.25 for narrower ones.
    max_side : int
        Photos are shrunk (nearest) so their longest side is at most this.
    learning_rate : float
        Adam's learning rate (the seed's 1e-5 by default).
    initial : Path, optional
        A state dict to start from (e.g. the seed's released weights).
    name : str
        The model's name in its manifest.
    seed : int
        Seeds the order and the initial weights.
    device : {"cpu", "cuda"}
        Where torch trains (the seed's full-size network wants a GPU).

    Raises
    ------
    ValueError
        For no examples, steps < 1, a width factor without an architecture.
    """
    if not examples:
        raise ValueError("examples: no vessels to train on")
    if steps < 1:
        raise ValueError(f"steps: must be at least 1, got {steps}")
    if width_factor not in ARCHITECTURES:
        raise ValueError(f"width_factor: one of {sorted(ARCHITECTURES)}, got {width_factor}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = VesselContentNet(width_factor)
    if initial is not None:
        net.load_state_dict(torch.load(initial, weights_only=True, map_location="cpu"))
    net.to(device)
    optimiser = torch.optim.Adam(net.parameters(), lr=learning_rate)
    losses = []
    started = time.monotonic()
    net.train()
    for _ in range(steps):
        example = examples[int(rng.integers(len(examples)))]
        loss = _loss(net, *(array.to(device) for array in _training_arrays(example, max_side)))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    net.eval().to("cpu")
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), model_dir / WEIGHTS_FILE)
    (model_dir / MANIFEST_FILE).write_text(_manifest_text(name, width_factor, steps, len(examples)))
    tenth = max(1, steps // 10)
    return TrainingReport(steps, float(np.mean(losses[:tenth])), float(np.mean(losses[-tenth:])),
                          time.monotonic() - started, model_dir)


def _training_arrays(example: VesselExample, max_side: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Input (1, 4, h, w), weights (h, w), instance targets (K, h, w), class targets (29, h, w).

    The photo is shrunk to ``max_side`` and cropped to a multiple of the stride.
    """
    height, width = example.vessel_mask.shape
    scale = min(1.0, max_side / max(height, width))
    resized = (max(STRIDE, round(height * scale)), max(STRIDE, round(width * scale)))
    size = (resized[0] // STRIDE * STRIDE, resized[1] // STRIDE * STRIDE)

    def fit(plane: np.ndarray) -> np.ndarray:
        scaled = cv2.resize(plane.astype(np.uint8), resized[::-1], interpolation=cv2.INTER_NEAREST)
        return scaled[:size[0], :size[1]]

    photo = fit(example.photo)
    vessel = fit(example.vessel_mask) > 0
    weights = vessel & ~(fit(example.ignore) > 0)
    instances = np.stack([fit(m) > 0 for m in example.instance_masks]) if len(example.instance_masks) \
        else np.zeros((0, *size), bool)
    classes = np.stack([fit(example.semantic[c]) > 0 if c in example.semantic else np.zeros(size, bool)
                        for c in CLASSES])
    return (torch.from_numpy(network_input(photo, vessel)), torch.from_numpy(weights.astype(np.float32)),
            torch.from_numpy(instances & vessel), torch.from_numpy(classes & vessel))


def _loss(net: VesselContentNet, inputs: torch.Tensor, weights: torch.Tensor, instances: torch.Tensor,
          classes: torch.Tensor) -> torch.Tensor:
    """Class-head cross-entropy plus instance-head cross-entropy after Hungarian matching."""
    semantic_logits, instance_logits = net.head_logits(inputs)
    total = weights.sum().clamp(min=1)

    def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        per_pixel = F.cross_entropy(logits, targets.long(), reduction="none")  # (heads, h, w)
        return (per_pixel * weights).sum() / total / len(logits)

    semantic_loss = cross_entropy(semantic_logits[0], classes)
    targets = torch.zeros((INSTANCE_HEADS, *weights.shape), dtype=torch.bool, device=weights.device)
    heads, truths = match_heads(instance_logits[0].detach(), instances, weights > 0)
    heads_at, truths_at = (torch.as_tensor(index, device=weights.device) for index in (heads, truths))
    targets[heads_at] = instances[truths_at]
    return semantic_loss + cross_entropy(instance_logits[0], targets)


def match_heads(logits: torch.Tensor, instances: torch.Tensor, inside: torch.Tensor
                ) -> tuple[np.ndarray, np.ndarray]:
    """The seed's matching: heads to true instances maximising the IoU of hard masks (Hungarian).

    Parameters
    ----------
    logits : torch.Tensor
        (10, 2, h, w) instance-head logits.
    instances : torch.Tensor
        (K, h, w) bool true instances.
    inside : torch.Tensor
        (h, w) bool pixels that count.

    Returns
    -------
    heads, truths : numpy.ndarray
        Matched head and instance indices (every instance gets a head while heads last).
    """
    if not len(instances):
        return np.zeros(0, int), np.zeros(0, int)
    hard = ((logits[:, 1] > logits[:, 0]) & inside).reshape(len(logits), -1).float()
    truth = (instances & inside).reshape(len(instances), -1).float()
    inter = hard @ truth.T
    union = hard.sum(1)[:, None] + truth.sum(1)[None, :] - inter
    iou = (inter / union.clamp(min=1)).cpu().numpy()
    heads, truths = linear_sum_assignment(-iou)
    return heads, truths


def _manifest_text(name: str, width_factor: float, steps: int, examples: int) -> str:
    """The manifest of a trained network (TOML written by hand: the fields are fixed)."""
    source = (f"trained by labsight train-vessel: {steps} steps on {examples} vessels "
              f"(LabPics V2 layout), width factor {width_factor}")
    return (
        f"name = {json.dumps(name)}\n"
        'version = "1"\n'
        'format = "state_dict"\n'
        f'weights = "{WEIGHTS_FILE}"\n'
        f'architecture = "{ARCHITECTURES[width_factor]}"\n'
        'task = "segmentation"\n'
        f"input_channels = {INPUT_CHANNELS}\n"
        "input_size = [256, 256]\n"
        "dynamic_size = true\n"
        f"outputs = {json.dumps(list(OUTPUTS))}\n"
        f"classes = {json.dumps(list(CLASSES))}\n"
        'licence = "as the training data\'s"\n'
        f"source = {json.dumps(source)}\n"
    )


def evaluate_vessels(examples: Sequence[VesselExample], net: VesselContentNet | None = None,
                     model: str = "network") -> dict[str, object]:
    """Per-class IoU, panoptic quality at IoU 0.5 and fill-level errors of a method on vessels.

    Parameters
    ----------
    examples : sequence of VesselExample
        Vessels with their true contents.
    net : VesselContentNet, optional
        The network to score; without it, the classical default.
    model : str
        The network's name in the report.

    Returns
    -------
    dict
        ``method``, ``vessels``, ``panoptic_quality``, ``class_iou`` (classes the
        method or the truth has), and the fill-level scores of :class:`LayerScores`.
    """
    class_iou, panoptic, layers = ClassIoU(), PanopticCounts(), LayerScores()
    method = "classical-layers" if net is None else model
    for example in examples:
        mask = example.vessel_mask.astype(np.uint8)
        if net is None:
            content = segment_vessel_content(example.photo, mask)
        else:
            content = network_content(example.photo, mask, torch_runner(net), model)
        truth_masks = example.instance_masks.astype(np.uint8)
        levels, filled = fill_levels(truth_masks, mask)
        layers.add(content.instance_masks, content.fill_levels, content.filled, truth_masks, levels, filled)
        panoptic.add(content.instance_masks, truth_masks)
        class_iou.add(content.semantic_masks, example.semantic,
                      sorted(set(content.semantic_masks) | set(example.semantic)))
    return {**layers.summary(), "method": method, "vessels": len(examples),
            "panoptic_quality": panoptic.quality, "class_iou": class_iou.scores()}
