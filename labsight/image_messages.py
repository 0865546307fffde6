"""Image messages a client sends: arrays as tensors, files as their encoded bytes, never decoded.

The light client (``labsight-client``) builds its requests with this module alone;
decoding and checking images is the servers' part (``labsight.images``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from labsight.arrays import require_numpy
from labsight.v1 import tensor_pb2

if TYPE_CHECKING:
    import numpy as np

SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"II+\x00", "tiff"),
    (b"MM\x00+", "tiff"),
)
"""The first bytes of each image format a service decodes."""

SIGNATURE_LENGTH = max(len(signature) for signature, _ in SIGNATURES)
"""Bytes enough to tell every format in SIGNATURES."""

FORMAT_ALIASES = {"png": "png", "jpg": "jpeg", "jpeg": "jpeg", "tif": "tiff", "tiff": "tiff"}
"""Format names by file suffix (and by the format names themselves)."""


def detect_format(data: bytes | memoryview) -> str | None:
    """The image format named by the bytes' signature, or None."""
    head = bytes(data[:SIGNATURE_LENGTH])
    for signature, name in SIGNATURES:
        if head.startswith(signature):
            return name
    return None


def image_from_array(pixels: np.ndarray, name: str = "") -> tensor_pb2.Image:
    """An Image message carrying decoded pixels."""
    from labsight.tensors import to_tensor  # numpy: the light client's arrays extra

    return tensor_pb2.Image(tensor=to_tensor(pixels), name=name)


def image_from_file(path: str | Path) -> tensor_pb2.Image:
    """An Image message for a file: .npy as a tensor, anything else as encoded bytes."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        np = require_numpy(f"{path.name}: a .npy file")
        return image_from_array(np.load(path, allow_pickle=False), name=path.name)
    data = path.read_bytes()
    fmt = FORMAT_ALIASES.get(path.suffix.lower().lstrip("."), "")
    return tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=data, format=fmt), name=path.name)
