"""Why the classifier decided: Grad-CAM maps and LIME superpixel explanations of cell crops.

Grad-CAM (captum's ``LayerGradCam``) weighs the channels of the network's last
convolutional stage by the mean gradient of a class score and keeps the positive
part, upsampled to the crop. It is rendered the four ways of the image-feature
seed: grey (× 255), a jet colour map, the colour map blended half and half over
the crop, and the crop multiplied by the map.

LIME (the ``lime`` package's ``LimeImageExplainer``) cuts the crop into
superpixels (SLIC, deterministic), switches random subsets of them off (to 0),
sends every perturbed crop through the batched ``predict`` callable and fits a
weighted linear model of the class probability on which superpixels were on;
the superpixels with the largest positive weights are the explanation. A fixed
seed makes the result repeat exactly.

Crops are the classifier's inputs: (4, S, S) float32 RGBY in [0, 1] (other
cells blanked), as :func:`labsight.cell_crops.cell_crops` cuts them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

T = TypeVar("T")

__all__ = [
    "CamRenderings",
    "LimeExplanation",
    "cam_layer",
    "crop_rgb",
    "grad_cam",
    "lime_explanation",
    "render_cam",
    "render_lime",
    "superpixels",
]

Predict = Callable[[np.ndarray], np.ndarray]
"""A batched model: (N, 4, S, S) float32 crops → (N, classes) probabilities."""

LIME_SAMPLES = 1000
"""Perturbed crops per LIME explanation, as the seed takes (about 1.5 s per 64-pixel cell on one
CPU thread through ONNX Runtime, most of it the model; bench/classifier.py measures it)."""

LIME_FEATURES = 5
"""Superpixels shown (the seed's mask of the 5 strongest positive superpixels)."""

LIME_SEGMENTS = 60
"""Superpixels SLIC aims at on a crop (after its connectivity step, 33-56 on 64² generated cells)."""

LIME_BATCH = 256
"""Perturbed crops per ``predict`` call: four calls for the 1000 samples (a batch of 64² RGBY
float32 crops takes 16 MiB)."""


def cam_layer(model: object, path: str = "") -> object:
    """The module whose output Grad-CAM reads: ``path`` in ``model``, else its last ``Conv2d``.

    Raises
    ------
    ValueError
        Naming ``path`` if the model has no such module, or ``model`` if it has
        no convolution.
    """
    from torch import nn

    if path:
        try:
            return model.get_submodule(path)  # type: ignore[attr-defined]
        except AttributeError:
            raise ValueError(f"path: the model has no module {path!r}") from None
    convolutions = [m for m in model.modules() if isinstance(m, nn.Conv2d)]  # type: ignore[attr-defined]
    if not convolutions:
        raise ValueError("model: no Conv2d layer to read class activation maps from")
    return convolutions[-1]


def grad_cam(
    model: object, crops: np.ndarray, classes: np.ndarray, *, layer: object | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    """Grad-CAM maps of one class per crop, upsampled to the crop and scaled to [0, 1].

    Parameters
    ----------
    model : torch.nn.Module
        The classifier, (N, C, S, S) → (N, classes). If it has a ``logits``
        method, the scores before the sigmoid are explained (a saturated
        sigmoid would hide the gradient), else its output.
    crops : ndarray of float32, shape (N, C, S, S)
        Normalised model inputs.
    classes : array_like of int, shape (N,)
        The class explained for each crop.
    layer : torch.nn.Module, optional
        Where the maps are read (default :func:`cam_layer`: the last convolution).
    batch_size : int
        Crops per backward pass (bounds the memory the gradients take).

    Returns
    -------
    ndarray of float32, shape (N, S, S)
        Each map divided by its maximum; all zero where no location supports
        the class (every weighted activation ≤ 0).

    Raises
    ------
    ValueError
        Naming ``crops`` (not (N, C, H, W)) or ``classes`` (another length, an
        index outside the model's outputs).

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(4, 3, 3, padding=1), torch.nn.ReLU(),
    ...                           torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    >>> maps = grad_cam(net, np.random.default_rng(0).random((2, 4, 8, 8), np.float32), [0, 2])
    >>> maps.shape, bool(maps.min() >= 0 and maps.max() <= 1)
    ((2, 8, 8), True)
    """
    import torch
    from captum.attr import LayerAttribution, LayerGradCam

    crops = np.asarray(crops, np.float32)
    if crops.ndim != 4:
        raise ValueError(f"crops: expected (N, C, H, W), got shape {list(crops.shape)}")
    targets = np.asarray(classes, np.int64).reshape(-1)
    if len(targets) != len(crops):
        raise ValueError(f"classes: {len(targets)} classes for {len(crops)} crops")
    if len(crops) == 0:
        return np.zeros((0, *crops.shape[2:]), np.float32)
    forward = getattr(model, "logits", model)
    result = np.zeros((len(crops), *crops.shape[2:]), np.float32)
    with torch.inference_mode(False), torch.enable_grad():
        outputs = int(forward(torch.from_numpy(crops[:1].copy())).shape[1])
        if targets.min() < 0 or targets.max() >= outputs:
            raise ValueError(f"classes: indices must lie in 0..{outputs - 1}, got {targets.tolist()}")
        cam = LayerGradCam(forward, layer if layer is not None else cam_layer(model))
        for start in range(0, len(crops), max(1, batch_size)):
            inputs = torch.from_numpy(crops[start : start + batch_size].copy())
            chosen = targets[start : start + batch_size].tolist()
            maps = cam.attribute(inputs, target=chosen, relu_attributions=True)
            maps = LayerAttribution.interpolate(maps.detach(), tuple(crops.shape[2:]), "bilinear")
            result[start : start + len(inputs)] = maps[:, 0].numpy()
    np.clip(result, 0, None, out=result)
    peaks = result.reshape(len(result), -1).max(axis=1)
    scale = np.divide(1.0, peaks, out=np.zeros_like(peaks), where=peaks > 0)
    return result * scale[:, None, None]


def crop_rgb(crop: np.ndarray) -> np.ndarray:
    """An RGBY crop as an RGB picture, as HPA shows its images: yellow adds to red and green.

    Parameters
    ----------
    crop : ndarray, shape (4, S, S)
        Red microtubules, green protein, blue nuclei, yellow ER, in [0, 1].

    Returns
    -------
    ndarray of uint8, shape (S, S, 3)
        Red = red + yellow / 2, green = green + yellow / 2, blue = blue, clipped.
    """
    crop = np.asarray(crop, np.float32)
    if crop.ndim != 3 or crop.shape[0] != 4:
        raise ValueError(f"crop: expected (4, S, S) red, green, blue, yellow, got {list(crop.shape)}")
    red, green, blue, yellow = crop
    rgb = np.stack([red + yellow / 2, green + yellow / 2, blue], axis=-1)
    return np.rint(np.clip(rgb, 0, 1) * 255).astype(np.uint8)


@dataclass(frozen=True)
class CamRenderings:
    """One Grad-CAM map rendered the seed's four ways.

    Attributes
    ----------
    grey : ndarray of uint8, shape (S, S)
        The map × 255.
    colour : ndarray of uint8, shape (S, S, 3)
        The map through the jet colour map (blue low, red high).
    overlay : ndarray of uint8, shape (S, S, 3)
        Half the colour map plus half the crop's picture.
    multiply : ndarray of uint8, shape (S, S, 3)
        The crop's picture × the map: only what the class rests on stays lit.
    """

    grey: np.ndarray
    colour: np.ndarray
    overlay: np.ndarray
    multiply: np.ndarray

    def items(self) -> list[tuple[str, np.ndarray]]:
        """(name, picture) of the four renderings, in the order above."""
        return [("grey", self.grey), ("colour", self.colour), ("overlay", self.overlay),
                ("multiply", self.multiply)]


def render_cam(cam: np.ndarray, picture: np.ndarray) -> CamRenderings:
    """The four renderings of a map over the crop's RGB picture (:func:`crop_rgb`).

    Raises
    ------
    ValueError
        Naming ``cam`` (not 2-D, outside [0, 1]) or ``picture`` (not its size × 3).
    """
    from matplotlib import colormaps

    cam = np.asarray(cam, np.float32)
    picture = np.asarray(picture)
    if cam.ndim != 2 or not np.all((cam >= 0) & (cam <= 1)):
        raise ValueError(f"cam: expected a 2-D map in [0, 1], got shape {list(cam.shape)}")
    if picture.shape != (*cam.shape, 3) or picture.dtype != np.uint8:
        raise ValueError(f"picture: expected ({cam.shape[0]}, {cam.shape[1]}, 3) uint8, got "
                         f"{list(picture.shape)} {picture.dtype}")
    colour = np.rint(colormaps["jet"](cam)[..., :3] * 255).astype(np.uint8)
    overlay = np.rint(0.5 * colour.astype(np.float32) + 0.5 * picture).astype(np.uint8)
    multiply = np.rint(picture * cam[..., None]).astype(np.uint8)
    return CamRenderings(np.rint(cam * 255).astype(np.uint8), colour, overlay, multiply)


def superpixels(crop: np.ndarray, segments: int = LIME_SEGMENTS) -> np.ndarray:
    """SLIC superpixels of an RGBY crop over all four channels, labelled 0..K-1.

    Deterministic (SLIC has no randomness), so LIME's features repeat.

    Parameters
    ----------
    crop : ndarray, shape (C, S, S)
        The crop, channels first, in [0, 1].
    segments : int
        About how many superpixels.

    Returns
    -------
    ndarray of int64, shape (S, S)
    """
    from skimage.segmentation import slic

    pixels = np.ascontiguousarray(np.asarray(crop, np.float64).transpose(1, 2, 0))
    labels = slic(pixels, n_segments=segments, compactness=0.1, start_label=0, channel_axis=-1,
                  enforce_connectivity=True)
    return np.unique(labels, return_inverse=True)[1].reshape(labels.shape).astype(np.int64)


@dataclass(frozen=True)
class LimeExplanation:
    """A LIME explanation of one class of one crop.

    Attributes
    ----------
    class_index : int
        The class explained.
    segments : ndarray of int64, shape (S, S)
        Superpixel of each pixel, 0..K-1.
    weights : ndarray of float64, shape (K,)
        Each superpixel's weight in the local linear model of the class
        probability (positive: it supports the class).
    mask : ndarray of bool, shape (S, S)
        The pixels of the (up to) ``features`` superpixels of largest positive weight.
    saliency : ndarray of float32, shape (S, S)
        Each pixel's superpixel weight, negative ones set to 0, divided by the
        largest (all zero when none is positive).
    score : float
        R² of the local linear model on the perturbations.
    """

    class_index: int
    segments: np.ndarray
    weights: np.ndarray
    mask: np.ndarray
    saliency: np.ndarray
    score: float


def lime_explanation(
    crop: np.ndarray,
    predict: Predict,
    class_index: int,
    *,
    samples: int = LIME_SAMPLES,
    features: int = LIME_FEATURES,
    segments: int = LIME_SEGMENTS,
    seed: int = 0,
    batch_size: int = LIME_BATCH,
) -> LimeExplanation:
    """Explain one class of one crop with LIME; the same ``seed`` gives the same explanation.

    Parameters
    ----------
    crop : ndarray of float32, shape (C, S, S)
        The model input of one cell.
    predict : callable
        The batched model, (N, C, S, S) float32 → (N, classes) probabilities;
        every perturbed crop goes through it, ``batch_size`` at a time.
    class_index : int
        The class to explain.
    samples : int
        Perturbed crops (the first is the crop itself).
    features : int
        Superpixels in ``mask``.
    segments : int
        About how many superpixels (:func:`superpixels`).
    seed : int
        Seed of the perturbations.
    batch_size : int
        Perturbed crops per ``predict`` call.

    Returns
    -------
    LimeExplanation

    Raises
    ------
    ValueError
        Naming ``crop``, ``class_index``, ``samples`` or ``features``.
    """
    from lime import lime_image

    # lime 0.2 draws a tqdm bar over its samples in every call, with no option to leave it out:
    # one per cell on the CLI's terminal and in the classifier service's log.
    lime_image.tqdm = _without_progress_bar

    crop = np.asarray(crop, np.float32)
    if crop.ndim != 3:
        raise ValueError(f"crop: expected (C, S, S), got shape {list(crop.shape)}")
    if samples < 2 or features < 1:
        raise ValueError(f"samples, features: need samples >= 2 and features >= 1, got {samples}, "
                         f"{features}")
    first = np.asarray(predict(crop[None]), np.float32)
    if first.ndim != 2 or not 0 <= class_index < first.shape[1]:
        raise ValueError(f"class_index: {class_index} is not a class of the model's "
                         f"{first.shape[-1]} outputs")
    labels = superpixels(crop, segments)

    def perturbed(images: np.ndarray) -> np.ndarray:
        return np.asarray(predict(np.ascontiguousarray(images.transpose(0, 3, 1, 2), np.float32)))

    explainer = lime_image.LimeImageExplainer(random_state=seed)
    found = explainer.explain_instance(
        crop.transpose(1, 2, 0), perturbed, labels=(class_index,), top_labels=None, hide_color=0,
        num_samples=samples, batch_size=batch_size, segmentation_fn=lambda _: labels,
        random_seed=seed,
    )
    weights = np.zeros(int(labels.max()) + 1)
    for segment, weight in found.local_exp[class_index]:
        weights[segment] = weight
    order = [s for s in np.argsort(-weights, kind="stable")[:features] if weights[s] > 0]
    positive = np.clip(weights, 0, None)
    peak = positive.max()
    saliency = (positive / peak if peak > 0 else positive)[labels].astype(np.float32)
    return LimeExplanation(
        class_index=class_index, segments=labels, weights=weights, mask=np.isin(labels, order),
        saliency=saliency, score=float(found.score),
    )


def _without_progress_bar(samples: Iterable[T], *args: object, **kwargs: object) -> Iterable[T]:
    """tqdm's call, drawing nothing: the samples as they are."""
    return samples


def render_lime(picture: np.ndarray, explanation: LimeExplanation) -> np.ndarray:
    """The crop's picture with the explanation's superpixels kept, the rest dimmed to a quarter,
    and their outlines in yellow (as LIME's ``mark_boundaries`` draws them).

    Returns
    -------
    ndarray of uint8, shape (S, S, 3)
    """
    from skimage.segmentation import find_boundaries

    picture = np.asarray(picture)
    if picture.shape != (*explanation.segments.shape, 3):
        raise ValueError(f"picture: expected {list(explanation.segments.shape)} x 3, got "
                         f"{list(picture.shape)}")
    shown = np.where(explanation.mask[..., None], picture, picture // 4).astype(np.uint8)
    outline = find_boundaries(np.where(explanation.mask, explanation.segments + 1, 0), mode="inner")
    shown[outline & explanation.mask] = (255, 255, 0)
    return shown
