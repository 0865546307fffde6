"""The four channels of a cells image (red, green, blue, yellow), from one 4-channel image or one
image per channel, checked by their headers before any pixel is decoded."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from labsight.columns import CELL_CHANNELS
from labsight.errors import InvalidArgument
from labsight.images import (
    MAX_IMAGE_BYTES_ENV,
    ImageInfo,
    image_info,
    max_image_bytes,
    read_image,
    stated_pixel_size,
)
from labsight.pixel_size import PixelSize, first_stated
from labsight.v1 import tensor_pb2

ChannelParts = Sequence[tuple[str, tensor_pb2.Image]]
"""(field name, image) pairs: one image with the four channels, or four one-channel images in
the order of CELL_CHANNELS."""

CELL_METHODS = ("classical", "flows", "hpa")
"""The segmentation methods of SegmentCells, checked at submit (a test pins them to the
segmentation service's services.segmentation.cells.CELL_METHODS)."""

LABEL_BYTES_PER_PIXEL = 8
"""Bytes per pixel of a cells answer: two int32 label masks."""


def cell_image_info(parts: ChannelParts, max_bytes: int | None = None,
                    choices_field: str = "") -> ImageInfo:
    """The (H, W, 4) shape and dtype the parts decode to, from their headers.

    Parameters
    ----------
    parts : sequence of (str, Image)
        One image whose ``read`` options leave 4 channels, or four one-channel
        images of the same size and dtype (red, green, blue, yellow). A 4-sample
        image whose 4th sample is marked alpha, read with no channels chosen, keeps
        all 4 (its ``read.channels`` becomes 0,1,2,3).
    max_bytes : int, optional
        Limit on the decoded size of the four channels together (default
        :func:`labsight.images.max_image_bytes`).
    choices_field : str
        How messages name the read options (see :func:`labsight.images.image_info`).

    Raises
    ------
    InvalidArgument
        Naming the field: a header :func:`labsight.images.image_info` refuses,
        a channel count other than 4 (or 1 per channel image), channel images
        whose sizes or dtypes differ, or channels over ``max_bytes`` together.
    """
    limit = max_image_bytes() if max_bytes is None else max_bytes
    names = ", ".join(f"{i} {c}" for i, c in enumerate(CELL_CHANNELS))
    if len(parts) == 1:
        field, image = parts[0]
        info = image_info(image, field, limit, choices_field)
        if info.channels == len(CELL_CHANNELS) - 1 and not image.read.channels:
            info = _with_alpha_as_yellow(image, field, limit, choices_field, info)
        if info.channels != len(CELL_CHANNELS):
            raise InvalidArgument(
                f"{field}: {info.channels} channel(s); cells need 4 ({names}): send a 4-channel "
                "image, pick 4 channels with the channels option (e.g. channels=0,1,2,3), or "
                "one image per channel"
            )
        return info
    if len(parts) != len(CELL_CHANNELS):
        raise InvalidArgument(f"{_common(parts)}: {len(parts)} images; expected one per channel "
                              f"({names})")
    infos = [image_info(image, field, limit, choices_field) for field, image in parts]
    first_field, first = parts[0][0], infos[0]
    for (field, _), info, channel in zip(parts, infos, CELL_CHANNELS, strict=True):
        if info.channels != 1:
            raise InvalidArgument(f"{field}: {info.channels} channels; the {channel} channel must be "
                                  "a one-channel (grey) image")
        if info.shape != first.shape:
            raise InvalidArgument(f"{field}: {info.height}x{info.width} pixels, but {first_field} "
                                  f"is {first.height}x{first.width}; all channels must have one size")
        if info.dtype != first.dtype:
            raise InvalidArgument(f"{field}: dtype {info.dtype}, but {first_field} is {first.dtype}; "
                                  "all channels must have one bit depth")
    total = sum(info.decode_bytes for info in infos)
    if total > limit:
        raise InvalidArgument(
            f"{_common(parts)}: 4 channels of {first.height}x{first.width} {first.dtype} take {total} "
            f"bytes decoded, over the limit of {limit} bytes (raise {MAX_IMAGE_BYTES_ENV} to accept them)"
        )
    return ImageInfo((first.height, first.width, len(CELL_CHANNELS)), first.dtype, total)


def read_cell_image(parts: ChannelParts, max_bytes: int | None = None,
                    choices_field: str = "", max_answer_bytes: int | None = None) -> np.ndarray:
    """The (H, W, 4) pixels of ``parts``, checked first by :func:`cell_image_info` (and, with
    ``max_answer_bytes``, by :func:`check_answer_size`) from their headers. Read without
    warnings (:func:`labsight.images.read_image` with ``warn=False``): a job's warnings come
    from the worker's reading of its input, and the services that read cell images answer
    none."""
    info = cell_image_info(parts, max_bytes, choices_field)
    if max_answer_bytes is not None:
        check_answer_size(info, parts[0][0], max_answer_bytes)
    limit = max_image_bytes() if max_bytes is None else max_bytes
    pixels = [read_image(image, field, limit, choices_field, warn=False).pixels for field, image in parts]
    if len(pixels) == 1:
        return pixels[0]
    return np.stack(pixels, axis=-1)


def read_role_image(field: str, image: tensor_pb2.Image, max_answer_bytes: int,
                    max_bytes: int | None = None) -> np.ndarray:
    """The (H, W, C) pixels of an image whose channels are named by role (SegmentCells'
    ``roles``: any channel count), checked first from its header as :func:`read_cell_image`
    checks a cells image; a grey image gives C = 1."""
    limit = max_image_bytes() if max_bytes is None else max_bytes
    check_answer_size(image_info(image, field, limit), field, max_answer_bytes)
    pixels = read_image(image, field, limit, warn=False).pixels
    return pixels if pixels.ndim == 3 else pixels[..., np.newaxis]


def cell_image_pixel_size(parts: ChannelParts) -> PixelSize | None:
    """The pixel size the parts' files state, from their headers (the first that states one; see
    :func:`labsight.pixel_size.first_stated`); None for pixel tensors or files that state none."""
    return first_stated([(field, stated_pixel_size(image, field)) for field, image in parts])[0]


def _with_alpha_as_yellow(image: tensor_pb2.Image, field: str, limit: int, choices_field: str,
                          info: ImageInfo) -> ImageInfo:
    """A 4-sample image whose 4th sample is marked alpha (tifffile writes (H, W, 4) so; an RGBA
    PNG) is read with its 4 samples, the 4th yellow: ``image.read.channels`` is set to
    0,1,2,3 so every later reading agrees. Other 3-channel images keep ``info``."""
    every = tensor_pb2.Image()
    every.CopyFrom(image)
    every.read.channels = ",".join(str(i) for i in range(len(CELL_CHANNELS)))
    try:
        widened = image_info(every, field, limit, choices_field)
    except InvalidArgument:
        return info
    if widened.channels != len(CELL_CHANNELS):
        return info
    image.read.channels = every.read.channels
    return widened


def check_answer_size(info: ImageInfo, field: str, max_answer_bytes: int) -> None:
    """Refuse an image whose two int32 label masks would not fit one answer."""
    answer = info.height * info.width * LABEL_BYTES_PER_PIXEL
    if answer > max_answer_bytes:
        raise InvalidArgument(
            f"{field}: {info.height}x{info.width} pixels give label masks of {answer} bytes, over "
            f"the {max_answer_bytes} bytes an answer may carry (raise LABSIGHT_MAX_MESSAGE_BYTES, "
            "or send a smaller image)"
        )


def _common(parts: ChannelParts) -> str:
    """The field the parts share (``channel_images`` of ``channel_images[0]``)."""
    return parts[0][0].split("[", 1)[0] if parts else "channel_images"
