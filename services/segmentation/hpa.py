"""HPA-Cell-Segmentation's nuclei and cell segmentation around its two U-Nets, at any size and thread-safe.

The networks (:mod:`services.segmentation.models.hpa_unet`) see the image at
0.32 µm per pixel (the HPA's 0.08 µm images shrunk by 4) and give each pixel
the probabilities of background, border and interior. Pre- and post-processing
follow HPA-Cell-Segmentation (Ouyang et al., HPA Cell Atlas; the segmentation
used by the HPA single-cell classification challenge, 2021) step by step, with
its faults fixed:

- any size: the shrunk image is padded by reflection to a multiple of 32 and
  the output cropped back, instead of failing on other sizes;
- outputs at the input size for non-square images too (the original swapped
  height and width when it resized back);
- size limits in µm² (the original's full-resolution pixel counts at
  0.08 µm/px), so an image of another pixel size is not emptied;
- int32 labels (the original cast cells to uint8, wrapping ids above 255);
- every cell holds its nucleus, which carries the cell's id;
- plain functions of their arguments, so concurrent calls share nothing (the
  original kept each image's shapes on the segmentator object).

The probabilities stay float32 where the original rounded them to 8 bits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage import filters, morphology, transform
from skimage.segmentation import find_boundaries, watershed

from labsight.errors import InvalidArgument
from services.segmentation.models.hpa_unet import CLASSES, MEAN, STD

if TYPE_CHECKING:
    from labsight.models import ModelServer

__all__ = [
    "ClassMapEngine",
    "ServedNetwork",
    "class_probabilities",
    "label_cells",
    "label_nuclei",
    "segment_cells_hpa",
    "segment_nuclei_hpa",
]

HPA_PIXEL_SIZE_UM = 0.08
"""Pixel size of HPA images, the resolution the original's settings were made for."""

NETWORK_PIXEL_SIZE_UM = HPA_PIXEL_SIZE_UM / 0.25
"""Pixel size the networks were trained at: HPA images shrunk by the original's factor 0.25."""

PAD_MULTIPLE = 32
"""The networks' total stride: input sides must be multiples of it."""

SEED_THRESHOLD = 0.15
"""Nucleus seeds: interior probability above this (0.4 - 0.25 in the original)."""

NUCLEUS_THRESHOLD = 0.4
"""Nucleus mask: interior probability above this."""

BORDER_THRESHOLD = 0.05
"""Border probability above which a pixel is border: never a seed, never cell body."""

CELL_THRESHOLD_FLOOR = 0.22
"""Cell mask: interior probability above max(this, ``CELL_OTSU_FRACTION`` × its Otsu threshold)."""

CELL_OTSU_FRACTION = 0.5

_HPA_PIXEL_AREA_UM2 = HPA_PIXEL_SIZE_UM**2

MIN_SEED_AREA_UM2 = 500 * _HPA_PIXEL_AREA_UM2
"""Smaller nucleus seeds are dropped (500 pixels of 0.08 µm: 3.2 µm²)."""

MAX_NUCLEUS_HOLE_AREA_UM2 = 1000 * _HPA_PIXEL_AREA_UM2
"""Holes of the nucleus mask up to this area are filled (6.4 µm²)."""

MIN_NUCLEUS_AREA_UM2 = 2500 * _HPA_PIXEL_AREA_UM2
"""Smaller nuclei are dropped (16 µm²)."""

MIN_CELL_AREA_UM2 = 5500 * _HPA_PIXEL_AREA_UM2
"""Smaller cells are dropped (35.2 µm²)."""

CLOSING_RADIUS_UM = 6 * HPA_PIXEL_SIZE_UM
"""Radius of the disk that closes the cell masks (6 pixels of 0.08 µm)."""

PROBABILITIES_OUTPUT = "probabilities"
"""Output name of a network that ends with its softmax (a TorchScript export may); others give logits."""


class ClassMapEngine(Protocol):
    """A loaded HPA network: (N, 3, H, W) normalised float32 images to (N, 3, H, W) logits."""

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits of background, border and interior for each image of the batch."""
        ...


class ServedNetwork:
    """An HPA network of a :class:`~labsight.models.ModelServer` as a :class:`ClassMapEngine`.

    Parameters
    ----------
    server : ModelServer
        Serves the segmentation repository, where converted weights
        (``convert-hpa-weights``) or a TorchScript export appear by name.
    model : str
        The model's name, e.g. ``hpa-nuclei``.

    Notes
    -----
    The model's first output is taken; if the manifest names it
    ``probabilities``, its logarithm serves as logits (whose softmax it is).
    """

    def __init__(self, server: ModelServer, model: str) -> None:
        self.server = server
        self.model = model

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits (N, 3, H, W) of the normalised batch."""
        name, values = next(iter(self.server.run(self.model, batch).items()))
        if name == PROBABILITIES_OUTPUT:
            return np.log(np.maximum(values, np.finfo(np.float32).tiny))
        return values


def segment_nuclei_hpa(nuclei: np.ndarray, *, pixel_size_um: float = HPA_PIXEL_SIZE_UM,
                       engine: ClassMapEngine) -> np.ndarray:
    """Label the nuclei of a nuclear stain with the HPA nuclei network.

    Parameters
    ----------
    nuclei : ndarray
        (H, W) nuclear stain (HPA blue), uint8, uint16 or float in [0, 1].
    pixel_size_um : float
        Side of a pixel in µm (HPA images: 0.08).
    engine : ClassMapEngine
        The nuclei network (``hpa-dpn92-unet-nuclei``).

    Returns
    -------
    ndarray
        (H, W) int32 labels, 0 for background, nuclei numbered from 1.

    Raises
    ------
    InvalidArgument
        If the image is not a 2-D grey image or the pixel size is not positive.

    Notes
    -----
    The network sees the stain on all three input channels. See :func:`label_nuclei`.
    """
    _check_pixel_size(pixel_size_um)
    blue = _network_plane(nuclei, "nuclei", pixel_size_um)
    probabilities = _probabilities(np.stack([blue] * 3), engine, nuclei.shape)
    return label_nuclei(probabilities, pixel_size_um=pixel_size_um)


def segment_cells_hpa(microtubules: np.ndarray, er: np.ndarray, nuclei: np.ndarray, *,
                      pixel_size_um: float = HPA_PIXEL_SIZE_UM, nuclei_engine: ClassMapEngine,
                      cell_engine: ClassMapEngine) -> tuple[np.ndarray, np.ndarray]:
    """Label nuclei and whole cells of an HPA image with the two HPA networks.

    Parameters
    ----------
    microtubules, er, nuclei : ndarray
        (H, W) channels of one image: red microtubules, yellow endoplasmic
        reticulum, blue nuclei; uint8, uint16 or float in [0, 1]; one shape.
    pixel_size_um : float
        Side of a pixel in µm (HPA images: 0.08).
    nuclei_engine, cell_engine : ClassMapEngine
        The nuclei network (input [blue, blue, blue]) and the cell network
        (input [red, yellow, blue]).

    Returns
    -------
    nuclei_labels, cell_labels : ndarray
        (H, W) int32 labels; a nucleus carries the id of the cell it lies in.

    Raises
    ------
    InvalidArgument
        If a channel is not 2-D, the shapes differ or the pixel size is not positive.

    Examples
    --------
    >>> nuclei, cells = segment_cells_hpa(red, yellow, blue, pixel_size_um=0.08,
    ...                                   nuclei_engine=nuclei_net, cell_engine=cell_net)
    """
    _check_pixel_size(pixel_size_um)
    channels = {"microtubules": microtubules, "er": er, "nuclei": nuclei}
    shapes = {name: image.shape for name, image in channels.items()}
    if len(set(shapes.values())) > 1:
        raise InvalidArgument(f"microtubules, er, nuclei: the channels' shapes differ: {shapes}")
    red, yellow, blue = (_network_plane(image, name, pixel_size_um) for name, image in channels.items())
    nucleus_map = _probabilities(np.stack([blue, blue, blue]), nuclei_engine, nuclei.shape)
    cell_map = _probabilities(np.stack([red, yellow, blue]), cell_engine, nuclei.shape)
    return label_cells(nucleus_map, cell_map, pixel_size_um=pixel_size_um)


def class_probabilities(channels: Sequence[np.ndarray], *, pixel_size_um: float = HPA_PIXEL_SIZE_UM,
                        engine: ClassMapEngine) -> np.ndarray:
    """Background, border and interior probabilities of an HPA network, at the input size.

    Parameters
    ----------
    channels : sequence of 3 ndarray
        The network's three (H, W) input channels ([B, B, B] or [R, Y, B]),
        uint8, uint16 or float in [0, 1].
    pixel_size_um : float
        Side of a pixel in µm.
    engine : ClassMapEngine
        The network.

    Returns
    -------
    ndarray
        (H, W, 3) float32 probabilities of :data:`~services.segmentation.models.hpa_unet.CLASSES`.

    Notes
    -----
    Each channel is scaled to [0, 1] by its dtype's range and resized (bilinear,
    anti-aliased when shrinking) by ``pixel_size_um / 0.32``; the planes are
    normalised by mean (124, 117, 104) / 255 and std 0.2348, padded by reflection
    (32 pixels before, up to the next multiple of 32 after, as the original's
    padding mode), run, soft-maxed over the classes, cropped and resized back
    (area interpolation).
    """
    _check_pixel_size(pixel_size_um)
    if len(channels) != 3:
        raise InvalidArgument(f"channels: expected 3 images, got {len(channels)}")
    shapes = {image.shape for image in channels}
    if len(shapes) > 1:
        raise InvalidArgument(f"channels: the channels' shapes differ: {sorted(shapes)}")
    planes = [_network_plane(image, f"channels[{i}]", pixel_size_um) for i, image in enumerate(channels)]
    return _probabilities(np.stack(planes), engine, channels[0].shape)


def label_nuclei(probabilities: np.ndarray, *, pixel_size_um: float = HPA_PIXEL_SIZE_UM) -> np.ndarray:
    """Nucleus labels from the nuclei network's class probabilities.

    Parameters
    ----------
    probabilities : ndarray
        (H, W, 3) background, border and interior probabilities.
    pixel_size_um : float
        Side of a pixel in µm; converts the size limits.

    Returns
    -------
    ndarray
        (H, W) int32 labels numbered from 1.

    Notes
    -----
    Seeds are pixels of interior probability > 0.15 and border probability
    <= 0.05 (so the border class splits touching nuclei), at least 3.2 µm²;
    the mask is interior > 0.4 with holes up to 6.4 µm² filled; a watershed
    from the seeds over the mask, with a line between touching nuclei, gives
    the nuclei, of which those under 16 µm² are dropped.
    """
    _check_pixel_size(pixel_size_um)
    _check_probabilities(probabilities, "probabilities")
    return _nuclei(probabilities[..., 2], probabilities[..., 1], pixel_size_um)


def label_cells(nuclei_probabilities: np.ndarray, cell_probabilities: np.ndarray, *,
                pixel_size_um: float = HPA_PIXEL_SIZE_UM) -> tuple[np.ndarray, np.ndarray]:
    """Nucleus and cell labels from the class probabilities of both networks.

    Parameters
    ----------
    nuclei_probabilities, cell_probabilities : ndarray
        (H, W, 3) background, border and interior probabilities of the nuclei
        and of the cell network.
    pixel_size_um : float
        Side of a pixel in µm; converts the size limits.

    Returns
    -------
    nuclei_labels, cell_labels : ndarray
        (H, W) int32 labels; cell k contains nucleus k (the nuclei of one cell
        share its id).

    Notes
    -----
    Nuclei as in :func:`label_nuclei`, with the borders of both networks
    added. The cell mask is cell interior > t = max(0.22, 0.5 · Otsu(interior))
    outside the cell border (> 0.05); a watershed from the nuclei over the
    interior probability (clipped below at t) fills it. Cells under 35.2 µm²
    are dropped, the rest closed with a disk of 0.48 µm and their holes
    filled; a second watershed lets them grow over the border pixels, holes
    are filled again and small cells dropped. Nuclei outside cells or under
    16 µm² are dropped and the rest take their cell's id; a cell left without
    a nucleus (a piece the closing cut off) is dropped, where the original
    kept it.
    """
    _check_pixel_size(pixel_size_um)
    _check_probabilities(nuclei_probabilities, "nuclei_probabilities")
    _check_probabilities(cell_probabilities, "cell_probabilities")
    if nuclei_probabilities.shape != cell_probabilities.shape:
        raise InvalidArgument(
            f"nuclei_probabilities, cell_probabilities: shapes differ: "
            f"{nuclei_probabilities.shape} and {cell_probabilities.shape}"
        )
    pixel_area = pixel_size_um**2
    interior = cell_probabilities[..., 2]
    border = cell_probabilities[..., 1] > BORDER_THRESHOLD
    nuclei = _nuclei(nuclei_probabilities[..., 2],
                     nuclei_probabilities[..., 1] + cell_probabilities[..., 1], pixel_size_um)

    threshold = max(CELL_THRESHOLD_FLOOR, CELL_OTSU_FRACTION * _otsu(interior))
    elevation = -np.maximum(interior, threshold)
    cells = watershed(elevation, nuclei, mask=(interior > threshold) & ~border)
    cells = _drop_small(cells, MIN_CELL_AREA_UM2 / pixel_area)
    cells = _fill_holes(_closing(cells, max(1, round(CLOSING_RADIUS_UM / pixel_size_um))))
    # Grow over the border pixels the first mask left out.
    cells = _fill_holes(watershed(elevation, cells, mask=(cells > 0) | border))
    cells = _drop_small(cells, MIN_CELL_AREA_UM2 / pixel_area)

    nuclei = _drop_small(np.where(cells > 0, nuclei, 0), MIN_NUCLEUS_AREA_UM2 / pixel_area)
    nucleated = np.where(nuclei > 0, cells, 0)
    renumber = _renumbering(np.bincount(nucleated.ravel(), minlength=cells.max() + 1) > 0)
    return renumber[nucleated], renumber[cells]


def _nuclei(interior: np.ndarray, border: np.ndarray, pixel_size_um: float) -> np.ndarray:
    """Nucleus labels (int32, from 1) from interior and border probabilities; see :func:`label_nuclei`."""
    pixel_area = pixel_size_um**2
    seeds = (interior > SEED_THRESHOLD) & (border <= BORDER_THRESHOLD)
    markers = _drop_small(ndi.label(seeds)[0], MIN_SEED_AREA_UM2 / pixel_area)
    # Holes smaller than the limit are filled (max_size is the largest filled area).
    mask = morphology.remove_small_holes(
        interior > NUCLEUS_THRESHOLD, max_size=math.ceil(MAX_NUCLEUS_HOLE_AREA_UM2 / pixel_area) - 1
    )
    # As the original, the flat mask is the relief: the seeds grow at the same pace.
    nuclei = watershed(mask.astype(np.uint8), markers, mask=mask, watershed_line=True)
    return _drop_small(nuclei, MIN_NUCLEUS_AREA_UM2 / pixel_area)


def _drop_small(labels: np.ndarray, min_px: float) -> np.ndarray:
    """Labels with fewer than ``min_px`` pixels removed, the rest renumbered 1..n in order (int32)."""
    return _renumbering(np.bincount(labels.ravel()) >= min_px)[labels]


def _renumbering(keep: np.ndarray) -> np.ndarray:
    """Lookup table from ids to 1..n for the ids where ``keep`` is true, 0 for the others and for 0."""
    kept = keep.copy()
    kept[0] = False
    return np.where(kept, np.cumsum(kept), 0).astype(np.int32)


def _closing(labels: np.ndarray, radius: int) -> np.ndarray:
    """Grey closing of a label image with a disk (as ``skimage.morphology.closing``, reflected edges).

    OpenCV's min/max filters are ten times faster than SciPy's; float64 holds every id exactly.
    """
    disk = morphology.disk(radius).astype(np.uint8)
    closed = cv2.morphologyEx(labels.astype(np.float64), cv2.MORPH_CLOSE, disk,
                              borderType=cv2.BORDER_REFLECT)
    return closed.astype(np.int32)


def _fill_holes(labels: np.ndarray) -> np.ndarray:
    """Objects with their holes filled, renumbered by 4-connected component (int32).

    As the original: the pixels on the boundaries of each label are cleared
    first, so touching objects stay apart when the holes of their union are filled.
    """
    solid = ndi.binary_fill_holes((labels > 0) & ~find_boundaries(labels))
    return ndi.label(solid)[0].astype(np.int32)


def _otsu(image: np.ndarray) -> float:
    """Otsu's threshold, or the value of a constant image."""
    low, high = float(image.min()), float(image.max())
    return low if low == high else float(filters.threshold_otsu(image))


def _network_plane(image: np.ndarray, field: str, pixel_size_um: float) -> np.ndarray:
    """A channel as float32 in [0, 1] by its dtype's range, at the networks' pixel size."""
    image = np.asarray(image)
    if image.ndim != 2 or image.size == 0:
        raise InvalidArgument(f"{field}: expected a 2-D grey image, got shape {image.shape}")
    if image.dtype == np.uint8 or image.dtype == np.uint16:
        plane = image.astype(np.float32) / np.iinfo(image.dtype).max
    elif image.dtype.kind == "f":
        if not np.isfinite(image).all():
            raise InvalidArgument(f"{field}: the image holds NaN or infinite values")
        plane = np.clip(image, 0, 1).astype(np.float32)
    else:
        raise InvalidArgument(f"{field}: expected uint8, uint16 or float pixels, got {image.dtype}")
    scale = pixel_size_um / NETWORK_PIXEL_SIZE_UM
    shape = tuple(max(1, round(side * scale)) for side in image.shape)
    if shape == image.shape:
        return plane
    return transform.resize(plane, shape, order=1, mode="reflect", anti_aliasing=scale < 1,
                            preserve_range=True).astype(np.float32)


def _probabilities(planes: np.ndarray, engine: ClassMapEngine, shape: tuple[int, ...]) -> np.ndarray:
    """(H, W, 3) float32 class probabilities at ``shape`` of (3, h, w) planes in [0, 1]."""
    _, height, width = planes.shape
    mean = np.asarray(MEAN, np.float32)[:, None, None]
    normalised = (planes - mean) / np.asarray(STD, np.float32)[:, None, None]
    pad = PAD_MULTIPLE
    padded = np.pad(
        normalised,
        ((0, 0), (pad, pad - height % pad), (pad, pad - width % pad)),
        mode="symmetric",  # OpenCV's BORDER_REFLECT, the original's padding
    )
    logits = np.asarray(engine.run(padded[None].astype(np.float32)))
    if logits.shape != (1, len(CLASSES), *padded.shape[1:]):
        raise ValueError(
            f"model: expected logits of shape {(1, len(CLASSES), *padded.shape[1:])}, got {logits.shape}"
        )
    logits = logits[0, :, pad:pad + height, pad:pad + width]
    exp = np.exp(logits - logits.max(axis=0, keepdims=True))
    probabilities = np.ascontiguousarray((exp / exp.sum(axis=0, keepdims=True)).transpose(1, 2, 0),
                                         dtype=np.float32)
    if probabilities.shape[:2] == shape:
        return probabilities
    return cv2.resize(probabilities, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)


def _check_pixel_size(pixel_size_um: float) -> None:
    if not (isinstance(pixel_size_um, int | float) and math.isfinite(pixel_size_um) and pixel_size_um > 0):
        raise InvalidArgument(f"pixel_size_um: expected a positive number of µm, got {pixel_size_um!r}")


def _check_probabilities(probabilities: np.ndarray, field: str) -> None:
    if probabilities.ndim != 3 or probabilities.shape[2] != len(CLASSES):
        raise InvalidArgument(
            f"{field}: expected (H, W, {len(CLASSES)}) class probabilities, got shape {probabilities.shape}"
        )
