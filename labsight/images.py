"""Image inputs: decoding labsight.v1.Image (tensor or PNG/TIFF/JPEG bytes) with checks."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import tifffile
from PIL import Image as PILImage
from PIL import ImageMode

from labsight.config import env_int
from labsight.errors import InvalidArgument
from labsight.tensors import from_tensor, to_tensor
from labsight.v1 import tensor_pb2

DEFAULT_MAX_IMAGE_BYTES = 128 * 1024 * 1024
"""Largest decoded image (height x width x channels x bytes per sample) accepted by default:
an 8-bit RGB image of 6688 x 6688 pixels, or a 16-bit grey one of 8192 x 8192."""

MAX_IMAGE_BYTES_ENV = "LABSIGHT_MAX_IMAGE_BYTES"

MAX_CHANNELS = 8

IMAGE_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))

_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"II+\x00", "tiff"),
    (b"MM\x00+", "tiff"),
)
_FORMAT_ALIASES = {"png": "png", "jpg": "jpeg", "jpeg": "jpeg", "tif": "tiff", "tiff": "tiff"}

_CONVERTED_MODES = {"P": "RGB", "PA": "RGBA", "LA": "RGBA", "CMYK": "RGB", "YCbCr": "RGB", "1": "RGB"}
"""Pillow modes that are converted after decoding, and what they become."""

# The decoded-size limit here replaces Pillow's pixel-count guard, which would warn about,
# or refuse with a misleading message, images an operator has allowed.
PILImage.MAX_IMAGE_PIXELS = None

T = TypeVar("T")


def max_image_bytes() -> int:
    """The decoded-size limit of one image: $LABSIGHT_MAX_IMAGE_BYTES or the default."""
    return env_int(MAX_IMAGE_BYTES_ENV, DEFAULT_MAX_IMAGE_BYTES)


@dataclass(frozen=True)
class ImageInfo:
    """What decoding an image gives, known from its header (or tensor) before any pixel is read.

    Attributes
    ----------
    shape : tuple of int
        (H, W) or (H, W, C) of the decoded pixels.
    dtype : numpy.dtype
        Their dtype.
    decode_bytes : int
        The most memory decoding takes at once: the decoded pixels, or a larger
        intermediate (a TIFF tile bigger than the image, a mode before conversion).
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    decode_bytes: int

    @property
    def height(self) -> int:
        """Rows of pixels."""
        return self.shape[0]

    @property
    def width(self) -> int:
        """Columns of pixels."""
        return self.shape[1]

    @property
    def channels(self) -> int:
        """Samples per pixel (1 for an (H, W) image)."""
        return self.shape[2] if len(self.shape) == 3 else 1


def detect_format(data: bytes) -> str | None:
    """The image format named by the bytes' signature, or None."""
    for signature, name in _SIGNATURES:
        if data.startswith(signature):
            return name
    return None


def image_info(
    image: tensor_pb2.Image, field: str = "image", max_bytes: int | None = None
) -> ImageInfo:
    """Shape and dtype of an Image message, read from its header without decoding pixels.

    The checks of :func:`decode_image` all happen here, so a request can be
    validated at the cost of its header.

    Raises
    ------
    InvalidArgument
        Missing or empty image, unknown format, a header that does not parse,
        or pixels :func:`decode_image` would refuse: over ``max_bytes`` decoded
        (default :func:`max_image_bytes`), another rank or dtype, more than 8 channels.
    """
    limit = max_image_bytes() if max_bytes is None else max_bytes
    source = image.WhichOneof("source")
    if source is None:
        raise InvalidArgument(f"{field}: no image given (set tensor or encoded)")
    if source == "tensor":
        pixels = from_tensor(image.tensor, f"{field}.tensor", max_bytes=limit)
        return check_info(ImageInfo(pixels.shape, pixels.dtype, pixels.nbytes), field, limit)
    data, fmt = _encoded_bytes(image.encoded, f"{field}.encoded")
    info = _guarded(fmt, f"{field}.encoded", lambda: _read_header(data, fmt))
    return check_info(info, field, limit)


def check_info(info: ImageInfo, field: str, max_bytes: int) -> ImageInfo:
    """Refuse an image whose rank, channels, dtype or decoded size is not accepted; returns ``info``."""
    if len(info.shape) not in (2, 3):
        raise InvalidArgument(f"{field}: expected (H, W) or (H, W, C) pixels, got shape {list(info.shape)}")
    if info.height == 0 or info.width == 0:
        raise InvalidArgument(f"{field}: image is empty ({info.height}x{info.width} pixels)")
    if not 1 <= info.channels <= MAX_CHANNELS:
        raise InvalidArgument(f"{field}: {info.channels} channels; expected 1 to {MAX_CHANNELS}")
    if info.dtype not in IMAGE_DTYPES:
        raise InvalidArgument(f"{field}: dtype {info.dtype} not supported; expected uint8 or uint16")
    if info.decode_bytes > max_bytes:
        raise InvalidArgument(
            f"{field}: image of {info.height}x{info.width} pixels with {info.channels} channel(s) of "
            f"{info.dtype} takes {info.decode_bytes} bytes decoded, over the limit of {max_bytes} "
            f"bytes (raise {MAX_IMAGE_BYTES_ENV} to accept it)"
        )
    return info


def decode_image(
    image: tensor_pb2.Image, field: str = "image", max_bytes: int | None = None
) -> np.ndarray:
    """Pixels of an Image message as (H, W) or (H, W, C) uint8 or uint16.

    The header is checked first (:func:`image_info`), so an image over the
    limit is refused before any of its pixels is decoded.

    Raises
    ------
    InvalidArgument
        As :func:`image_info`, or bytes that do not decode.
    """
    info = image_info(image, field, max_bytes)
    if image.WhichOneof("source") == "tensor":
        return from_tensor(image.tensor, f"{field}.tensor")
    data, fmt = _encoded_bytes(image.encoded, f"{field}.encoded")
    pixels = _guarded(fmt, f"{field}.encoded", lambda: _decode(data, fmt))
    if pixels.shape != info.shape or pixels.dtype != info.dtype:
        # The header promised something else: never hand on what was not checked.
        raise InvalidArgument(
            f"{field}.encoded.data: corrupt {fmt.upper()} image (header says {list(info.shape)} "
            f"{info.dtype}, decoded {list(pixels.shape)} {pixels.dtype})"
        )
    return pixels


def _encoded_bytes(encoded: tensor_pb2.EncodedImage, field: str) -> tuple[bytes, str]:
    """The encoded bytes and their format (from the signature, else the hint)."""
    data = bytes(encoded.data)
    if not data:
        raise InvalidArgument(f"{field}.data: empty image bytes")
    hint = encoded.format.lower().strip()
    if hint and hint not in _FORMAT_ALIASES:
        raise InvalidArgument(f"{field}.format: unknown format {encoded.format!r}")
    fmt = detect_format(data) or _FORMAT_ALIASES.get(hint)
    if fmt is None:
        raise InvalidArgument(f"{field}.data: not a PNG, TIFF or JPEG file (unknown signature)")
    return data, fmt


def _guarded(fmt: str, field: str, read: Callable[[], T]) -> T:
    """``read()``, with any decoder failure reported as the input's fault."""
    try:
        return read()
    except InvalidArgument:
        raise
    except Exception as exc:  # any decoder failure is the input's fault
        raise InvalidArgument(f"{field}.data: corrupt {fmt.upper()} image ({exc})") from exc


def _read_header(data: bytes, fmt: str) -> ImageInfo:
    if fmt == "tiff":
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            return _tiff_info(tif.pages.first)
    with PILImage.open(io.BytesIO(data)) as img:
        return _pillow_info(img)


def _tiff_info(page: tifffile.TiffPage) -> ImageInfo:
    """Decoded shape of a TIFF's first page (samples last), counting its largest strip or tile."""
    if page.dtype is None:
        raise ValueError(f"unsupported sample format ({page.bitspersample} bits per sample)")
    axes = dict(zip(page.axes, page.shape, strict=True))
    if set(axes) - set("YXS"):
        raise InvalidArgument(f"TIFF page with axes {page.axes} {list(page.shape)}; expected a 2-D image")
    shape = (axes.get("Y", 1), axes.get("X", 1)) + ((axes["S"],) if "S" in axes else ())
    dtype = np.dtype(page.dtype)
    return ImageInfo(shape, dtype, max(math.prod(shape), math.prod(page.chunks)) * dtype.itemsize)


def _pillow_info(img: PILImage.Image) -> ImageInfo:
    """Decoded shape of a PNG or JPEG from Pillow's header, after the mode conversion of _decode."""
    width, height = img.size
    raw = ImageMode.getmode(img.mode)
    final = ImageMode.getmode(_CONVERTED_MODES.get(img.mode, img.mode))
    dtype = np.dtype(final.typestr).newbyteorder("=")
    channels = len(final.bands)
    shape = (height, width) if channels == 1 else (height, width, channels)
    per_pixel = max(len(raw.bands) * np.dtype(raw.typestr).itemsize, channels * dtype.itemsize)
    return ImageInfo(shape, dtype, height * width * per_pixel)


def _decode(data: bytes, fmt: str) -> np.ndarray:
    if fmt == "tiff":
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages.first
            pixels = page.asarray()
            if page.axes.startswith("S"):  # separate planes: samples last, as every other image
                pixels = np.moveaxis(pixels, 0, -1)
            return pixels
    with PILImage.open(io.BytesIO(data)) as img:
        img.load()
        if img.mode in _CONVERTED_MODES:
            img = img.convert(_CONVERTED_MODES[img.mode])
        if img.mode.startswith("I;16"):
            return np.asarray(img, dtype=np.uint16)
        return np.asarray(img)


def image_stack(tensor: tensor_pb2.Tensor, field: str) -> np.ndarray:
    """An (N, H, W[, C]) stack of same-size images from a Tensor, checked like one image.

    Raises
    ------
    InvalidArgument
        Naming ``field`` for a malformed tensor, a rank other than 3 or 4, no
        image, or a first image :func:`check_info` refuses.
    """
    stack = from_tensor(tensor, field)
    if stack.ndim not in (3, 4) or len(stack) == 0:
        raise InvalidArgument(f"{field}: expected (N, H, W) or (N, H, W, C), got {list(stack.shape)}")
    check_info(ImageInfo(stack.shape[1:], stack.dtype, stack[0].nbytes), f"{field}[0]", max_image_bytes())
    return stack


def image_from_array(pixels: np.ndarray, name: str = "") -> tensor_pb2.Image:
    """An Image message carrying decoded pixels."""
    return tensor_pb2.Image(tensor=to_tensor(pixels), name=name)


def image_from_file(path: str | Path) -> tensor_pb2.Image:
    """An Image message for a file: .npy as a tensor, anything else as encoded bytes."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        return image_from_array(np.load(path, allow_pickle=False), name=path.name)
    data = path.read_bytes()
    fmt = _FORMAT_ALIASES.get(path.suffix.lower().lstrip("."), "")
    return tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=data, format=fmt), name=path.name)


def encode_png(pixels: np.ndarray) -> bytes:
    """PNG bytes of a uint8/uint16 grey or RGB(A) array."""
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()
