"""Instance segmentation by following predicted flows, the learned method of the segmentation service.

A Cellpose-style network (``services/segmentation/models/flow_net.py``) predicts, at every
pixel, the direction towards the centre of the object the pixel belongs to and a cell
probability. This module holds everything around the network, numpy in / numpy out:

- pre-processing: percentile normalisation, the [cytoplasm, nucleus] channel pair, rescaling
  so that objects have the diameter the network was trained at (from the pixel size and an
  expected diameter in µm);
- tiled inference of any image size with overlapping, tapered tiles;
- post-processing: Euler integration of every foreground pixel along the flow field,
  clustering of the end points into masks, removal of masks whose flows disagree with the
  flows of the mask itself, holes filled, small masks removed by an area in µm²;
- :func:`segment_nuclei_flows` and :func:`segment_cells_flows`, the method ``"flows"`` of
  ``services.segmentation.cells``.

The network runs through a ``predict`` callable ((N, 2, T, T) float32 → (N, 3, T, T) float32);
by default the packaged ONNX Runtime engine of :mod:`services.segmentation.models.serving`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numba import njit
from scipy import ndimage
from skimage.transform import resize

from labsight.errors import InvalidArgument

Predict = Callable[[np.ndarray], np.ndarray]
"""The network: a batch (N, 2, T, T) of normalised images → (N, 3, T, T) [dY, dX, cell logit]."""

MODEL_DIAMETER_PX = 30.0
"""Equivalent-circle diameter (pixels) of the objects the networks were trained at."""

NUCLEUS_TARGET_PX = 20.0
"""Diameter (pixels) nuclei are zoomed to for ``scellseg-flow``: on mnfinder's training images
it scored best at 20 px (AP@0.5 pooled over 7 images: 0.86 at 30 px, 0.90 at 24 px, see the
model card), below the 30 px of the cytoplasm images the network was mostly trained on."""

NUCLEUS_DIAMETER_UM = 12.0
"""Expected nucleus diameter of human cultured cells (µm), refined from the image when far off."""

CELL_DIAMETER_UM = 30.0
"""Expected diameter of a cultured cell (µm), refined from the image when far off."""

REFINE_TOLERANCE = 0.25
"""Relative difference between measured and expected diameter that triggers a second pass."""

SEARCH_FACTORS = (0.6, 1.7)
"""Multiples of the expected diameter tried, in order, when a first pass finds no object: objects
much smaller than expected vanish at the zoom the expectation gives (8 µm nuclei expected at 12 µm
come out at 14 px, below what the network sees), much larger ones split or fade."""

FULL_SIZE_DYNAMICS_MIN_SCALE = 0.5
"""Smallest zoom at which the flow dynamics run at the input's size (see :func:`segment_planes`)."""

FLOW_SCALE = 5.0
"""The networks predict 5× the unit flow vectors."""

TILE = 224
"""Side of the square tiles the network sees (as Cellpose)."""


def normalize_percentiles(image: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Scale an image so that its ``low`` percentile maps to 0 and its ``high`` percentile to 1.

    Parameters
    ----------
    image : np.ndarray
        Any real array (8- or 16-bit, float).
    low, high : float, optional
        Percentiles mapped to 0 and 1.

    Returns
    -------
    np.ndarray
        float32, same shape; all zeros when the two percentiles are equal (a flat image).
    """
    values = np.asarray(image, dtype=np.float32)
    lower, upper = np.percentile(values, [low, high])
    if upper <= lower:
        return np.zeros_like(values)
    return (values - lower) / np.float32(upper - lower)


def network_input(cytoplasm: np.ndarray | None, nucleus: np.ndarray | None) -> np.ndarray:
    """The (2, H, W) float32 input of the network in Cellpose's channel convention.

    Parameters
    ----------
    cytoplasm : np.ndarray or None
        (H, W) image of the whole cells; None to segment the nucleus image alone.
    nucleus : np.ndarray or None
        (H, W) nucleus image; None when there is none.

    Returns
    -------
    np.ndarray
        Channel 0 is the channel to segment, channel 1 the nucleus channel (zeros when
        absent); each channel normalised by :func:`normalize_percentiles`. For nuclei alone
        the nucleus image is channel 0 and channel 1 is zero.
    """
    planes = [plane for plane in (cytoplasm, nucleus) if plane is not None]
    if not planes:
        raise ValueError("network_input: give at least one channel")
    first = normalize_percentiles(planes[0])
    second = normalize_percentiles(planes[1]) if len(planes) == 2 else np.zeros_like(first)
    return np.stack([first, second])


def rescale_factor(pixel_size_um: float, diameter_um: float) -> float:
    """Zoom that gives objects of ``diameter_um`` the diameter the network was trained at.

    Parameters
    ----------
    pixel_size_um : float
        Side of a pixel in µm.
    diameter_um : float
        Expected equivalent-circle diameter of the objects in µm (median, not maximum).

    Returns
    -------
    float
        ``MODEL_DIAMETER_PX / (diameter_um / pixel_size_um)``.
    """
    return MODEL_DIAMETER_PX * pixel_size_um / diameter_um


def resize_planes(planes: np.ndarray, shape: tuple[int, int], order: int = 1) -> np.ndarray:
    """Resize (C, H, W) planes to (C, *shape) with spline interpolation of ``order`` (0 keeps labels)."""
    if planes.shape[-2:] == tuple(shape):
        return planes
    return resize(planes, (planes.shape[0], *shape), order=order, preserve_range=True,
                  anti_aliasing=False, mode="edge").astype(planes.dtype, copy=False)


def taper_weights(size: int, ramp: float = 7.5, margin: int = 20) -> np.ndarray:
    """(size, size) blending weights of a tile: ~1 inside, falling smoothly to ~0 at the edges.

    The weight along each axis is a logistic function of the distance from the tile centre,
    half-way down ``margin`` pixels from the edge; a pixel's output is the weighted mean of
    the tiles covering it, so tile seams carry little weight.
    """
    distance = np.abs(np.arange(size, dtype=np.float64) - (size - 1) / 2.0)
    profile = 1.0 / (1.0 + np.exp((distance - (size / 2.0 - margin)) / ramp))
    return np.outer(profile, profile).astype(np.float32)


def tile_origins(length: int, tile: int, overlap: float) -> np.ndarray:
    """Start offsets of tiles of ``tile`` pixels covering ``length`` with at least ``overlap`` overlap."""
    if length <= tile:
        return np.zeros(1, dtype=np.int64)
    count = int(np.ceil((1.0 + 2.0 * overlap) * length / tile))
    return np.linspace(0, length - tile, max(count, 2)).astype(np.int64)


def predict_tiled(image: np.ndarray, predict: Predict, *, tile: int = TILE, overlap: float = 0.1,
                  batch_size: int = 8) -> np.ndarray:
    """Run the network over an image of any size in overlapping, tapered tiles.

    Parameters
    ----------
    image : np.ndarray
        (2, H, W) float32 network input (:func:`network_input`).
    predict : callable
        (N, 2, tile, tile) → (N, 3, tile, tile).
    tile : int, optional
        Tile side, a multiple of 8. Images smaller than a tile are zero-padded to one tile.
    overlap : float, optional
        Fraction of a tile shared by neighbouring tiles (at least).
    batch_size : int, optional
        Tiles per call of ``predict``.

    Returns
    -------
    np.ndarray
        (3, H, W) float32: dY, dX and the cell-probability logit.
    """
    if tile % 8:
        raise ValueError(f"tile: {tile} is not a multiple of 8")
    _, height, width = image.shape
    padded = np.pad(image, ((0, 0), (0, max(0, tile - height)), (0, max(0, tile - width))))
    rows, cols = padded.shape[1:]
    origins = [(y, x) for y in tile_origins(rows, tile, overlap) for x in tile_origins(cols, tile, overlap)]
    weights = taper_weights(tile)
    total = np.zeros((3, rows, cols), dtype=np.float32)
    weight_sum = np.zeros((rows, cols), dtype=np.float32)
    for start in range(0, len(origins), batch_size):
        chunk = origins[start:start + batch_size]
        batch = np.stack([padded[:, y:y + tile, x:x + tile] for y, x in chunk])
        outputs = np.asarray(predict(np.ascontiguousarray(batch, dtype=np.float32)), dtype=np.float32)
        for (y, x), output in zip(chunk, outputs, strict=True):
            total[:, y:y + tile, x:x + tile] += output * weights
            weight_sum[y:y + tile, x:x + tile] += weights
    return (total / weight_sum)[:, :height, :width]


@njit(cache=True, nogil=True)
def _integrate(flows: np.ndarray, points: np.ndarray, steps: int) -> np.ndarray:  # pragma: no cover
    """Move each (y, x) point ``steps`` times by the bilinearly interpolated flow at it."""
    rows, cols = flows.shape[1], flows.shape[2]
    for index in range(points.shape[1]):
        y = points[0, index]
        x = points[1, index]
        for _ in range(steps):
            y0 = min(max(int(y), 0), rows - 1)
            x0 = min(max(int(x), 0), cols - 1)
            y1 = min(y0 + 1, rows - 1)
            x1 = min(x0 + 1, cols - 1)
            fy = y - y0
            fx = x - x0
            dy = ((1 - fy) * ((1 - fx) * flows[0, y0, x0] + fx * flows[0, y0, x1])
                  + fy * ((1 - fx) * flows[0, y1, x0] + fx * flows[0, y1, x1]))
            dx = ((1 - fy) * ((1 - fx) * flows[1, y0, x0] + fx * flows[1, y0, x1])
                  + fy * ((1 - fx) * flows[1, y1, x0] + fx * flows[1, y1, x1]))
            y = min(max(y + dy, 0.0), rows - 1.0)
            x = min(max(x + dx, 0.0), cols - 1.0)
        points[0, index] = y
        points[1, index] = x
    return points


def follow_flows(flows: np.ndarray, foreground: np.ndarray, steps: int = 200) -> np.ndarray:
    """Where each foreground pixel ends after ``steps`` Euler steps along the flow field.

    Parameters
    ----------
    flows : np.ndarray
        (2, H, W) flow field (dY, dX) in pixels per step (the network's output / 5).
    foreground : np.ndarray
        (H, W) bool, the pixels to move.
    steps : int, optional
        Number of steps of length ``|flow|`` (bilinear interpolation between pixels, positions
        kept inside the image).

    Returns
    -------
    np.ndarray
        (2, n) float32 end positions (y, x) of the n foreground pixels, in ``np.nonzero`` order.
    """
    start = np.array(np.nonzero(foreground), dtype=np.float32)
    field = np.ascontiguousarray(flows * foreground, dtype=np.float32)
    return _integrate(field, start, int(steps))


def cluster_endpoints(endpoints: np.ndarray, foreground: np.ndarray, min_count: int = 10,
                      grow_steps: int = 5) -> np.ndarray:
    """Masks from the end points of the flow dynamics: pixels that converged together share a label.

    The end points are counted per pixel; local maxima (5×5) of the count above ``min_count``
    seed the masks, each seed grows ``grow_steps`` times into neighbouring pixels that received
    more than two end points, and a pixel takes the label of the place it ended in (0 when that
    place belongs to no seed).

    Parameters
    ----------
    endpoints : np.ndarray
        (2, n) end positions of the foreground pixels (:func:`follow_flows`).
    foreground : np.ndarray
        (H, W) bool, the pixels the end points belong to, in ``np.nonzero`` order.
    min_count : int, optional
        Fewest end points at a seed.
    grow_steps : int, optional
        Dilations of each seed into pixels with more than two end points.

    Returns
    -------
    np.ndarray
        (H, W) int32 labels 1..n, 0 background.
    """
    shape = foreground.shape
    cells = np.rint(endpoints).astype(np.int64)
    flat = cells[0] * shape[1] + cells[1]
    counts = np.bincount(flat, minlength=shape[0] * shape[1]).reshape(shape)
    peaks = (counts == ndimage.maximum_filter(counts, size=5, mode="constant")) & (counts > min_count)
    seeds, _ = ndimage.label(peaks, structure=np.ones((3, 3), dtype=bool))
    dense = counts > 2
    for _ in range(grow_steps):
        grown = ndimage.grey_dilation(seeds, size=(3, 3), mode="constant")
        seeds = np.where((seeds == 0) & dense, grown, seeds)
    labels = np.zeros(shape, dtype=np.int32)
    labels[foreground] = seeds.ravel()[flat]
    return labels


@njit(cache=True, nogil=True)
def _diffuse(mask: np.ndarray, centre_y: int, centre_x: int, steps: int) -> np.ndarray:  # pragma: no cover
    """Heat from a source at the centre spread ``steps`` times by 3×3 means over the mask (0 outside)."""
    rows, cols = mask.shape
    heat = np.zeros((rows, cols), dtype=np.float64)
    new = np.zeros((rows, cols), dtype=np.float64)
    for _ in range(steps):
        heat[centre_y, centre_x] += 1.0
        for y in range(1, rows - 1):
            for x in range(1, cols - 1):
                if mask[y, x]:
                    new[y, x] = (heat[y - 1, x - 1] + heat[y - 1, x] + heat[y - 1, x + 1] + heat[y, x - 1]
                                 + heat[y, x] + heat[y, x + 1] + heat[y + 1, x - 1] + heat[y + 1, x]
                                 + heat[y + 1, x + 1]) / 9.0
        for y in range(1, rows - 1):
            for x in range(1, cols - 1):
                if mask[y, x]:
                    heat[y, x] = new[y, x]
    return heat


def masks_to_flows(labels: np.ndarray) -> np.ndarray:
    """The unit flow field of label masks: the gradient of heat diffused from each mask's centre.

    The centre of a mask is its pixel nearest to the median of its pixel coordinates; heat is
    released there and spread by 3×3 means within the mask (2 × the sum of the mask's extents
    times); the flow is the normalised gradient of log(1 + heat). This is the field the
    networks were trained to predict (Stringer et al., 2021).

    Parameters
    ----------
    labels : np.ndarray
        (H, W) integer labels, 0 background.

    Returns
    -------
    np.ndarray
        (2, H, W) float32 (dY, dX), unit length inside masks, 0 outside.
    """
    flows = np.zeros((2, *labels.shape), dtype=np.float32)
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        mask = np.pad(labels[box] == index, 1)
        ys, xs = np.nonzero(mask)
        nearest = np.argmin((ys - np.median(ys)) ** 2 + (xs - np.median(xs)) ** 2)
        steps = 2 * int(np.ptp(ys) + np.ptp(xs))
        heat = np.log1p(_diffuse(mask, int(ys[nearest]), int(xs[nearest]), max(steps, 1)))
        gy = heat[ys + 1, xs] - heat[ys - 1, xs]
        gx = heat[ys, xs + 1] - heat[ys, xs - 1]
        norm = np.hypot(gy, gx) + 1e-20
        flows[0, box[0].start + ys - 1, box[1].start + xs - 1] = gy / norm
        flows[1, box[0].start + ys - 1, box[1].start + xs - 1] = gx / norm
    return flows


def flow_errors(labels: np.ndarray, flows: np.ndarray) -> np.ndarray:
    """Mean squared difference, per label, between the masks' own flows and the predicted ones.

    Parameters
    ----------
    labels : np.ndarray
        (H, W) labels 1..n (consecutive), 0 background.
    flows : np.ndarray
        (2, H, W) predicted unit flows (the network's output / 5).

    Returns
    -------
    np.ndarray
        (n,) float64; entry i is the error of label i + 1 (0 for an absent label).
    """
    count = int(labels.max())
    if count == 0:
        return np.zeros(0)
    own = masks_to_flows(labels)
    squared = ((own - flows) ** 2).sum(axis=0)
    index = np.arange(1, count + 1)
    return np.nan_to_num(ndimage.mean(squared, labels=labels, index=index))


def border_labels(labels: np.ndarray) -> np.ndarray:
    """The labels that touch the image border, sorted, without 0."""
    edges = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    return np.setdiff1d(edges, [0])


def fill_and_filter(labels: np.ndarray, min_area_px: float) -> np.ndarray:
    """Fill the holes of each mask and drop masks smaller than ``min_area_px``; labels 1..n again."""
    out = np.zeros(labels.shape, dtype=np.int32)
    kept = 0
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        mask = labels[box] == index
        if mask.sum() < min_area_px:
            continue
        kept += 1
        out[box][ndimage.binary_fill_holes(mask) & (out[box] == 0)] = kept
    return out


def flows_to_labels(output: np.ndarray, *, cellprob_threshold: float = 0.0, flow_threshold: float = 0.4,
                    steps: int = 200, min_area_px: float = 15.0) -> np.ndarray:
    """Label masks from the network output (flows and cell probability) at the network's scale.

    Parameters
    ----------
    output : np.ndarray
        (3, H, W): dY, dX (×5 unit flows) and the cell-probability logit.
    cellprob_threshold : float, optional
        Logit above which a pixel is foreground (0 = probability 0.5).
    flow_threshold : float, optional
        Masks whose :func:`flow_errors` exceed this are removed, except those touching the
        image border (their centre lies outside, so their own flows differ); 0 keeps all.
    steps : int, optional
        Euler steps of :func:`follow_flows`.
    min_area_px : float, optional
        Smaller masks (pixels, at this scale) are removed.

    Returns
    -------
    np.ndarray
        (H, W) int32 labels 1..n, 0 background.
    """
    foreground = output[2] > cellprob_threshold
    if not foreground.any():
        return np.zeros(foreground.shape, dtype=np.int32)
    flows = output[:2] / FLOW_SCALE
    endpoints = follow_flows(flows, foreground, steps)
    labels = cluster_endpoints(endpoints, foreground)
    labels = fill_and_filter(labels, 0)
    if flow_threshold > 0 and labels.max() > 0:
        bad = np.flatnonzero(flow_errors(labels, flows) > flow_threshold) + 1
        # a mask cut by the image border has its centre outside: its own flows cannot match
        labels[np.isin(labels, np.setdiff1d(bad, border_labels(labels)))] = 0
    return fill_and_filter(labels, min_area_px)


def segment_planes(planes: np.ndarray, predict: Predict, *, scale: float, min_area_px: float,
                   cellprob_threshold: float = 0.0, flow_threshold: float = 0.4, tile: int = TILE,
                   overlap: float = 0.1) -> np.ndarray:
    """Label masks of a normalised (2, H, W) network input, objects zoomed by ``scale`` for the net.

    Parameters
    ----------
    planes : np.ndarray
        (2, H, W) float32 from :func:`network_input`.
    predict : callable
        The network (see :data:`Predict`).
    scale : float
        Zoom applied before the network (:func:`rescale_factor`). From
        :data:`FULL_SIZE_DYNAMICS_MIN_SCALE` up, the output is resized back to (H, W)
        (bilinear) and the dynamics run there; below it (large objects, whose dynamics at
        full size would take 1/scale times more steps on 1/scale² times more pixels) they
        run at the network's scale and the labels are enlarged by nearest neighbour, cut to
        the enlarged cell probability.
    min_area_px : float
        Masks smaller than this many pixels of the input are removed.
    cellprob_threshold, flow_threshold : float, optional
        See :func:`flows_to_labels`.
    tile, overlap : optional
        See :func:`predict_tiled`.

    Returns
    -------
    np.ndarray
        (H, W) int32 labels 1..n, 0 background.
    """
    height, width = planes.shape[1:]
    scaled_shape = (max(1, round(height * scale)), max(1, round(width * scale)))
    output = predict_tiled(resize_planes(planes, scaled_shape), predict, tile=tile, overlap=overlap)
    if scale >= FULL_SIZE_DYNAMICS_MIN_SCALE:
        # the dynamics run on the output brought back to the input's size (smoother outlines
        # than resizing labels), with as many more steps as the objects grew
        return flows_to_labels(resize_planes(output, (height, width)), cellprob_threshold=cellprob_threshold,
                               flow_threshold=flow_threshold, steps=round(200 / min(scale, 1.0)),
                               min_area_px=min_area_px)
    # objects much larger than the network's: dynamics at its scale, labels enlarged, and
    # the outline taken from the enlarged cell probability
    small = flows_to_labels(output, cellprob_threshold=cellprob_threshold, flow_threshold=flow_threshold,
                            min_area_px=min_area_px * scale**2)
    labels = resize_planes(small[None], (height, width), order=0)[0]
    labels[resize_planes(output[2:], (height, width))[0] <= cellprob_threshold] = 0
    return fill_and_filter(labels, min_area_px)


def median_diameter_px(labels: np.ndarray) -> float:
    """Median equivalent-circle diameter (pixels) of the masks, 0 when there are none."""
    areas = np.bincount(labels.ravel())[1:]
    areas = areas[areas > 0]
    return float(np.median(2.0 * np.sqrt(areas / np.pi))) if areas.size else 0.0


def segment_at_diameter(planes: np.ndarray, predict: Predict, *, diameter_px: float, target_px: float,
                        refine: bool, min_area_px: float, cellprob_threshold: float,
                        flow_threshold: float) -> np.ndarray:
    """Labels of a normalised network input whose objects are about ``diameter_px`` across.

    The image is zoomed so that objects of ``diameter_px`` become ``target_px``, the size
    the network segments best. With ``refine``, when the median diameter of the masks found
    differs from ``diameter_px`` by more than :data:`REFINE_TOLERANCE`, the image is
    segmented again at the zoom the measured diameter gives (Cellpose estimates the size
    in a first pass too); so a wrong expectation costs a second pass, a right one does not.
    When the first pass finds nothing, the diameters of :data:`SEARCH_FACTORS` are tried in
    turn (an image with no objects pays for them: three passes instead of one).

    Returns
    -------
    np.ndarray
        (H, W) int32 labels 1..n, 0 background.
    """
    options = {"min_area_px": min_area_px, "cellprob_threshold": cellprob_threshold,
               "flow_threshold": flow_threshold}
    labels = segment_planes(planes, predict, scale=target_px / diameter_px, **options)
    measured = median_diameter_px(labels)
    if refine and measured == 0:
        for factor in SEARCH_FACTORS:
            tried = diameter_px * factor
            labels = segment_planes(planes, predict, scale=target_px / tried, **options)
            measured = median_diameter_px(labels)
            if measured > 0:
                diameter_px = tried
                break
    if refine and measured > 0 and abs(measured / diameter_px - 1.0) > REFINE_TOLERANCE:
        labels = segment_planes(planes, predict, scale=target_px / measured, **options)
    return labels


def _check_image(image: np.ndarray, field: str) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim != 2 or min(array.shape) < 1:
        raise InvalidArgument(f"{field}: expected a 2-D image, got shape {list(array.shape)}")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise InvalidArgument(f"{field}: expected integer or float pixels, got {array.dtype}")
    return array


def _check_positive(value: float, field: str, zero: bool = False) -> None:
    if not np.isfinite(value) or value < 0 or (value == 0 and not zero):
        kind = "non-negative" if zero else "positive"
        raise InvalidArgument(f"{field}: must be a {kind} number, got {value!r}")


def _model_predict(predict: Predict | None, model: str) -> Predict:
    if predict is not None:
        return predict
    from services.segmentation.models.flow_models import default_predictor

    return default_predictor(model)


def segment_nuclei_flows(nuclei: np.ndarray, *, pixel_size_um: float,
                         nucleus_diameter_um: float = NUCLEUS_DIAMETER_UM, refine_diameter: bool = True,
                         min_area_um2: float = 10.0,
                         cellprob_threshold: float = 0.5, flow_threshold: float = 0.3,
                         predict: Predict | None = None) -> np.ndarray:
    """Nucleus instance labels of a nucleus-stain image with the learned flow network.

    Parameters
    ----------
    nuclei : np.ndarray
        (H, W) nucleus channel (DAPI, Hoechst, ...), 8- or 16-bit or float, any size.
    pixel_size_um : float
        Side of a pixel in µm.
    nucleus_diameter_um : float, optional
        Expected median nucleus diameter (equivalent circle) in µm; the image is zoomed so
        that it becomes :data:`NUCLEUS_TARGET_PX` pixels.
    refine_diameter : bool, optional
        Segment again at the measured diameter when it is far from the expected one (see
        :func:`segment_at_diameter`).
    min_area_um2 : float, optional
        Nuclei smaller than this (µm²) are removed.
    cellprob_threshold : float, optional
        Logit above which a pixel is in a nucleus (0: probability 0.5; lower grows masks).
        The default 0.5 and ``flow_threshold`` 0.3 were chosen on mnfinder's training
        images (Cellpose's 0.0 and 0.4 score alike at IoU 0.5, worse at 0.9).
    flow_threshold : float, optional
        Largest flow error of a kept mask (see :func:`flow_errors`); 0 keeps all.
    predict : callable, optional
        The network; default: the built-in ``scellseg-flow`` model served by ONNX Runtime.

    Returns
    -------
    np.ndarray
        (H, W) int32 labels 1..n, 0 background; an image without nuclei (or a flat one)
        gives all zeros.

    Raises
    ------
    InvalidArgument
        Naming the field: an image that is not 2-D, a non-positive size or diameter.

    Notes
    -----
    Stringer et al., "Cellpose: a generalist algorithm for cellular segmentation",
    Nature Methods 18:100-106 (2021): pixels follow the predicted flows to the centre
    of their object and the pixels that meet there form one mask.
    """
    image = _check_image(nuclei, "nuclei")
    _check_positive(pixel_size_um, "pixel_size_um")
    _check_positive(nucleus_diameter_um, "nucleus_diameter_um")
    _check_positive(min_area_um2, "min_area_um2", zero=True)
    planes = network_input(None, image)
    if not planes[0].any():
        return np.zeros(image.shape, dtype=np.int32)
    net = _model_predict(predict, "scellseg-flow")
    return segment_at_diameter(planes, net, diameter_px=nucleus_diameter_um / pixel_size_um,
                               target_px=NUCLEUS_TARGET_PX, refine=refine_diameter,
                               min_area_px=min_area_um2 / pixel_size_um**2,
                               cellprob_threshold=cellprob_threshold, flow_threshold=flow_threshold)


def match_cells_to_nuclei(nucleus_labels: np.ndarray, cell_labels: np.ndarray,
                          min_overlap: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Give each nucleus a cell with its id: cells are matched to nuclei by overlap.

    A nucleus belongs to the cell that holds most of its pixels, if that is at least
    ``min_overlap`` of the nucleus. A cell holding one nucleus takes the nucleus's id (and
    the nucleus's pixels, also where they reach outside it); a cell holding several is
    split between them, each pixel going to the nucleus it is nearest to along the cell
    (a watershed of the distance to the nuclei, as when cells are grown from seeds).
    A nucleus without a cell gets a cell equal to the nucleus. A cell without a nucleus is
    dropped: with no nucleus in view it is most often a fragment cut by the image border or a
    false detection, and a cell's id is its nucleus's id.

    Parameters
    ----------
    nucleus_labels, cell_labels : np.ndarray
        (H, W) integer labels, 0 background.
    min_overlap : float, optional
        Least fraction of a nucleus inside a cell for the two to match.

    Returns
    -------
    (np.ndarray, np.ndarray)
        Nucleus labels 1..n (int32) and cell labels (int32) where cell k contains nucleus k.
    """
    from skimage.segmentation import watershed

    nuclei = fill_and_filter(np.asarray(nucleus_labels, dtype=np.int32), 0)
    cells = np.asarray(cell_labels, dtype=np.int64)
    count = int(nuclei.max())
    out = np.zeros(nuclei.shape, dtype=np.int32)
    if count == 0:
        return nuclei, out
    width = int(cells.max()) + 1
    pairs, overlap = np.unique(nuclei.astype(np.int64) * width + cells, return_counts=True)
    nucleus_of, cell_of = np.divmod(pairs, width)
    inside = cell_of > 0
    areas = np.bincount(nuclei.ravel(), minlength=count + 1)
    best = np.zeros(count + 1, dtype=np.int64)
    best_overlap = np.zeros(count + 1, dtype=np.int64)
    for nucleus, cell, shared in zip(nucleus_of[inside], cell_of[inside], overlap[inside], strict=True):
        if nucleus > 0 and shared > best_overlap[nucleus]:
            best[nucleus], best_overlap[nucleus] = cell, shared
    best[best_overlap < min_overlap * areas] = 0
    for cell, box in enumerate(ndimage.find_objects(cells.astype(np.int32)), start=1):
        members = np.flatnonzero(best == cell)
        if box is None or members.size == 0:
            continue
        region = cells[box] == cell
        if members.size == 1:
            out[box][region] = members[0]
            continue
        seeds = np.where(np.isin(nuclei[box], members) & region, nuclei[box], 0)
        distance = ndimage.distance_transform_edt(seeds == 0)
        split = watershed(distance, seeds, mask=region)
        out[box][region] = split[region]
    # every nucleus lies in its own cell, also where it reaches into a neighbour (or has no cell)
    out[nuclei > 0] = nuclei[nuclei > 0]
    return nuclei, out


def segment_cells_flows(microtubules: np.ndarray, er: np.ndarray, nuclei: np.ndarray, *, pixel_size_um: float,
                        cell_diameter_um: float = CELL_DIAMETER_UM,
                        nucleus_diameter_um: float = NUCLEUS_DIAMETER_UM, refine_diameter: bool = True,
                        min_cell_area_um2: float = 40.0, min_nucleus_area_um2: float = 10.0,
                        cellprob_threshold: float = 0.0, flow_threshold: float = 0.4,
                        nuclei_predict: Predict | None = None,
                        cells_predict: Predict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Nucleus and whole-cell labels of a 3-channel fluorescence image with the flow networks.

    The nuclei come from :func:`segment_nuclei_flows`; the cells from the cell model on
    [cytoplasm, nucleus], the cytoplasm being the sum of the normalised microtubule and ER
    channels (the red and yellow of Human Protein Atlas images); then each nucleus gets its
    cell by :func:`match_cells_to_nuclei`.

    Parameters
    ----------
    microtubules, er, nuclei : np.ndarray
        (H, W) channels of one image (8- or 16-bit or float, same shape).
    pixel_size_um : float
        Side of a pixel in µm.
    cell_diameter_um, nucleus_diameter_um : float, optional
        Expected median diameters in µm (see :func:`segment_at_diameter`).
    refine_diameter : bool, optional
        Segment again at the measured diameter when it is far from the expected one.
    min_cell_area_um2, min_nucleus_area_um2 : float, optional
        Smaller cells and nuclei (µm²) are removed before matching.
    cellprob_threshold, flow_threshold : float, optional
        As in :func:`segment_nuclei_flows`, for the cell network (Cellpose's defaults; the
        nuclei use :func:`segment_nuclei_flows`'s).
    nuclei_predict, cells_predict : callable, optional
        The networks; defaults: the built-in ``scellseg-flow`` and ``cellpose-flow`` models.

    Returns
    -------
    (np.ndarray, np.ndarray)
        Nucleus labels and cell labels, (H, W) int32; cell k contains nucleus k, every
        nucleus has a cell, and cells without a nucleus are dropped.

    Raises
    ------
    InvalidArgument
        Naming the field: a channel that is not 2-D, channels of different shapes, a
        non-positive size or diameter.
    """
    channels = {"microtubules": microtubules, "er": er, "nuclei": nuclei}
    arrays = {name: _check_image(value, name) for name, value in channels.items()}
    shape = arrays["nuclei"].shape
    for name, array in arrays.items():
        if array.shape != shape:
            raise InvalidArgument(f"{name}: shape {list(array.shape)} differs from nuclei {list(shape)}")
    _check_positive(cell_diameter_um, "cell_diameter_um")
    nucleus_labels = segment_nuclei_flows(
        arrays["nuclei"], pixel_size_um=pixel_size_um, nucleus_diameter_um=nucleus_diameter_um,
        refine_diameter=refine_diameter, min_area_um2=min_nucleus_area_um2, predict=nuclei_predict)
    cytoplasm = normalize_percentiles(arrays["microtubules"]) + normalize_percentiles(arrays["er"])
    planes = network_input(cytoplasm, arrays["nuclei"])
    if not planes.any():
        return nucleus_labels, np.zeros(shape, dtype=np.int32)
    net = _model_predict(cells_predict, "cellpose-flow")
    cell_labels = segment_at_diameter(planes, net, diameter_px=cell_diameter_um / pixel_size_um,
                                      target_px=MODEL_DIAMETER_PX, refine=refine_diameter,
                                      min_area_px=min_cell_area_um2 / pixel_size_um**2,
                                      cellprob_threshold=cellprob_threshold, flow_threshold=flow_threshold)
    return match_cells_to_nuclei(nucleus_labels, cell_labels)
