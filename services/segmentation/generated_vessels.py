"""Photos of glass vessels with known contents, for tests, measurements and training.

Each photo shows one transparent vessel (a tube or a beaker, upright or tilted
up to ±10°) in front of a cluttered background, filled with horizontal phases
from the bottom up: a powder bed, one or two liquids (e.g. serum over blood
cells), a foam on the top liquid, then the empty part through which the
background shows. Liquid surfaces stay horizontal in a tilted vessel and climb
the wall in a meniscus; a glare streak runs along the vessel. The ground truth
is the vessel mask, one mask per phase, its LabPics classes, and the fill level
of each phase (:func:`labsight.vessel_fill.fill_levels`). Everything follows
from the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from labsight.vessel_fill import fill_levels

__all__ = ["GeneratedVessel", "generate_vessel", "generate_vessels"]

PHASE_CLASSES = {
    "powder": ("Powder", "Solid", "Filled"),
    "liquid": ("Liquid", "Filled"),
    "foam": ("Foam", "Filled"),
}
"""LabPics classes of each kind of phase the generator draws."""

_SCENARIOS = (
    ("liquid", "foam"),
    ("liquid", "liquid"),
    ("powder",),
    ("powder", "liquid"),
    ("liquid",),
    ("liquid", "liquid", "foam"),
)
"""Phases from the bottom up (the empty part above them)."""


@dataclass(frozen=True)
class GeneratedVessel:
    """A generated photo and its ground truth.

    Attributes
    ----------
    photo : numpy.ndarray
        (H, W, 3) uint8 RGB.
    vessel_mask : numpy.ndarray
        (H, W) uint8, 1 inside the vessel (walls included).
    instance_masks : numpy.ndarray
        (K, H, W) uint8, one mask per phase, bottom phase first.
    kinds : tuple of str
        "powder", "liquid" or "foam" per phase.
    classes : tuple of tuple of str
        LabPics classes of each phase.
    fill_levels : numpy.ndarray
        (K,) share of the vessel's height each phase fills.
    filled : float
        Share of the vessel's height the phases fill together.
    """

    photo: np.ndarray
    vessel_mask: np.ndarray
    instance_masks: np.ndarray
    kinds: tuple[str, ...]
    classes: tuple[tuple[str, ...], ...]
    fill_levels: np.ndarray
    filled: float


def generate_vessels(count: int, seed: int) -> list[GeneratedVessel]:
    """``count`` vessels from one seed (the same seed, the same vessels)."""
    rng = np.random.default_rng(seed)
    return [generate_vessel(rng) for _ in range(count)]


def generate_vessel(rng: np.random.Generator) -> GeneratedVessel:
    """One vessel photo with its ground truth, drawn with ``rng``.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of every random choice.
    """
    height, width = int(rng.integers(200, 281)), int(rng.integers(170, 241))
    background = _clutter(rng, height, width)
    vessel = _vessel_mask(rng, height, width)
    rows = np.flatnonzero(vessel.any(axis=1))
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    span = bottom - top
    kinds = _SCENARIOS[int(rng.integers(len(_SCENARIOS)))]
    fractions = rng.uniform(0.14, 0.3, len(kinds))
    if rng.random() < 0.15:  # now and then nearly full
        fractions *= 0.85 / fractions.sum()
    wall_distance = cv2.distanceTransform(vessel, cv2.DIST_L2, 3)

    photo = background * (1 - 0.15) + 0.15 * np.array([225, 232, 238], np.float32)  # through glass
    photo = cv2.GaussianBlur(photo, (3, 3), 0)
    masks = []
    level = float(bottom)
    below = np.zeros((height, width), bool)
    ys = np.arange(height, dtype=np.float32)[:, None]
    for kind, fraction in zip(kinds, fractions, strict=True):
        surface = level - fraction * span
        if kind == "liquid":  # the meniscus climbs the wall
            depth = rng.uniform(2, 5)
            surface_map = surface - depth * np.exp(-wall_distance / rng.uniform(3, 6))
        else:
            surface_map = np.full((height, width), surface, np.float32)
        phase = (ys >= surface_map) & (vessel > 0) & ~below
        _paint(rng, photo, phase, kind, background)
        masks.append(phase.astype(np.uint8))
        below |= phase
        level = surface
    _walls_and_glare(rng, photo, vessel, wall_distance)
    photo += rng.normal(0, 2.5, photo.shape).astype(np.float32)
    instance_masks = np.stack(masks)
    levels, filled = fill_levels(instance_masks, vessel)
    return GeneratedVessel(
        photo=np.clip(photo, 0, 255).astype(np.uint8),
        vessel_mask=vessel,
        instance_masks=instance_masks,
        kinds=kinds,
        classes=tuple(PHASE_CLASSES[kind] for kind in kinds),
        fill_levels=levels,
        filled=filled,
    )


def _clutter(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A lab bench: a shaded wall with boxes, bottles, cables and labels in front of it."""
    base = rng.uniform(60, 200, 3).astype(np.float32)
    gradient = np.linspace(-25, 25, height, dtype=np.float32)[:, None, None]
    image = np.broadcast_to(base, (height, width, 3)) + gradient
    image = np.ascontiguousarray(image, np.float32)
    for _ in range(int(rng.integers(6, 14))):
        colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        shape = rng.integers(3)
        if shape == 0:
            x1, y1 = x0 + int(rng.integers(10, 80)), y0 + int(rng.integers(10, 120))
            cv2.rectangle(image, (x0, y0), (x1, y1), colour, -1)
        elif shape == 1:
            cv2.circle(image, (x0, y0), int(rng.integers(5, 40)), colour, -1)
        else:
            x1, y1 = int(rng.integers(0, width)), int(rng.integers(0, height))
            cv2.line(image, (x0, y0), (x1, y1), colour, int(rng.integers(1, 5)))
    return image + rng.normal(0, 4, image.shape).astype(np.float32)


def _vessel_mask(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A tube (round bottom) or a beaker (flat bottom), tilted up to ±10°, near the centre."""
    vessel_w = rng.uniform(0.3, 0.5) * width
    vessel_h = rng.uniform(0.6, 0.8) * height
    half = vessel_w / 2
    if rng.random() < 0.5:  # tube: straight sides, a half-circle bottom
        angles = np.linspace(0, np.pi, 40)
        bottom = np.stack([half * np.cos(angles), vessel_h / 2 - half + half * np.sin(angles)], 1)
    else:  # beaker: rounded corners
        radius = 0.2 * half
        corner = np.linspace(0, np.pi / 2, 10)
        right = np.stack([half - radius + radius * np.cos(corner),
                          vessel_h / 2 - radius + radius * np.sin(corner)], 1)
        left = np.stack([-(half - radius) - radius * np.cos(corner[::-1]),
                         vessel_h / 2 - radius + radius * np.sin(corner[::-1])], 1)
        bottom = np.concatenate([right, left])
    outline = np.concatenate([[[half, -vessel_h / 2]], bottom, [[-half, -vessel_h / 2]]])
    angle = np.deg2rad(rng.uniform(-10, 10))
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre = np.array([width / 2 + rng.uniform(-0.08, 0.08) * width,
                       height / 2 + rng.uniform(-0.05, 0.05) * height])
    points = outline @ rotation.T + centre
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [np.round(points * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
    return mask


def _paint(rng: np.random.Generator, photo: np.ndarray, phase: np.ndarray, kind: str,
           background: np.ndarray) -> None:
    """Colour and texture of one phase, painted into ``photo`` where ``phase`` is set."""
    height, width = phase.shape
    if kind == "liquid":
        hue = rng.uniform(0, 180)
        colour = cv2.cvtColor(np.uint8([[[hue, rng.uniform(120, 255), rng.uniform(60, 230)]]]),
                              cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)
        shade = np.linspace(8, -8, height, dtype=np.float32)[:, None, None]
        clarity = rng.uniform(0.0, 0.15)  # a little of the background shows through
        layer = (1 - clarity) * (colour + shade) + clarity * background
    elif kind == "foam":
        layer = np.full((height, width, 3), rng.uniform(215, 245), np.float32)
        layer += rng.uniform(-8, 8, 3).astype(np.float32)
        for _ in range(int(phase.sum() / 30)):
            y, x = np.unravel_index(rng.integers(phase.size), phase.shape)
            cv2.circle(layer, (int(x), int(y)), int(rng.integers(2, 5)),
                       (170.0, 170.0, 175.0), 1)
    else:  # powder: a grainy bed
        colour = rng.uniform(90, 240, 3).astype(np.float32)
        grains = rng.normal(0, 22, (height, width, 1)).astype(np.float32)
        layer = colour + cv2.GaussianBlur(grains, (3, 3), 0)[..., None] * 1.6
    photo[phase] = layer[phase]


def _walls_and_glare(rng: np.random.Generator, photo: np.ndarray, vessel: np.ndarray,
                     wall_distance: np.ndarray) -> None:
    """Bright glass walls and a glare streak along the vessel's axis."""
    wall = (vessel > 0) & (wall_distance <= 2)
    photo[wall] = 0.6 * photo[wall] + 0.4 * 235
    ys, xs = np.nonzero(vessel)
    # the streak follows the vessel's axis: a line through the mask fitted by its moments
    centre_x, centre_y = xs.mean(), ys.mean()
    slope = np.polyfit(ys - centre_y, xs - centre_x, 1)[0]
    half_width = (xs.max() - xs.min()) / 2
    offset = rng.uniform(-0.6, 0.6) * half_width
    grid_y, grid_x = np.mgrid[0:vessel.shape[0], 0:vessel.shape[1]]
    along = grid_x - (centre_x + offset + slope * (grid_y - centre_y))
    streak = np.exp(-(along / rng.uniform(1.5, 3.5)) ** 2) * rng.uniform(50, 110)
    photo += (streak * (vessel > 0))[..., None].astype(np.float32)
