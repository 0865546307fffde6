"""Image inputs: decoding labsight.v1.Image (tensor or PNG/TIFF/JPEG bytes) with checks."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image as PILImage

from labsight.errors import InvalidArgument
from labsight.tensors import from_tensor, to_tensor
from labsight.v1 import tensor_pb2

DEFAULT_MAX_PIXELS = 256 * 1024 * 1024
"""Largest accepted image (height x width); larger inputs are rejected before decoding."""

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


def detect_format(data: bytes) -> str | None:
    """The image format named by the bytes' signature, or None."""
    for signature, name in _SIGNATURES:
        if data.startswith(signature):
            return name
    return None


def _check_pixels(height: int, width: int, field: str, max_pixels: int) -> None:
    if height * width > max_pixels:
        raise InvalidArgument(
            f"{field}: image of {height}x{width} pixels exceeds the limit of {max_pixels} pixels"
        )
    if height == 0 or width == 0:
        raise InvalidArgument(f"{field}: image is empty ({height}x{width} pixels)")


def _decode_tiff(data: bytes, field: str, max_pixels: int) -> np.ndarray:
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        if not tif.pages:
            raise InvalidArgument(f"{field}: TIFF has no pages")
        shape = tif.pages[0].shape
        _check_pixels(int(shape[0]), int(shape[1]) if len(shape) > 1 else 1, field, max_pixels)
        return tif.pages[0].asarray()


def _decode_pillow(data: bytes, field: str, max_pixels: int) -> np.ndarray:
    with PILImage.open(io.BytesIO(data)) as img:
        width, height = img.size
        _check_pixels(height, width, field, max_pixels)
        img.load()
        if img.mode in ("P", "PA", "LA", "CMYK", "YCbCr", "1"):
            img = img.convert("RGBA" if "A" in img.mode else "RGB")
        if img.mode == "I;16" or img.mode.startswith("I;16"):
            return np.asarray(img, dtype=np.uint16)
        return np.asarray(img)


def decode_image(
    image: tensor_pb2.Image, field: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Pixels of an Image message as (H, W) or (H, W, C) uint8 or uint16.

    Raises
    ------
    InvalidArgument
        Missing or empty image, unknown format, bytes that do not decode,
        an image over ``max_pixels``, or pixels of another dtype or rank.
    """
    source = image.WhichOneof("source")
    if source is None:
        raise InvalidArgument(f"{field}: no image given (set tensor or encoded)")
    if source == "tensor":
        pixels = from_tensor(image.tensor, f"{field}.tensor", max_bytes=max_pixels * 8)
    else:
        pixels = _decode_encoded(image.encoded, f"{field}.encoded", max_pixels)
    return validate_pixels(pixels, field, max_pixels)


def _decode_encoded(encoded: tensor_pb2.EncodedImage, field: str, max_pixels: int) -> np.ndarray:
    data = bytes(encoded.data)
    if not data:
        raise InvalidArgument(f"{field}.data: empty image bytes")
    hint = encoded.format.lower().strip()
    if hint and hint not in _FORMAT_ALIASES:
        raise InvalidArgument(f"{field}.format: unknown format {encoded.format!r}")
    fmt = detect_format(data) or _FORMAT_ALIASES.get(hint)
    if fmt is None:
        raise InvalidArgument(f"{field}.data: not a PNG, TIFF or JPEG file (unknown signature)")
    try:
        if fmt == "tiff":
            return _decode_tiff(data, field, max_pixels)
        return _decode_pillow(data, field, max_pixels)
    except InvalidArgument:
        raise
    except Exception as exc:  # any decoder failure is the input's fault
        raise InvalidArgument(f"{field}.data: corrupt {fmt.upper()} image ({exc})") from exc


def validate_pixels(pixels: np.ndarray, field: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Check rank, size and dtype of decoded pixels; returns them unchanged."""
    if pixels.ndim not in (2, 3):
        raise InvalidArgument(
            f"{field}: expected (H, W) or (H, W, C) pixels, got shape {list(pixels.shape)}"
        )
    _check_pixels(pixels.shape[0], pixels.shape[1], field, max_pixels)
    if pixels.ndim == 3 and not 1 <= pixels.shape[2] <= 8:
        raise InvalidArgument(f"{field}: {pixels.shape[2]} channels; expected 1 to 8")
    if pixels.dtype not in IMAGE_DTYPES:
        raise InvalidArgument(f"{field}: dtype {pixels.dtype} not supported; expected uint8 or uint16")
    return pixels


def image_stack(tensor: tensor_pb2.Tensor, field: str) -> np.ndarray:
    """An (N, H, W[, C]) stack of same-size images from a Tensor, checked like one image.

    Raises
    ------
    InvalidArgument
        Naming ``field`` for a malformed tensor, a rank other than 3 or 4, no
        image, or pixels ``validate_pixels`` refuses.
    """
    stack = from_tensor(tensor, field)
    if stack.ndim not in (3, 4) or len(stack) == 0:
        raise InvalidArgument(f"{field}: expected (N, H, W) or (N, H, W, C), got {list(stack.shape)}")
    validate_pixels(stack[0], f"{field}[0]")
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
