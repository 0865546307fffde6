"""Generated 4-channel HPA-style cell fields with ground-truth cell and nucleus masks and label sets.

A field holds cells in HPA's channel order, red microtubules, green protein,
blue nuclei and yellow endoplasmic reticulum. The red, blue and yellow
reference channels look alike in every cell; the green protein channel is
drawn from each cell's label set (1 to 3 of the 19 classes, "Negative" alone),
so that the class is told by where the green signal sits relative to the
references: in the nucleus, on its rim, in nucleoli, on the microtubules, in
the ER network, at the plasma membrane, in mitochondria-like tubules, ...

Two styles exist. :data:`STANDARD` is what the shipped classifier is trained
on; :data:`SHIFTED` draws other cell shapes (elongated, irregular) and other
textures for several patterns (grainy nucleoplasm, punctate thick membrane,
networked mitochondria, ...), and serves only to measure how the classifier
copes with images it was not trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from services.classifier.classes import NEGATIVE, NUM_CLASSES

GENERATOR_VERSION = "1"
"""Changes whenever a seed would draw a different field."""

RED, GREEN, BLUE, YELLOW = range(4)

NUCLEAR_CLASSES = frozenset(range(6))
"""Nucleoplasm .. nuclear bodies: absent from a mitotic cell, whose nuclear envelope is gone."""

MITOTIC_SPINDLE = 11

DEFAULT_RADIUS = (24.0, 36.0)
"""Range of the cells' mean radius in pixels."""

_LABEL_COUNT_WEIGHTS = np.array([0.5, 0.35, 0.15])
"""Probability of a cell having 1, 2 or 3 classes."""


@dataclass(frozen=True)
class GeneratorStyle:
    """How cells are shaped and how some patterns are textured.

    Attributes
    ----------
    name : str
        Name used in reports.
    aspect : tuple of float
        Range of the cell's long over short axis.
    wobble : float
        Largest amplitude of the boundary's harmonics, relative to the radius.
    harmonics : int
        Highest harmonic of the boundary (more: more irregular outlines).
    nucleus_offset : float
        Largest offset of the nucleus from the cell centre, relative to the radius.
    shifted_textures : bool
        Use the alternative synthesis of nucleoplasm, plasma membrane,
        mitochondria, cytosol and vesicles.
    """

    name: str
    aspect: tuple[float, float]
    wobble: float
    harmonics: int
    nucleus_offset: float
    shifted_textures: bool


STANDARD = GeneratorStyle(
    name="standard", aspect=(1.0, 1.6), wobble=0.08, harmonics=4, nucleus_offset=0.15,
    shifted_textures=False,
)
"""Roundish cells with smooth textures: the training distribution."""

SHIFTED = GeneratorStyle(
    name="shifted", aspect=(1.7, 2.8), wobble=0.16, harmonics=8, nucleus_offset=0.3,
    shifted_textures=True,
)
"""Elongated, irregular cells and other textures: an out-of-distribution test set."""


@dataclass(frozen=True)
class CellField:
    """One generated field.

    Attributes
    ----------
    image : ndarray of uint8, shape (H, W, 4)
        Red microtubules, green protein, blue nuclei, yellow ER.
    cell_labels, nucleus_labels : ndarray of int32, shape (H, W)
        Cell and nucleus masks; cell i's nucleus carries label i too; 0 is background.
    classes : ndarray of bool, shape (cells, 19)
        Row i is the label set of cell i + 1.
    """

    image: np.ndarray
    cell_labels: np.ndarray
    nucleus_labels: np.ndarray
    classes: np.ndarray


def sample_label_sets(rng: np.random.Generator, count: int) -> np.ndarray:
    """Label sets of ``count`` cells: 1 to 3 distinct classes each, "Negative" always alone.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    count : int
        Number of cells.

    Returns
    -------
    ndarray of bool, shape (count, 19)
        Every class is equally likely to be drawn first; a mitotic spindle
        takes no nuclear class with it (see :data:`NUCLEAR_CLASSES`).
    """
    sets = np.zeros((count, NUM_CLASSES), dtype=bool)
    for row in sets:
        first = int(rng.integers(NUM_CLASSES))
        row[first] = True
        if first == NEGATIVE:
            continue
        extra = int(rng.choice(3, p=_LABEL_COUNT_WEIGHTS))
        allowed = [c for c in range(NUM_CLASSES) if c not in (first, NEGATIVE)]
        if first == MITOTIC_SPINDLE:
            allowed = [c for c in allowed if c not in NUCLEAR_CLASSES]
        elif first in NUCLEAR_CLASSES:
            allowed.remove(MITOTIC_SPINDLE)
        for _ in range(extra):
            chosen = int(rng.choice(allowed))
            row[chosen] = True
            allowed.remove(chosen)
            if chosen == MITOTIC_SPINDLE:
                allowed = [c for c in allowed if c not in NUCLEAR_CLASSES]
            elif chosen in NUCLEAR_CLASSES and MITOTIC_SPINDLE in allowed:
                allowed.remove(MITOTIC_SPINDLE)
    return sets


def generate_cell_field(
    seed: int | np.random.Generator,
    *,
    size: int = 512,
    cells: int = 10,
    style: GeneratorStyle = STANDARD,
    radius: tuple[float, float] = DEFAULT_RADIUS,
    classes: np.ndarray | None = None,
) -> CellField:
    """Draw one field of cells.

    Parameters
    ----------
    seed : int or numpy.random.Generator
        The same seed always draws the same field (for one :data:`GENERATOR_VERSION`).
    size : int
        Side of the square field in pixels.
    cells : int
        Cells asked for; fewer are placed when they do not fit without
        overlapping much (at least one always is).
    style : GeneratorStyle
        :data:`STANDARD` or :data:`SHIFTED`.
    radius : tuple of float
        Range of the cells' mean radius in pixels.
    classes : ndarray of bool, shape (cells, 19), optional
        Label sets to draw instead of random ones (by :func:`sample_label_sets`);
        cell i + 1 gets row i. A cell with "Mitotic spindle" is drawn in
        metaphase, without its nucleus's patterns.

    Returns
    -------
    CellField

    Raises
    ------
    ValueError
        If ``size`` cannot hold one cell of the largest radius, ``cells`` < 1,
        or ``classes`` has not ``cells`` rows of 19 with at least one class each.

    Examples
    --------
    >>> field = generate_cell_field(0, size=256, cells=3)
    >>> field.image.shape, field.classes.shape[1]
    ((256, 256, 4), 19)
    """
    if cells < 1:
        raise ValueError(f"cells: expected at least 1, got {cells}")
    if classes is not None:
        classes = np.asarray(classes, bool)
        if classes.shape != (cells, NUM_CLASSES) or not classes.any(axis=1).all():
            raise ValueError(f"classes: expected ({cells}, {NUM_CLASSES}) label sets with a class each")
    reach = radius[1] * (1 + style.wobble) * np.sqrt(style.aspect[1])
    if size < 2 * reach + 4:
        raise ValueError(f"size: a {size}-pixel field cannot hold a cell of radius up to {radius[1]:g}")
    rng = np.random.default_rng(seed)
    planes = np.zeros((4, size, size), np.float32)
    cell_labels = np.zeros((size, size), np.int32)
    nucleus_labels = np.zeros((size, size), np.int32)
    centres = _place_cells(rng, size, cells, radius, reach)
    classes = sample_label_sets(rng, len(centres)) if classes is None else classes[: len(centres)]
    for index, (centre, cell_radius) in enumerate(centres):
        _draw_cell(
            rng, style, planes, cell_labels, nucleus_labels, index + 1, centre, cell_radius, classes[index]
        )
    image = _acquire(rng, planes)
    return CellField(image, cell_labels, nucleus_labels, classes)


def _place_cells(
    rng: np.random.Generator, size: int, cells: int, radius: tuple[float, float], reach: float
) -> list[tuple[np.ndarray, float]]:
    """Centres and radii of cells far enough apart that they touch but barely overlap."""
    placed: list[tuple[np.ndarray, float]] = []
    for _ in range(cells * 30):
        if len(placed) == cells:
            break
        cell_radius = float(rng.uniform(*radius))
        margin = reach * 0.8
        centre = rng.uniform(margin, size - margin, 2)
        spacing = 0.95 * reach / radius[1]
        if all(np.hypot(*(centre - other)) > spacing * (cell_radius + r) for other, r in placed):
            placed.append((centre, cell_radius))
    return placed


@dataclass
class _Cell:
    """One cell's geometry inside its window of the field."""

    rows: slice
    cols: slice
    inside: np.ndarray      # bool, the cell (clipped by earlier cells)
    nucleus: np.ndarray     # bool
    cytoplasm: np.ndarray   # bool
    depth: np.ndarray       # distance to the cell's outline, inside
    nucleus_depth: np.ndarray  # signed distance to the nucleus outline (> 0 inside)
    nucleus_centre: np.ndarray  # (y, x) in window coordinates
    nucleus_radius: float
    radius: float
    nucleoli: np.ndarray    # float in [0, 1]
    nucleoli_centres: np.ndarray
    centrosome: np.ndarray  # (y, x)
    mitotic: bool


def _star(
    yy: np.ndarray, xx: np.ndarray, centre: np.ndarray, radius: float, aspect: float,
    angle: float, amplitudes: np.ndarray, phases: np.ndarray,
) -> np.ndarray:
    """Radius relative to a wobbly ellipse's outline at each pixel (< 1 inside)."""
    dy, dx = yy - centre[0], xx - centre[1]
    u = (dx * np.cos(angle) + dy * np.sin(angle)) / np.sqrt(aspect)
    v = (-dx * np.sin(angle) + dy * np.cos(angle)) * np.sqrt(aspect)
    phi = np.arctan2(v, u)
    outline = np.ones_like(phi)
    for k, (amplitude, phase) in enumerate(zip(amplitudes, phases, strict=True), start=2):
        outline += amplitude * np.cos(k * phi + phase)
    return np.hypot(u, v) / (radius * outline)


def _outline_harmonics(
    rng: np.random.Generator, style: GeneratorStyle, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Amplitudes (falling with the order) and phases of the outline's harmonics 2..style.harmonics."""
    count = style.harmonics - 1
    amplitudes = rng.uniform(0, style.wobble * scale, count) / np.arange(1, count + 1) ** 0.5
    return amplitudes, rng.uniform(0, 2 * np.pi, count)


def _geometry(
    rng: np.random.Generator, style: GeneratorStyle, cell_labels: np.ndarray,
    centre: np.ndarray, radius: float, mitotic: bool,
) -> _Cell:
    size = cell_labels.shape[0]
    aspect = 1.0 if mitotic else float(rng.uniform(*style.aspect))
    reach = radius * (1 + 2 * style.wobble) * np.sqrt(style.aspect[1]) + 3
    top, left = (np.maximum(np.floor(centre - reach), 0)).astype(int)
    bottom, right = (np.minimum(np.ceil(centre + reach), size)).astype(int)
    rows, cols = slice(top, bottom), slice(left, right)
    yy, xx = np.mgrid[top:bottom, left:right].astype(np.float32)
    angle = float(rng.uniform(0, np.pi))
    amplitudes, phases = _outline_harmonics(rng, style, 0.4 if mitotic else 1.0)
    inside = _star(yy, xx, centre, radius, aspect, angle, amplitudes, phases) < 1
    inside &= cell_labels[rows, cols] == 0
    offset = rng.normal(0, style.nucleus_offset * radius / 2, 2) if not mitotic else np.zeros(2)
    offset = np.clip(offset, -style.nucleus_offset * radius, style.nucleus_offset * radius)
    nucleus_centre = centre + offset
    if mitotic:
        # Metaphase: the chromosomes line up in a narrow plate across the cell.
        nucleus_radius = radius * float(rng.uniform(0.3, 0.38))
        n_aspect = float(rng.uniform(6.0, 9.0))
        n_angle = float(rng.uniform(0, np.pi))
    else:
        nucleus_radius = radius * float(rng.uniform(0.4, 0.5))
        n_aspect = min(aspect, float(rng.uniform(1.0, 1.4)))
        n_angle = angle + float(rng.normal(0, 0.3))
    n_amplitudes, n_phases = _outline_harmonics(rng, style, 0.5)
    nucleus = (_star(yy, xx, nucleus_centre, nucleus_radius, n_aspect, n_angle, n_amplitudes, n_phases) < 1)
    nucleus &= ndimage.binary_erosion(inside, iterations=3)
    if not nucleus.any():
        nucleus = np.zeros_like(inside)
        local = np.round(nucleus_centre - (top, left)).astype(int)
        nucleus[max(local[0] - 1, 0):local[0] + 2, max(local[1] - 1, 0):local[1] + 2] = True
        nucleus &= inside
    cytoplasm = inside & ~nucleus
    depth = ndimage.distance_transform_edt(inside).astype(np.float32)
    nucleus_depth = (
        ndimage.distance_transform_edt(nucleus) - ndimage.distance_transform_edt(~nucleus)
    ).astype(np.float32)
    local_centre = nucleus_centre - (top, left)
    nucleoli, nucleoli_centres = _nucleoli(rng, nucleus, nucleus_depth, nucleus_radius, mitotic)
    centrosome = _centrosome_site(rng, nucleus_depth, cytoplasm, local_centre, nucleus_radius)
    return _Cell(rows, cols, inside, nucleus, cytoplasm, depth, nucleus_depth, local_centre,
                 nucleus_radius, radius, nucleoli, nucleoli_centres, centrosome, mitotic)


def _nucleoli(
    rng: np.random.Generator, nucleus: np.ndarray, depth: np.ndarray, radius: float, mitotic: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Soft nucleoli masks and their centres, well inside the nucleus."""
    field = np.zeros(nucleus.shape, np.float32)
    deep = np.argwhere(depth > radius * 0.4)
    if mitotic or len(deep) == 0:
        return field, np.zeros((0, 2))
    centres = deep[rng.integers(len(deep), size=int(rng.integers(1, 4)))].astype(np.float32)
    yy, xx = np.indices(nucleus.shape, dtype=np.float32)
    for cy, cx in centres:
        r = radius * float(rng.uniform(0.22, 0.32))
        field = np.maximum(field, np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / r**2) ** 2))
    return field * nucleus, centres


def _centrosome_site(
    rng: np.random.Generator, nucleus_depth: np.ndarray, cytoplasm: np.ndarray,
    centre: np.ndarray, radius: float,
) -> np.ndarray:
    """A cytoplasm pixel just outside the nucleus: the microtubule organising centre."""
    near = np.argwhere(cytoplasm & (nucleus_depth < -2) & (nucleus_depth > -max(5.0, radius * 0.35)))
    if len(near) == 0:
        near = np.argwhere(cytoplasm) if cytoplasm.any() else np.array([np.round(centre)])
    return near[rng.integers(len(near))].astype(np.float32)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise scaled to [0, 1]."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    low, high = noise.min(), noise.max()
    return (noise - low) / (high - low + 1e-6)


def _dots(
    shape: tuple[int, int], points: np.ndarray, sigma: float, weights: np.ndarray | None = None
) -> np.ndarray:
    """Gaussian dots of peak 1.6 × ``weights`` (default 1) at ``points`` (y, x).

    Callers clip at 1, so dots are flat-topped and survive the optical blur.
    """
    image = np.zeros(shape, np.float32)
    if len(points) == 0:
        return image
    index = np.round(points).astype(int)
    keep = (index[:, 0] >= 0) & (index[:, 1] >= 0) & (index[:, 0] < shape[0]) & (index[:, 1] < shape[1])
    values = np.ones(len(points), np.float32) if weights is None else weights.astype(np.float32)
    np.add.at(image, (index[keep, 0], index[keep, 1]), values[keep])
    return ndimage.gaussian_filter(image, sigma) * (1.6 * 2 * np.pi * sigma**2)


def _paths(
    rng: np.random.Generator, starts: np.ndarray, headings: np.ndarray, steps: int, turn: float
) -> np.ndarray:
    """Points (P * steps, 2) of persistent random walks of unit step from ``starts``."""
    turns = rng.normal(0, turn, (len(starts), steps)).cumsum(axis=1) + headings[:, None]
    moves = np.stack([np.sin(turns), np.cos(turns)], axis=-1)
    return (starts[:, None, :] + moves.cumsum(axis=1)).reshape(-1, 2)


def _lines(shape: tuple[int, int], points: np.ndarray, within: np.ndarray, sigma: float) -> np.ndarray:
    """Thin filaments through ``points``, kept where ``within``, normalised to peak about 1."""
    index = np.round(points).astype(int)
    keep = (index[:, 0] >= 0) & (index[:, 1] >= 0) & (index[:, 0] < shape[0]) & (index[:, 1] < shape[1])
    index = index[keep]
    index = index[within[index[:, 0], index[:, 1]]]
    image = np.zeros(shape, np.float32)
    np.add.at(image, (index[:, 0], index[:, 1]), 1.0)
    image = ndimage.gaussian_filter(np.minimum(image, 2.0), sigma)
    return image / (image.max() + 1e-6)


def _microtubules(rng: np.random.Generator, cell: _Cell) -> np.ndarray:
    """Filaments from the centrosome to the cell edge, or a bipolar spindle in a mitotic cell."""
    shape = cell.inside.shape
    if cell.mitotic:
        return _spindle(rng, cell)
    count = int(rng.integers(40, 70))
    headings = rng.uniform(0, 2 * np.pi, count)
    starts = np.repeat(cell.centrosome[None], count, axis=0)
    steps = int(cell.radius * 2.5)
    points = _paths(rng, starts, headings, steps, 0.03)
    return _lines(shape, points, cell.inside, 0.6)


def _spindle(rng: np.random.Generator, cell: _Cell) -> np.ndarray:
    """Two poles either side of the metaphase plate, fibres fanning from each to the plate."""
    plate = np.argwhere(cell.nucleus).astype(np.float32)
    axis = _principal_axis(plate)
    normal = np.array([-axis[1], axis[0]])
    distance = cell.radius * float(rng.uniform(0.45, 0.6))
    points = []
    for sign in (-1, 1):
        pole = cell.nucleus_centre + sign * distance * normal
        targets = plate[rng.integers(len(plate), size=30)]
        t = np.linspace(0, 1, int(distance * 1.5))[None, :, None]
        points.append((pole[None, None, :] * (1 - t) + targets[:, None, :] * t).reshape(-1, 2))
    return _lines(cell.inside.shape, np.concatenate(points), cell.inside, 0.7)


def _principal_axis(points: np.ndarray) -> np.ndarray:
    if len(points) < 2:
        return np.array([0.0, 1.0])
    _, vectors = np.linalg.eigh(np.cov((points - points.mean(axis=0)).T))
    return vectors[:, -1]


def _er_network(rng: np.random.Generator, cell: _Cell) -> np.ndarray:
    """A reticular network (ridges of band-passed noise), denser near the nucleus, with the envelope."""
    shape = cell.inside.shape
    noise = rng.standard_normal(shape).astype(np.float32)
    band = ndimage.gaussian_filter(noise, 1.6) - ndimage.gaussian_filter(noise, 3.2)
    ridges = np.exp(-((band / (band.std() * 0.35 + 1e-6)) ** 2))
    density = 0.35 + 0.65 * np.exp(np.minimum(cell.nucleus_depth, 0) / (cell.radius * 0.45))
    envelope = np.exp(-(cell.nucleus_depth**2) / 2.0)
    return np.clip((ridges * density * cell.cytoplasm + 0.6 * envelope) * cell.inside, 0, 1)


def _rim(depth: np.ndarray, width: float) -> np.ndarray:
    """A band of ``width`` pixels along an outline, from its (signed) distance map."""
    return np.exp(-((depth - 1.0) ** 2) / (2 * width**2)).astype(np.float32)


def _in(mask: np.ndarray, rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` random pixels (y, x) of ``mask`` (none when it is empty)."""
    candidates = np.argwhere(mask)
    if len(candidates) == 0:
        return np.zeros((0, 2))
    chosen = candidates[rng.integers(len(candidates), size=count)].astype(np.float32)
    return chosen + rng.uniform(-0.5, 0.5, (count, 2))


def _pattern(
    rng: np.random.Generator, style: GeneratorStyle, cell: _Cell, index: int, red: np.ndarray, er: np.ndarray
) -> np.ndarray:
    """The green protein signal of one class in one cell, peaking near 1."""
    shape = cell.inside.shape
    shifted = style.shifted_textures
    nucleoplasm = cell.nucleus & (cell.nucleoli < 0.5)
    if index == 0:  # nucleoplasm, sparing the nucleoli
        if shifted:
            texture = 0.3 + 0.7 * _smooth_noise(rng, shape, 0.7) ** 2
        else:
            texture = 0.75 + 0.25 * _smooth_noise(rng, shape, 3.0)
        return texture * cell.nucleus * (1 - 0.85 * cell.nucleoli)
    if index == 1:  # nuclear membrane: the nucleus's rim
        return _rim(np.abs(cell.nucleus_depth) + 1, 1.2) * cell.inside
    if index == 2:  # nucleoli
        return ndimage.gaussian_filter(cell.nucleoli, 0.6)
    if index == 3:  # fibrillar centres: tiny dots inside the nucleoli
        spread = cell.nucleus_radius * 0.1
        points = [c + rng.normal(0, spread, (int(rng.integers(3, 7)), 2)) for c in cell.nucleoli_centres]
        return np.clip(_dots(shape, np.concatenate(points) if points else np.zeros((0, 2)), 0.7), 0, 1)
    if index == 4:  # nuclear speckles: many irregular spots over a faint nucleoplasm
        spots = _dots(shape, _in(nucleoplasm, rng, int(rng.integers(14, 26))), 1.9)
        return np.clip(spots * (0.6 + 0.4 * _smooth_noise(rng, shape, 1.0)) + 0.12 * nucleoplasm, 0, 1)
    if index == 5:  # nuclear bodies: a few small bright dots in the nucleoplasm
        return np.clip(_dots(shape, _in(nucleoplasm, rng, int(rng.integers(3, 8))), 1.0), 0, 1)
    if index == 6:  # endoplasmic reticulum: the yellow reference's network
        return er
    if index == 7:  # Golgi: a ribbon of small blobs on one side of the nucleus
        direction = float(rng.uniform(0, 2 * np.pi))
        angles = direction + rng.normal(0, 0.35, int(rng.integers(6, 12)))
        distance = cell.nucleus_radius * rng.uniform(1.05, 1.35, len(angles))
        points = cell.nucleus_centre + distance[:, None] * np.stack([np.sin(angles), np.cos(angles)], axis=1)
        return np.clip(_dots(shape, points, 1.6) * cell.cytoplasm, 0, 1)
    if index == 8:  # intermediate filaments: wavy filaments winding around the nucleus
        count = int(rng.integers(14, 24))
        radii = cell.nucleus_radius + rng.uniform(1.5, cell.radius - cell.nucleus_radius, count)
        start_angles = rng.uniform(0, 2 * np.pi, count)
        span = np.linspace(0, 1, 120)[None, :] * rng.uniform(1.5, 4.0, count)[:, None]
        angles = start_angles[:, None] + span
        wave = 2.5 * np.sin(span * rng.uniform(3, 6, count)[:, None])
        r = radii[:, None] + wave
        points = cell.nucleus_centre + np.stack([r * np.sin(angles), r * np.cos(angles)], -1).reshape(-1, 2)
        return _lines(shape, points, cell.cytoplasm, 0.6)
    if index == 9:  # actin: parallel stress fibres across the cell and a cortical rim
        angle = float(rng.uniform(0, np.pi))
        count = int(rng.integers(8, 15))
        offsets = rng.uniform(-cell.radius, cell.radius, count)
        headings = angle + rng.normal(0, 0.05, count)
        normal = np.array([np.cos(angle), -np.sin(angle)])
        backwards = 1.5 * cell.radius * np.stack([np.sin(headings), np.cos(headings)], axis=1)
        starts = cell.nucleus_centre + offsets[:, None] * normal - backwards
        fibres = _lines(shape, _paths(rng, starts, headings, int(cell.radius * 3), 0.0), cell.inside, 0.6)
        return np.clip(fibres + 0.5 * _rim(cell.depth, 1.0) * cell.inside, 0, 1)
    if index == 10:  # microtubules: the red reference's filaments
        return red * ~cell.nucleus + 0.3 * red * cell.nucleus
    if index == 11:  # mitotic spindle
        return _spindle(rng, cell) if cell.mitotic else np.zeros(shape, np.float32)
    if index == 12:  # centrosome: a pair of dots at the microtubules' focus beside the nucleus
        direction = float(rng.uniform(0, np.pi))
        apart = float(rng.uniform(1.0, 1.8)) * np.array([np.sin(direction), np.cos(direction)])
        return np.clip(_dots(shape, np.stack([cell.centrosome - apart, cell.centrosome + apart]), 1.2), 0, 1)
    if index == 13:  # plasma membrane: the cell's rim
        if shifted:
            beads = 0.35 + 0.65 * (_smooth_noise(rng, shape, 1.2) > 0.5)
            return _rim(cell.depth, 2.2) * cell.inside * beads
        return _rim(cell.depth, 1.1) * cell.inside
    if index == 14:  # mitochondria
        if shifted:
            noise = rng.standard_normal(shape).astype(np.float32)
            band = ndimage.gaussian_filter(noise, 1.2) - ndimage.gaussian_filter(noise, 4.0)
            tubes = np.exp(-((band / (band.std() * 0.25 + 1e-6)) ** 2)) * (band > -band.std())
            return ndimage.gaussian_filter(tubes * cell.cytoplasm, 0.5) * 1.2
        count = int(rng.integers(70, 120))
        weights = np.exp(np.minimum(cell.nucleus_depth, 0) / (cell.radius * 0.5)) * cell.cytoplasm
        starts = _in(weights > rng.uniform(0, 1, shape), rng, count)
        points = _paths(rng, starts, rng.uniform(0, 2 * np.pi, len(starts)), int(rng.integers(6, 12)), 0.25)
        return _lines(shape, points, cell.cytoplasm, 0.8)
    if index == 15:  # aggresome: one large bright body beside the nucleus
        direction = float(rng.uniform(0, 2 * np.pi))
        body_radius = cell.nucleus_radius * float(rng.uniform(0.5, 0.7))
        heading = np.array([np.sin(direction), np.cos(direction)])
        point = cell.nucleus_centre + (cell.nucleus_radius + body_radius) * heading
        yy, xx = np.indices(shape, dtype=np.float32)
        body = np.exp(-(((yy - point[0]) ** 2 + (xx - point[1]) ** 2) / body_radius**2) ** 2)
        return body * cell.inside
    if index == 16:  # cytosol
        if shifted:
            gradient = np.clip(1 + cell.nucleus_depth / cell.radius, 0.3, 1)
            return (0.5 + 0.5 * _smooth_noise(rng, shape, 1.0)) * gradient * cell.cytoplasm
        return (0.75 + 0.25 * _smooth_noise(rng, shape, 4.0)) * cell.cytoplasm
    if index == 17:  # vesicles: many small dots over the cytoplasm
        if shifted:
            return np.clip(_dots(shape, _in(cell.cytoplasm, rng, int(rng.integers(12, 25))), 2.0), 0, 1)
        count = int(rng.integers(30, 70))
        return np.clip(_dots(shape, _in(cell.cytoplasm, rng, count), 1.0, rng.uniform(0.5, 1.0, count)), 0, 1)
    # negative: a faint haze only
    return np.zeros(shape, np.float32)


_DIFFUSE = frozenset({0, 6, 16})
"""Classes spread over a whole compartment: drawn dimmer so that patterns on top stay visible."""


def _draw_cell(
    rng: np.random.Generator, style: GeneratorStyle, planes: np.ndarray, cell_labels: np.ndarray,
    nucleus_labels: np.ndarray, label: int, centre: np.ndarray, radius: float, classes: np.ndarray,
) -> None:
    mitotic = bool(classes[MITOTIC_SPINDLE]) or (
        not classes[list(NUCLEAR_CLASSES)].any() and rng.uniform() < 0.08
    )
    cell = _geometry(rng, style, cell_labels, centre, radius, mitotic)
    window = (slice(None), cell.rows, cell.cols)
    cell_labels[cell.rows, cell.cols][cell.inside] = label
    nucleus_labels[cell.rows, cell.cols][cell.nucleus] = label
    red = _microtubules(rng, cell)
    er = _er_network(rng, cell)
    if cell.mitotic:
        chromatin = 0.8 + 0.2 * _smooth_noise(rng, cell.inside.shape, 1.0)
    else:
        chromatin = (0.55 + 0.45 * _smooth_noise(rng, cell.inside.shape, 2.0)) * (1 - 0.6 * cell.nucleoli)
    blue = chromatin * cell.nucleus
    haze = float(rng.uniform(0.03, 0.08))
    green = np.zeros(cell.inside.shape, np.float32)
    for index in np.flatnonzero(classes):
        diffuse = index in _DIFFUSE and classes.sum() > 1
        strength = rng.uniform(0.3, 0.55) if diffuse else rng.uniform(0.65, 1.0)
        green += strength * _pattern(rng, style, cell, int(index), red, er)
    green = green * float(rng.uniform(0.6, 1.0)) + haze * cell.inside
    local = planes[window]
    local[RED] += (0.15 * cell.inside + 0.85 * red) * float(rng.uniform(0.5, 1.0)) * cell.inside
    local[GREEN] += green * cell.inside
    local[BLUE] += blue * float(rng.uniform(0.6, 1.0))
    local[YELLOW] += (0.1 * cell.inside + 0.9 * er) * float(rng.uniform(0.5, 1.0)) * cell.inside


def _acquire(rng: np.random.Generator, planes: np.ndarray) -> np.ndarray:
    """The microscope: optical blur, background, per-channel gain, shot and read noise, 8 bits."""
    blurred = ndimage.gaussian_filter(planes, (0, *(2 * [float(rng.uniform(0.5, 1.1))])))
    gain = rng.uniform(0.6, 1.0, 4)[:, None, None].astype(np.float32)
    background = rng.uniform(0.01, 0.05, 4)[:, None, None].astype(np.float32)
    signal = np.clip(blurred * gain + background, 0, None)
    read = float(rng.uniform(0.005, 0.025))
    shot = float(rng.uniform(0.005, 0.02))
    noisy = signal + rng.standard_normal(signal.shape, dtype=np.float32) * np.sqrt(read**2 + shot * signal)
    return np.clip(np.rint(noisy * 255), 0, 255).astype(np.uint8).transpose(1, 2, 0).copy()
