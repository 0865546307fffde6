"""What a vessel holds, without a trained network: horizontal phases by colour and texture.

The default of ``SegmentVesselContent`` when no LabPics weights are supplied
(``models/MODEL_CARD_VESSEL.md`` says what it can and cannot tell). Inside the
vessel mask, contents settle in horizontal layers: a powder or sediment bed at
the bottom, liquids above it (serum over blood cells, oil over water), foam on
the top liquid, and the empty part through which the background shows. So the
photo is reduced to one feature vector per image row of the vessel —

- colour: the row's median CIELAB colour (medians ignore a glare streak and the
  walls, which cover few of a row's pixels);
- fine texture: the median of |pixel − its 5×5 mean| (grains, bubbles);
- coarse variation: the spread of a blurred lightness along the row (the
  background seen through the empty part varies along a row, a material
  does not);
- likeness to the background: the colour difference to the pixels just
  outside the vessel in the same rows —

and the rows are cut into layers by an optimal piecewise-constant fit of
those vectors (dynamic programming, a penalty per layer). From the bottom up,
layers are material until the first one that looks like the background
through glass; the material layers are called powder (grainy, at the bottom),
foam (grainy or bright above a liquid) or liquid (smooth), neighbours of one
kind and colour are joined, and every boundary is refined pixel by pixel by
colour, which follows a meniscus. Fill levels are those of
:func:`labsight.vessel_fill.fill_levels`.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from labsight.vessel_fill import fill_levels

__all__ = ["METHOD", "SEMANTIC_CLASSES", "VesselContent", "check_vessel_inputs", "segment_vessel_content"]

METHOD = "classical-layers"
"""Name of this method in answers (the ``model`` of SegmentVesselContent)."""

SEMANTIC_CLASSES = ("Filled", "Liquid", "Foam", "Powder", "Solid")
"""The LabPics classes this method tells; it never claims any other."""

KIND_CLASSES = {"liquid": ("Liquid",), "foam": ("Foam",), "powder": ("Powder", "Solid")}
"""Classes of each kind of layer, next to ``Filled`` which every layer is."""

MIN_LAYER_SHARE = 0.04
"""A layer spans at least this share of the vessel's height (and 3 rows)."""

LAYER_PENALTY = 14.0
"""Cost of one more layer in the piecewise-constant fit (standardised units × rows)."""

GRAIN_TEXTURE = 2.0
"""Fine texture (CIELAB L units) above which a layer is grainy: powder or foam, not liquid."""

FOAM_LIGHTNESS = 78.0
"""A smooth layer this light (L*) and this grey sitting on a liquid is foam too."""

FOAM_CHROMA = 14.0

EMPTY_VARIATION = 9.0
"""Coarse variation along the rows (L* units) above which a layer shows the background."""

EMPTY_LIKENESS = 12.0
"""RGB distance to the background beside the vessel, seen through glass, below which a layer is empty."""

GLASS_COLOUR = np.array([235.0, 235.0, 235.0], np.float32)
"""The light grey glass mixes into what is seen through it."""

MAX_GLASS_TINT = 0.25
"""Most of :data:`GLASS_COLOUR` glass mixes in."""

GLARE_LIGHTNESS = 8.0
"""Pixels this much lighter (L*) than their row's median are glare, left out of the row's statistics."""

WALL_PX = 4
"""Pixels of wall (and its blur) inside the vessel mask, left out of the row statistics."""

RELIABLE_WIDTH = 0.35
"""Rows whose wall-free width is below this share of the widest are read with their neighbours."""

JOIN_DISTANCE = 10.0
"""Neighbouring layers of one kind closer in colour (ΔE) than this are one instance."""

# Scales that make the row features comparable in the layer fit.
_FEATURE_SCALES = np.array([3.0, 3.0, 3.0, 0.25, 2.0], np.float32)


@dataclass(frozen=True)
class VesselContent:
    """What one vessel holds.

    Attributes
    ----------
    instance_masks : numpy.ndarray
        (K, H, W) uint8, 1 inside each instance, bottom instance first.
    classes : tuple of tuple of str
        LabPics classes of each instance.
    class_probabilities : tuple of tuple of float
        Probability of each of its classes, same order.
    semantic_masks : dict of str to numpy.ndarray
        (H, W) uint8 mask of each class present (for the classical method, classes of
        :data:`SEMANTIC_CLASSES` only).
    fill_levels : numpy.ndarray
        (K,) share of the vessel's height each instance fills.
    filled : float
        Share of the vessel's height filled by all of them.
    method : str
        The method that segmented.
    """

    instance_masks: np.ndarray
    classes: tuple[tuple[str, ...], ...]
    class_probabilities: tuple[tuple[float, ...], ...]
    semantic_masks: dict[str, np.ndarray]
    fill_levels: np.ndarray
    filled: float
    method: str = METHOD


def check_vessel_inputs(photo: np.ndarray, vessel_mask: np.ndarray) -> np.ndarray:
    """Check a photo and its vessel mask; the mask as a (H, W) bool array.

    Parameters
    ----------
    photo : numpy.ndarray
        (H, W, 3) uint8 RGB photo.
    vessel_mask : numpy.ndarray
        (H, W) or (H, W, 1) mask, non-zero inside the vessel.

    Raises
    ------
    ValueError
        Naming ``photo`` or ``vessel_mask``: a photo that is not 8-bit RGB, a
        mask with more than one channel, of another size than the photo, or
        empty.
    """
    if photo.ndim != 3 or photo.shape[2] != 3:
        raise ValueError(f"photo: expected an RGB photo (H, W, 3), got shape {photo.shape}")
    if photo.dtype != np.uint8:
        raise ValueError(f"photo: expected 8-bit RGB (uint8), got {photo.dtype}")
    mask = vessel_mask[..., 0] if vessel_mask.ndim == 3 and vessel_mask.shape[2] == 1 else vessel_mask
    if mask.ndim != 2:
        raise ValueError(f"vessel_mask: expected one channel (H, W), got shape {vessel_mask.shape}")
    if mask.shape != photo.shape[:2]:
        raise ValueError(f"vessel_mask: {mask.shape[0]}×{mask.shape[1]} px, the photo is "
                         f"{photo.shape[0]}×{photo.shape[1]}; give a mask of the photo's size")
    inside = mask > 0
    if not inside.any():
        raise ValueError("vessel_mask: empty (no pixel inside the vessel)")
    return inside


def segment_vessel_content(photo: np.ndarray, vessel_mask: np.ndarray) -> VesselContent:
    """Instances, semantic masks and fill levels of a vessel's contents.

    Parameters
    ----------
    photo : numpy.ndarray
        (H, W, 3) uint8 RGB photo.
    vessel_mask : numpy.ndarray
        (H, W) mask of one vessel, non-zero inside (its walls included).

    Returns
    -------
    VesselContent
        Instances bottom first; an empty vessel has none.

    Raises
    ------
    ValueError
        For inputs :func:`check_vessel_inputs` refuses.
    """
    inside = check_vessel_inputs(photo, vessel_mask)
    lab = _lab(photo)
    top, bottom = _reliable_rows(inside)
    features, colours, texture, variation, likeness = _row_features(photo, lab, inside, top,
                                                                     bottom)
    span = np.flatnonzero(inside.any(axis=1)).size
    min_rows = max(3, round(MIN_LAYER_SHARE * span))
    cuts = _layers(features, min_rows)
    layers = [_Layer(start, end, np.median(colours[start:end], axis=0),
                     float(np.median(texture[start:end])), float(np.median(variation[start:end])),
                     float(np.median(likeness[start:end])))
              for start, end in zip(cuts[:-1], cuts[1:], strict=True)]
    material = _material_layers(layers)
    instances = _join(_kinds(material))
    masks = _masks(instances, lab, inside, top, bottom)
    return _content(instances, masks, inside)


@dataclass
class _Layer:
    """A run of vessel rows [start, end) (relative to the vessel's top) and its medians."""

    start: int
    end: int
    colour: np.ndarray
    texture: float
    variation: float
    likeness: float
    kind: str = ""
    confidence: float = 1.0


def _lab(photo: np.ndarray) -> np.ndarray:
    """CIELAB of an RGB photo as float32 L* in [0, 100], a*, b* around 0."""
    lab = cv2.cvtColor(photo, cv2.COLOR_RGB2LAB).astype(np.float32)
    lab[..., 0] *= 100 / 255
    lab[..., 1:] -= 128
    return lab


def _core(inside: np.ndarray) -> np.ndarray:
    """The vessel without its walls: the mask eroded by :data:`WALL_PX`."""
    size = 2 * WALL_PX + 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    return cv2.erode(inside.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT,
                     borderValue=0) > 0


def _reliable_rows(inside: np.ndarray) -> tuple[int, int]:
    """Rows [top, bottom) whose wall-free part is wide enough to read the contents from.

    A round bottom or a narrow neck leaves rows that are mostly wall; they join
    the nearest layer instead of making layers of their own.
    """
    widths = _core(inside).sum(axis=1)
    if not widths.any():  # a vessel narrower than its walls: read every row of it
        rows = np.flatnonzero(inside.any(axis=1))
        return int(rows[0]), int(rows[-1]) + 1
    wide = np.flatnonzero(widths >= min(max(3, RELIABLE_WIDTH * widths.max()), widths.max()))
    return int(wide[0]), int(wide[-1]) + 1


def _row_features(photo: np.ndarray, lab: np.ndarray, inside: np.ndarray, top: int, bottom: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per vessel row: standardised features for the fit, and colour, texture, variation, likeness.

    Glare (pixels lighter than the row's median by :data:`GLARE_LIGHTNESS`) and
    the walls are left out where enough of the row remains.
    """
    lightness = lab[..., 0]
    fine = np.abs(lightness - cv2.blur(lightness, (5, 5)))
    coarse = cv2.GaussianBlur(lightness, (0, 0), 2.5)
    rgb = cv2.GaussianBlur(photo.astype(np.float32), (0, 0), 1.0)
    core = _core(inside)
    outer = cv2.dilate(inside.astype(np.uint8), np.ones((1, 15), np.uint8)) > 0
    ring = outer & ~(cv2.dilate(inside.astype(np.uint8), np.ones((1, 5), np.uint8)) > 0)
    n = bottom - top
    colours = np.zeros((n, 3), np.float32)
    texture, variation, likeness = (np.zeros(n, np.float32) for _ in range(3))
    for i, y in enumerate(range(top, bottom)):
        xs = np.flatnonzero(core[y]) if core[y].any() else np.flatnonzero(inside[y])
        if not xs.size:  # a gap in a mask of several pieces: the row above's values
            colours[i], texture[i], variation[i], likeness[i] = (
                (colours[i - 1], texture[i - 1], variation[i - 1], likeness[i - 1]) if i
                else (0.0, 0.0, 0.0, np.inf))
            continue
        dull = xs[coarse[y, xs] <= np.median(coarse[y, xs]) + GLARE_LIGHTNESS]
        xs = dull if dull.size * 2 >= xs.size else xs
        colours[i] = np.median(lab[y, xs], axis=0)
        texture[i] = np.median(fine[y, xs])
        low, high = np.percentile(coarse[y, xs], [25, 75])
        variation[i] = high - low
        beside = np.flatnonzero(ring[y])
        inner = np.median(rgb[y, xs], axis=0)
        sides = [part for part in np.split(beside, np.flatnonzero(np.diff(beside) > 1) + 1) if part.size]
        likeness[i] = min((_through_glass(inner, np.median(rgb[y, part], axis=0)) for part in sides),
                          default=np.inf)
    features = np.column_stack([colours, np.log1p(texture), variation]) / _FEATURE_SCALES
    return features, colours, texture, variation, likeness


def _through_glass(inside: np.ndarray, beside: np.ndarray) -> float:
    """RGB distance of ``inside`` to the background ``beside`` seen through glass.

    Glass mixes a share t ≤ :data:`MAX_GLASS_TINT` of light grey into what is
    behind it; t is fitted by least squares.
    """
    towards = GLASS_COLOUR - beside
    reach = float(towards @ towards)
    tint = float(np.clip((inside - beside) @ towards / reach, 0, MAX_GLASS_TINT)) if reach else 0.0
    return float(np.linalg.norm(inside - beside - tint * towards))


def _layers(features: np.ndarray, min_rows: int) -> list[int]:
    """Cut points [0, ..., n] of the optimal piecewise-constant fit with :data:`LAYER_PENALTY`."""
    n = len(features)
    if n < 2 * min_rows:
        return [0, n]
    padded = np.vstack([np.zeros((1, features.shape[1])), features.astype(np.float64)])
    first = np.cumsum(padded, axis=0)
    second = np.cumsum(padded**2, axis=0)
    best = np.full(n + 1, np.inf)
    best[0] = 0.0
    previous = np.zeros(n + 1, int)
    for end in range(min_rows, n + 1):
        starts = np.arange(0, end - min_rows + 1)
        length = (end - starts)[:, None]
        sums = first[end] - first[starts]
        cost = ((second[end] - second[starts]) - sums**2 / length).sum(axis=1)
        total = best[starts] + cost + LAYER_PENALTY
        pick = int(np.argmin(total))
        best[end], previous[end] = total[pick], starts[pick]
    cuts = [n]
    while cuts[-1] > 0:
        cuts.append(int(previous[cuts[-1]]))
    return cuts[::-1]


def _looks_empty(layer: _Layer) -> bool:
    """The background through glass: it varies along the rows, or it matches what is beside the vessel."""
    return layer.variation > EMPTY_VARIATION or layer.likeness < EMPTY_LIKENESS


def _material_layers(layers: list[_Layer]) -> list[_Layer]:
    """The layers under the empty part, bottom first.

    From the top down, a layer is empty if it looks like the background
    through glass, or if it continues the empty layer above it (a colour
    within :data:`JOIN_DISTANCE` and not grainy: the same object behind the
    glass). Material
    is the run of layers from the bottom up to the first empty one.
    """
    empty = []
    for index, layer in enumerate(layers):
        above = layers[index - 1] if index else None
        continues = (above is not None and empty[-1]
                     and np.linalg.norm(layer.colour - above.colour) < JOIN_DISTANCE
                     and _grainy(layer) < 0.5)
        empty.append(bool(_looks_empty(layer) or continues))
    material = []
    for layer, is_empty in zip(reversed(layers), reversed(empty), strict=True):
        if is_empty:
            break
        material.append(layer)
    return material


def _sigmoid(x: float) -> float:
    return float(1 / (1 + np.exp(-x)))


def _grainy(layer: _Layer) -> float:
    """Probability that a layer's fine texture is grains or bubbles rather than a smooth liquid."""
    return _sigmoid((layer.texture - GRAIN_TEXTURE) / 0.3)


def _kinds(material: list[_Layer]) -> list[_Layer]:
    """Each material layer (bottom first) called powder, liquid or foam, with a confidence."""
    for index, layer in enumerate(material):
        grainy = _grainy(layer)
        chroma = float(np.hypot(*layer.colour[1:]))
        foamy = (_sigmoid((layer.colour[0] - FOAM_LIGHTNESS) / 3)
                 * _sigmoid((FOAM_CHROMA - chroma) / 3))
        on_liquid = index > 0 and material[index - 1].kind in ("liquid", "foam")
        if on_liquid and max(grainy, foamy) > 0.5:
            layer.kind, layer.confidence = "foam", max(grainy, foamy)
        elif grainy > 0.5:
            layer.kind, layer.confidence = "powder", grainy
        else:
            layer.kind, layer.confidence = "liquid", 1 - grainy
    return material


def _join(material: list[_Layer]) -> list[_Layer]:
    """Neighbouring layers of one kind and near colour as one (bottom first)."""
    joined: list[_Layer] = []
    for layer in material:
        last = joined[-1] if joined else None
        if (last is not None and last.kind == layer.kind
                and np.linalg.norm(last.colour - layer.colour) < JOIN_DISTANCE):
            weight = (last.end - last.start) / (last.end - last.start + layer.end - layer.start)
            last.colour = weight * last.colour + (1 - weight) * layer.colour
            last.confidence = min(last.confidence, layer.confidence)
            last.start = layer.start
        else:
            joined.append(layer)
    return joined


def _masks(instances: list[_Layer], lab: np.ndarray, inside: np.ndarray, top: int,
           bottom: int) -> np.ndarray:
    """Pixel masks of the instances: their rows, each boundary refined by colour (a meniscus).

    Around each boundary (the empty part's included), pixels within a band of
    rows go to whichever side's colour is nearer, then a median filter removes
    speckle.
    """
    height, width = inside.shape
    labels = np.zeros((height, width), np.int32)  # 0 empty, k + 1 instance k
    for k, layer in enumerate(instances):
        labels[top + layer.start:top + layer.end] = k + 1
    if instances:  # the rows below the reliable ones belong to the bottom instance
        labels[bottom:] = 1
    labels[~inside] = 0
    if not instances:
        return np.zeros((0, height, width), np.uint8)
    smooth = cv2.GaussianBlur(lab, (0, 0), 1.5)
    band = max(3, round(0.04 * (np.flatnonzero(inside.any(axis=1)).size)))
    colours = {k + 1: layer.colour for k, layer in enumerate(instances)}
    edges = [(top + layer.start, k + 1) for k, layer in enumerate(instances)]
    for boundary, lower in edges:
        upper = lower + 1 if lower < len(instances) else 0
        rows = slice(max(boundary - band, 0), min(boundary + band, height))
        region = inside[rows] & np.isin(labels[rows], (lower, upper))
        lower_d = np.linalg.norm(smooth[rows] - colours[lower], axis=2)
        if upper:
            upper_d = np.linalg.norm(smooth[rows] - colours[upper], axis=2)
        else:  # the empty part: the colour of the rows just above the boundary
            above = slice(max(boundary - 3 * band, 0), max(boundary - band, 1))
            reference = np.median(smooth[above][inside[above]], axis=0) if inside[above].any() \
                else colours[lower] + 50
            upper_d = np.linalg.norm(smooth[rows] - reference, axis=2)
        pick = np.where(lower_d <= upper_d, lower, upper)
        labels[rows][region] = pick[region]
    labels = cv2.medianBlur(labels.astype(np.uint8), 5).astype(np.int32) * inside
    return np.stack([(labels == k + 1).astype(np.uint8) for k in range(len(instances))])


def _content(instances: list[_Layer], masks: np.ndarray, inside: np.ndarray) -> VesselContent:
    """The answer: instances with classes, semantic masks, fill levels."""
    keep = [k for k in range(len(instances)) if masks[k].any()]
    instances = [instances[k] for k in keep]
    masks = masks[keep]
    classes, probabilities = [], []
    semantic: dict[str, np.ndarray] = {}
    for layer, mask in zip(instances, masks, strict=True):
        names = (*KIND_CLASSES[layer.kind], "Filled")
        classes.append(names)
        probabilities.append((*(round(layer.confidence, 4) for _ in KIND_CLASSES[layer.kind]), 1.0))
        for name in names:
            semantic[name] = semantic.get(name, np.zeros(inside.shape, np.uint8)) | mask
    levels, filled = fill_levels(masks, inside)
    return VesselContent(
        instance_masks=masks,
        classes=tuple(classes),
        class_probabilities=tuple(probabilities),
        semantic_masks=semantic,
        fill_levels=levels,
        filled=filled,
    )
