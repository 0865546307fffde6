"""Nuclei and cells of an image whose channels are named by role, not by HPA's layout.

A lab's image is rarely HPA's red, green, blue, yellow: a DAPI image alone, DAPI and a
protein, DAPI with a membrane or cytoplasm stain and some proteins. ``segment_by_roles`` takes
the (H, W, C) image and which channel is the nuclear stain and which (if any) show the
cytoplasm. With cytoplasm channels it runs the cell methods as for HPA's image (the
cytoplasm as HPA's red + yellow); without, it labels the nuclei and grows each into its cell
by a distance, as CellProfiler's IdentifySecondaryObjects "Distance-N" and scikit-image's
``expand_labels`` do, so a nucleus-only image still gives a cytoplasmic ring to measure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from skimage.segmentation import expand_labels

from labsight.errors import InvalidArgument
from services.segmentation.cells import segment_cells, segment_nuclei

__all__ = ["MAX_CYTOPLASM_CHANNELS", "MAX_EXPAND_UM", "ChannelRoles", "segment_by_roles"]

MAX_CYTOPLASM_CHANNELS = 2
"""Cytoplasm channels the cell methods take (HPA's red and yellow)."""

MAX_EXPAND_UM = 100.0
"""The farthest a nucleus may grow into its cell (µm): far beyond any cell's radius."""


@dataclass(frozen=True)
class ChannelRoles:
    """Which channels of an image are what.

    Attributes
    ----------
    nucleus : int
        Index of the nuclear stain.
    cytoplasm : tuple of int
        Up to two channels of a cytoplasm or membrane stain; empty for none.
    expand_um : float
        Without cytoplasm channels, how far each nucleus grows into its cell (µm); 0 keeps
        each cell its nucleus.
    """

    nucleus: int
    cytoplasm: tuple[int, ...] = ()
    expand_um: float = 0.0

    def check(self, channel_count: int, field: str = "roles") -> None:
        """Raise InvalidArgument naming ``field`` where a role names no channel of the image,
        there are more than two cytoplasm channels, or ``expand_um`` is negative, not finite,
        over :data:`MAX_EXPAND_UM` or given with cytoplasm channels."""
        for name, index in (("nucleus", self.nucleus), *(("cytoplasm", i) for i in self.cytoplasm)):
            if not 0 <= index < channel_count:
                raise InvalidArgument(f"{field}.{name}: channel {index}, but the image has "
                                      f"{channel_count} channel(s), 0 to {channel_count - 1}")
        if len(self.cytoplasm) > MAX_CYTOPLASM_CHANNELS:
            raise InvalidArgument(f"{field}.cytoplasm: {len(self.cytoplasm)} channels; give at "
                                  f"most {MAX_CYTOPLASM_CHANNELS}")
        if not np.isfinite(self.expand_um) or not 0 <= self.expand_um <= MAX_EXPAND_UM:
            raise InvalidArgument(f"{field}.expand_um: expected 0 to {MAX_EXPAND_UM:g} µm, got "
                                  f"{self.expand_um:g}")
        if self.expand_um and self.cytoplasm:
            raise InvalidArgument(f"{field}.expand_um: cells grow by a distance only without "
                                  "cytoplasm channels; with them they follow the cytoplasm")


def segment_by_roles(
    channels: np.ndarray,
    roles: ChannelRoles,
    *,
    pixel_size_um: float,
    method: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Nucleus and cell labels of an (H, W, C) image by its channels' roles.

    Parameters
    ----------
    channels : ndarray, shape (H, W, C)
        The image; uint8, uint16 or float.
    roles : ChannelRoles
        Its nuclear stain and cytoplasm channels (checked here against C).
    pixel_size_um : float
        Side of a pixel in micrometres; object sizes and ``roles.expand_um`` follow it.
    method : str
        A segmentation method (``services.segmentation.cells.CELL_METHODS``).

    Returns
    -------
    nucleus_labels, cell_labels : ndarray of int32, shape (H, W)
        0 = background; cell k contains nucleus k. With cytoplasm channels, as
        ``segment_cells`` on them (one channel stands for both of HPA's); without, the
        nuclei grown by ``roles.expand_um`` (never into another cell).

    Raises
    ------
    InvalidArgument
        Roles that do not fit the image (``ChannelRoles.check``) or what the segmentation
        functions refuse.

    Examples
    --------
    >>> image = np.zeros((64, 64, 2), np.uint8)
    >>> image[20:36, 20:36, 0] = 200
    >>> nuclei, cells = segment_by_roles(image, ChannelRoles(0, expand_um=2.0),
    ...                                  pixel_size_um=0.5, method="classical")
    >>> int((nuclei > 0).sum()) < int((cells > 0).sum())
    True
    """
    if channels.ndim != 3:
        raise InvalidArgument(f"image: expected (H, W, C) channels, got shape {list(channels.shape)}")
    roles.check(channels.shape[2])
    nuclear = channels[..., roles.nucleus]
    if roles.cytoplasm:
        first, second = _two(roles.cytoplasm)
        return segment_cells(channels[..., first], channels[..., second], nuclear,
                             pixel_size_um=pixel_size_um, method=method)
    nuclei = segment_nuclei(nuclear, pixel_size_um=pixel_size_um, method=method)
    distance = roles.expand_um / pixel_size_um
    cells = expand_labels(nuclei, distance=distance) if distance > 0 else nuclei.copy()
    return nuclei, cells


def _two(cytoplasm: Sequence[int]) -> tuple[int, int]:
    """The cytoplasm channels as the cell methods' two (HPA's red and yellow): one stands for
    both, so each method sees the same signal whichever of the two it weighs."""
    return (cytoplasm[0], cytoplasm[-1])
