"""Header checks of a vessel-content request: an RGB photo and a one-channel vessel mask of its size.

Shared by the gateway (at submit, ``vessel-content`` jobs) and the segmentation
service (SegmentVesselContent), so both refuse the same inputs with the same
reasons before any pixel is decoded. An empty mask needs its pixels: the
service refuses it.
"""

from __future__ import annotations

import numpy as np

from labsight.errors import InvalidArgument
from labsight.images import ImageInfo

__all__ = ["VESSEL_ANSWER_MASKS", "check_vessel_headers"]

VESSEL_ANSWER_MASKS = 15
"""Masks one answer is sized for: up to 10 instances (the seed's heads) and 5 semantic classes."""


def check_vessel_headers(photo: ImageInfo, mask: ImageInfo, photo_field: str, mask_field: str,
                         max_answer_bytes: int | None = None) -> None:
    """Refuse a photo that is not 8-bit RGB, a mask with several channels or of another size.

    The shapes are those decoding gives: a PNG's or TIFF's opaque alpha is not
    counted (it is dropped), a 4-channel tensor is not a photo.

    Parameters
    ----------
    photo, mask : ImageInfo
        Headers of the photo and of the vessel mask.
    photo_field, mask_field : str
        Their names in the request, used in the messages.
    max_answer_bytes : int, optional
        Refuse a photo whose masks (:data:`VESSEL_ANSWER_MASKS` of its size)
        would not fit an answer of this many bytes.

    Raises
    ------
    InvalidArgument
        Naming the field and the reason.
    """
    if len(photo.shape) != 3 or photo.shape[2] != 3:  # an opaque alpha is already left out
        channels = 1 if len(photo.shape) == 2 else photo.shape[-1]
        raise InvalidArgument(f"{photo_field}: {channels} channel(s) of shape {list(photo.shape)}; "
                              "the photo must be RGB (H, W, 3)")
    if photo.dtype != np.uint8:
        raise InvalidArgument(f"{photo_field}: {photo.dtype} pixels; the photo must be 8-bit RGB")
    if len(mask.shape) == 3 and mask.shape[2] != 1:
        raise InvalidArgument(f"{mask_field}: {mask.shape[2]} channels; the vessel mask must have "
                              "one channel (H, W), non-zero inside the vessel")
    if len(mask.shape) not in (2, 3):
        raise InvalidArgument(f"{mask_field}: shape {list(mask.shape)}; the vessel mask must be "
                              "(H, W), non-zero inside the vessel")
    if tuple(mask.shape[:2]) != tuple(photo.shape[:2]):
        raise InvalidArgument(f"{mask_field}: {mask.shape[0]}×{mask.shape[1]} px, the photo "
                              f"({photo_field}) is {photo.shape[0]}×{photo.shape[1]}; the vessel "
                              "mask must have the photo's size")
    answer = VESSEL_ANSWER_MASKS * photo.shape[0] * photo.shape[1]
    if max_answer_bytes is not None and answer > max_answer_bytes:
        raise InvalidArgument(f"{photo_field}: {photo.shape[0]}×{photo.shape[1]} px; its masks "
                              f"({answer} bytes) would not fit an answer of {max_answer_bytes} "
                              "bytes: shrink the photo and its mask")
