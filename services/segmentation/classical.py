"""Classical nuclei and cell segmentation: threshold, seeded watershed, propagation.

Nuclei: smoothing, an automatic threshold, hole filling, and a watershed from
the maxima of the distance to the background that splits touching nuclei.
Cells: a watershed from the nuclei over the cytoplasm signal, restricted to
its foreground, after CellProfiler's IdentifySecondaryObjects (Propagation).
Every size is in micrometres and converted with the pixel size, so the same
settings serve an image at any magnification. Pure functions of their
arguments: safe to call from many threads at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage import filters
from skimage.feature import peak_local_max
from skimage.segmentation import relabel_sequential, watershed

__all__ = ["NucleusSettings", "CellSettings", "classical_cells", "classical_nuclei"]


@dataclass(frozen=True)
class NucleusSettings:
    """Sizes (µm, µm²) and factors of :func:`classical_nuclei`.

    The defaults were chosen on mnfinder's training images only (see
    ``bench/segmentation_quality.py``).

    Attributes
    ----------
    diameter_um : float
        Typical nucleus diameter; the scale of everything below.
    smoothing : float
        Gaussian sigma of the image, as a fraction of the diameter.
    seed_distance : float
        Least distance between two nucleus seeds, as a fraction of the diameter.
    seed_smoothing : float
        Gaussian sigma of the distance map the seeds are found on, as a fraction of the
        diameter: it merges the many maxima of an elongated nucleus' ridge.
    min_area_um2, max_area_um2 : float
        Objects outside this range are dropped (after splitting).
    working_diameter_px : float
        The image is shrunk (never enlarged) so that a nucleus spans about this many
        pixels while it is segmented; labels are returned at the input size.
    log_offset : float
        The threshold is found on log(I - min + log_offset × (max - min)): the offset, a
        share of the intensity range, keeps the logarithm off the dark noise and makes it
        the same for 8-bit, 16-bit and float images.
    noise_offset : float
        ... or this many times the pixel noise, when that is larger: the logarithm must not
        stretch the noise of a dark background into objects.
    """

    diameter_um: float = 12.0
    smoothing: float = 0.02
    seed_distance: float = 0.4
    seed_smoothing: float = 0.1
    min_area_um2: float = 20.0
    max_area_um2: float = 2000.0
    working_diameter_px: float = 32.0
    log_offset: float = 0.01
    noise_offset: float = 2.0


@dataclass(frozen=True)
class CellSettings:
    """Sizes and factors of :func:`classical_cells`.

    Attributes
    ----------
    smoothing_um : float
        Gaussian sigma of the cytoplasm signal.
    compactness : float
        Weight of the distance to the nucleus (per µm) against the cytoplasm edges;
        CellProfiler's regularisation λ of Propagation plays the same part.
    threshold_factor : float
        The cytoplasm foreground is the signal above this factor times its Otsu threshold.
    working_pixel_um : float
        Cells are grown at this pixel size when the image's is finer (a cell ~30 µm across
        then spans ~40 pixels) and the labels enlarged back: cell outlines need less
        detail than nuclei, and the watershed's time grows with the pixels it floods.
    """

    smoothing_um: float = 1.0
    compactness: float = 0.001
    threshold_factor: float = 0.7
    working_pixel_um: float = 0.75


def classical_nuclei(
    nuclei: np.ndarray,
    pixel_size_um: float,
    settings: NucleusSettings = NucleusSettings(),
) -> np.ndarray:
    """Nucleus labels of a nuclear-stain image.

    Parameters
    ----------
    nuclei : ndarray, shape (H, W)
        Nuclear stain (DAPI, Hoechst), any real dtype; brighter is more nuclear.
    pixel_size_um : float
        Side of a pixel in micrometres.
    settings : NucleusSettings
        Sizes and factors.

    Returns
    -------
    ndarray of int32, shape (H, W)
        0 = background, nuclei 1..N.

    Notes
    -----
    At a working scale where a nucleus spans about ``working_diameter_px`` pixels: Gaussian
    smoothing, Otsu's threshold (Otsu 1979) on the logarithm of the smoothed image, holes
    filled, then a watershed on the negated, smoothed Euclidean distance to the background
    from its local maxima at least ``seed_distance`` diameters apart (the classical split of
    touching round objects). Objects smaller than ``min_area_um2`` or larger than
    ``max_area_um2`` are dropped. A constant image has no nuclei.
    """
    image = np.asarray(nuclei, dtype=np.float32)
    full_shape = image.shape
    diameter_px = settings.diameter_um / pixel_size_um
    scale = min(1.0, settings.working_diameter_px / diameter_px)
    if scale < 1.0:
        image = _shrink(image, scale)
    work_pixel_um = pixel_size_um / scale
    diameter = settings.diameter_um / work_pixel_um

    smoothed = ndi.gaussian_filter(image, settings.smoothing * diameter)
    if float(smoothed.max()) <= float(smoothed.min()):
        return np.zeros(full_shape, np.int32)
    # Otsu on log intensity: nuclear stains span a decade of brightness (dim G1 next to
    # bright mitotic nuclei) and plain Otsu drops the dim ones (training AP@0.5 0.70 -> 0.89).
    floor = float(smoothed.min())
    offset = max(settings.log_offset * (float(smoothed.max()) - floor),
                 settings.noise_offset * _noise_sigma(image))
    logged = np.log(smoothed - floor + offset)
    mask = ndi.binary_fill_holes(logged > filters.threshold_otsu(logged))
    min_px = settings.min_area_um2 / work_pixel_um**2
    mask = _drop_small(mask, min_px)

    distance = ndi.distance_transform_edt(mask)
    relief = ndi.gaussian_filter(distance, settings.seed_smoothing * diameter)
    components, _ = ndi.label(mask)
    peaks = peak_local_max(relief, min_distance=max(1, round(settings.seed_distance * diameter)),
                           labels=components, exclude_border=False)
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1, dtype=np.int32)
    labels = watershed(-relief, markers, mask=mask)
    labels = _keep_sizes(labels, min_px, settings.max_area_um2 / work_pixel_um**2)
    if scale < 1.0:
        labels = _resample(labels, full_shape)
    return labels


def classical_cells(
    cytoplasm: np.ndarray,
    nucleus_labels: np.ndarray,
    pixel_size_um: float,
    settings: CellSettings = CellSettings(),
) -> np.ndarray:
    """Cell labels grown from the nuclei over a cytoplasm signal.

    Parameters
    ----------
    cytoplasm : ndarray, shape (H, W)
        Cytoplasm signal (for HPA images microtubules + ER, red + yellow), any real dtype.
    nucleus_labels : ndarray of int, shape (H, W)
        Nuclei, 0 = background, ids 1..N.
    pixel_size_um : float
        Side of a pixel in micrometres.
    settings : CellSettings
        Smoothing, compactness, threshold factor.

    Returns
    -------
    ndarray of int32, shape (H, W)
        Cell k contains nucleus k; a nucleus with no cytoplasm around it is its own cell.

    Notes
    -----
    CellProfiler's IdentifySecondaryObjects (Propagation; Jones, Carpenter and Golland 2005)
    grows each nucleus over the pixels it reaches most cheaply, the cost mixing intensity
    changes and distance. Here: a compact watershed (Neubert and Protzel 2014) of the
    gradient magnitude of the smoothed signal from the nuclei, priority = gradient +
    ``compactness`` × distance to the seed, within the foreground (the signal above
    ``threshold_factor`` × its Otsu threshold, plus the nuclei), at a pixel size of at least
    ``working_pixel_um``. A cell is the pixels its nucleus reaches; foreground no nucleus
    reaches stays background.
    """
    labels = np.asarray(nucleus_labels).astype(np.int32, copy=False)
    if not labels.any():
        return np.zeros(labels.shape, np.int32)
    signal = np.asarray(cytoplasm, dtype=np.float32)
    scale = min(1.0, pixel_size_um / settings.working_pixel_um)
    seeds = labels
    if scale < 1.0:
        signal = _shrink(signal, scale)
        seeds = _resample(labels, signal.shape)
    work_pixel_um = pixel_size_um / scale
    signal = ndi.gaussian_filter(signal, settings.smoothing_um / work_pixel_um)
    if float(signal.max()) <= float(signal.min()):
        return labels.copy()
    foreground = signal > settings.threshold_factor * filters.threshold_otsu(signal)
    foreground |= seeds > 0
    edges = filters.sobel(signal / float(signal.max() - signal.min()))
    cells = watershed(edges, seeds, mask=foreground, compactness=settings.compactness * work_pixel_um)
    if scale < 1.0:
        cells = _resample(cells, labels.shape)
    # Every nucleus is inside its own cell, also where the coarse grid missed or moved it.
    cells = np.where(labels > 0, labels, cells)
    return cells.astype(np.int32, copy=False)


def _shrink(image: np.ndarray, scale: float) -> np.ndarray:
    """Area-average the image down by ``scale`` (anti-aliased, like a binned camera)."""
    height = max(1, round(image.shape[0] * scale))
    width = max(1, round(image.shape[1] * scale))
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def _resample(labels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Nearest-neighbour resampling of a label image to ``shape`` (pixel centres aligned)."""
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * labels.shape[0] / shape[0]).astype(np.intp),
                      labels.shape[0] - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * labels.shape[1] / shape[1]).astype(np.intp),
                      labels.shape[1] - 1)
    return labels[np.ix_(rows, cols)]


def _noise_sigma(image: np.ndarray) -> float:
    """Pixel noise by the median absolute difference of horizontal neighbours (robust to edges)."""
    if image.shape[1] < 2:
        return 0.0
    return float(np.median(np.abs(np.diff(image, axis=1)))) * 1.4826 / math.sqrt(2)


def _drop_small(mask: np.ndarray, min_px: float) -> np.ndarray:
    components, n = ndi.label(mask)
    if n == 0:
        return mask
    areas = np.bincount(components.ravel())
    keep = areas >= min_px
    keep[0] = False
    return keep[components]


def _keep_sizes(labels: np.ndarray, min_px: float, max_px: float) -> np.ndarray:
    """Drop labels outside [min_px, max_px] and number the rest 1..N as int32."""
    areas = np.bincount(labels.ravel())
    drop = (areas < min_px) | (areas > max_px)
    drop[0] = True
    kept = np.where(drop[labels], 0, labels)
    return relabel_sequential(kept)[0].astype(np.int32, copy=False)
