"""Hostile images and tensors, built small: patched headers declare huge sizes without the
fuzzer ever allocating them; corrupt, truncated and odd-channel images; malformed tensors.

Every builder returns labelled values, ``(input class, Image or Tensor)``, so a finding
names the kind of input that caused it.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image as PILImage

from labsight.v1 import tensor_pb2

from .values import Labelled

VALID_SIDE = 32
"""Largest side of a valid image the fuzzer sends: keeps fractal and model calls cheap."""

_DTYPE_CODES = {
    np.dtype(np.uint8): tensor_pb2.DATA_TYPE_UINT8,
    np.dtype(np.uint16): tensor_pb2.DATA_TYPE_UINT16,
    np.dtype(np.int32): tensor_pb2.DATA_TYPE_INT32,
    np.dtype(np.uint32): tensor_pb2.DATA_TYPE_UINT32,
    np.dtype(np.int64): tensor_pb2.DATA_TYPE_INT64,
    np.dtype(np.float32): tensor_pb2.DATA_TYPE_FLOAT32,
    np.dtype(np.float64): tensor_pb2.DATA_TYPE_FLOAT64,
}


def tensor(array: np.ndarray) -> tensor_pb2.Tensor:
    """A well-formed little-endian Tensor of ``array`` (the contract's encoding)."""
    array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return tensor_pb2.Tensor(
        dtype=_DTYPE_CODES[np.dtype(array.dtype.name)], shape=list(array.shape), data=array.tobytes()
    )


def pixels(rng: np.random.Generator, side: int = 0, channels: int = 0,
           dtype: type = np.uint8) -> np.ndarray:
    """Random pixels, ``side`` x ``side`` (random up to VALID_SIDE when 0), grey or ``channels``."""
    side = side or int(rng.integers(9, VALID_SIDE + 1))
    shape = (side, side, channels) if channels else (side, side)
    high = 256 if dtype == np.uint8 else 65536
    return rng.integers(0, high, shape).astype(dtype)


def encoded(data: bytes, fmt: str = "", name: str = "") -> tensor_pb2.Image:
    """An Image carrying encoded bytes."""
    return tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=data, format=fmt), name=name)


def movie_tiff(rng: np.random.Generator, frames: int = 3, side: int = 24) -> tensor_pb2.Image:
    """A small random time-lapse: an ImageJ TIFF of ``frames`` (side x side) uint8 time points."""
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, rng.integers(0, 256, (frames, side, side), dtype=np.uint8),
                     imagej=True, metadata={"axes": "TYX"})
    return encoded(buffer.getvalue(), name="movie.tif")


def tensor_image(array: np.ndarray, name: str = "") -> tensor_pb2.Image:
    """An Image carrying decoded pixels."""
    return tensor_pb2.Image(tensor=tensor(array), name=name)


def save(array: np.ndarray, fmt: str, mode: str | None = None) -> bytes:
    """``array`` saved by Pillow as ``fmt`` (PNG, JPEG, TIFF)."""
    buffer = io.BytesIO()
    PILImage.fromarray(array, mode=mode).save(buffer, format=fmt)
    return buffer.getvalue()


def valid_image(rng: np.random.Generator, side: int = 0) -> tensor_pb2.Image:
    """A small grey or RGB image, uint8 or uint16, as a tensor or a PNG."""
    channels = int(rng.choice([0, 3]))
    dtype = np.uint16 if rng.random() < 0.25 and not channels else np.uint8
    array = pixels(rng, side, channels, dtype)
    if rng.random() < 0.5:
        return encoded(save(array, "PNG"), "png", name="valid.png")
    return tensor_image(array, name="valid")


def png_declaring(width: int, height: int, colour_type: int = 2) -> bytes:
    """A 4x4 PNG whose IHDR claims ``width`` x ``height`` (CRC fixed, so only the data lies)."""
    data = bytearray(save(np.zeros((4, 4, 3), np.uint8), "PNG"))
    ihdr = bytearray(data[12:29])  # type + 13 bytes of IHDR data
    ihdr[4:12] = struct.pack(">II", width, height)
    ihdr[13] = colour_type
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    return bytes(data)


def jpeg_declaring(width: int, height: int) -> bytes:
    """A tiny baseline JPEG whose SOF0 header claims ``width`` x ``height``."""
    data = bytearray(save(np.full((8, 8, 3), 128, np.uint8), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def tiff_declaring(width: int, height: int, samples: int = 1, bits: int = 8,
                   planar: int = 1, payload: bytes = b"\0" * 64, description: bytes = b"") -> bytes:
    """A little-endian one-strip TIFF whose tags claim the given size; its strip is ``payload``
    and its ImageDescription (ImageJ or OME metadata, which may lie too) ``description``."""
    entries = [
        (256, 4, 1, width),  # ImageWidth (LONG)
        (257, 4, 1, height),  # ImageLength
        (258, 3, 1, bits),  # BitsPerSample (one value is valid for every sample)
        (259, 3, 1, 1),  # Compression: none
        (262, 3, 1, 2 if samples >= 3 else 1),  # Photometric
        *([(270, 2, len(description) + 1, -1)] if description else []),  # ImageDescription
        (273, 4, 1, -2),  # StripOffsets
        (277, 3, 1, samples),  # SamplesPerPixel
        (278, 4, 1, height),  # RowsPerStrip
        (279, 4, 1, len(payload)),  # StripByteCounts: what is really there
        (284, 3, 1, planar),  # PlanarConfiguration
    ]
    text = description + b"\0" if description else b""
    text_offset = 8 + 2 + 12 * len(entries) + 4
    offsets = {-1: text_offset, -2: text_offset + len(text)}  # placeholders → where they land
    body = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        value = offsets.get(value, value)
        packed = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        body += struct.pack("<HHI", tag, kind, count) + packed
    body += struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + body + text + payload


def hostile_images(rng: np.random.Generator) -> list[Labelled]:
    """Every hostile image class once (random parts drawn from ``rng``)."""
    small = pixels(rng, 16, 3)
    png = save(small, "PNG")
    return [
        ("image:huge-header-png-13000", encoded(png_declaring(13000, 13000), "png")),
        ("image:huge-header-png-over-limit", encoded(png_declaring(70000, 70000), "png")),
        ("image:huge-header-png-16bit-rgba", encoded(png_declaring(9000, 9000, 6), "png")),
        ("image:huge-header-jpeg-12000", encoded(jpeg_declaring(12000, 12000), "jpeg")),
        ("image:huge-header-jpeg-4000", encoded(jpeg_declaring(4000, 4000), "jpeg")),
        ("image:huge-header-jpeg-65535", encoded(jpeg_declaring(65535, 65535), "jpeg")),
        ("image:huge-header-tiff-planar", encoded(tiff_declaring(200000, 1000, 3, planar=2), "tiff")),
        ("image:huge-header-tiff-300-samples", encoded(tiff_declaring(1000, 1000, 300), "tiff")),
        ("image:huge-header-tiff-65535-samples", encoded(tiff_declaring(2, 2, 65535), "tiff")),
        ("image:huge-header-tiff-12000", encoded(tiff_declaring(12000, 12000), "tiff")),
        ("image:huge-header-tiff-32bit", encoded(tiff_declaring(20000, 20000, 1, 32), "tiff")),
        ("image:tiff-zero-size", encoded(tiff_declaring(0, 0), "tiff")),
        ("image:tiff-imagej-lies", encoded(tiff_declaring(
            8, 8, payload=bytes(64), description=b"ImageJ=1.11a\nimages=1000000\nchannels=1000\n"
            b"slices=1000\nhyperstack=true\n"), "tiff")),
        ("image:tiff-ome-lies", encoded(tiff_declaring(8, 8, payload=bytes(64), description=(
            b'<?xml version="1.0"?><OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">'
            b'<Image ID="Image:0"><Pixels ID="Pixels:0" DimensionOrder="XYZCT" Type="uint16" '
            b'SizeX="100000" SizeY="100000" SizeZ="100000" SizeC="1000" SizeT="1000">'
            b'<TiffData/></Pixels></Image></OME>')), "tiff")),
        ("image:corrupt-png-body", encoded(png[:40] + rng.bytes(200), "png")),
        ("image:truncated-png", encoded(png[: len(png) // 2], "png")),
        ("image:signature-only", encoded(b"\x89PNG\r\n\x1a\n", "png")),
        ("image:random-bytes", encoded(rng.bytes(int(rng.integers(1, 2048))), "png")),
        ("image:empty-bytes", encoded(b"", "png")),
        ("image:format-mismatch", encoded(png, "tiff")),
        ("image:unknown-format", encoded(png, "gif")),
        ("image:long-format", encoded(png, "x" * 20000)),
        ("image:no-source", tensor_pb2.Image(name="nothing")),
        ("image:rgba-png", encoded(save(pixels(rng, 16, 4), "PNG"), "png")),
        ("image:grey-alpha-png", encoded(save(pixels(rng, 16, 2), "PNG", mode="LA"), "png")),
        ("image:2-channel", tensor_image(pixels(rng, 16, 2))),
        ("image:4-channel", tensor_image(pixels(rng, 16, 4))),
        ("image:5-channel", tensor_image(pixels(rng, 16, 5))),
        ("image:9-channel", tensor_image(pixels(rng, 16, 9))),
        ("image:1x1", tensor_image(pixels(rng, 1))),
        ("image:1-row", tensor_image(np.zeros((1, 32), np.uint8))),
        ("image:0x0", tensor_image(np.zeros((0, 0), np.uint8))),
        ("image:float32", tensor_image(rng.random((16, 16)).astype(np.float32))),
        ("image:int64", tensor_image(rng.integers(-5, 5, (16, 16)).astype(np.int64))),
        ("image:rank-1", tensor_image(np.zeros(64, np.uint8))),
        ("image:rank-4", tensor_image(np.zeros((2, 8, 8, 3), np.uint8))),
        ("image:uint16-extremes", tensor_image(np.full((16, 16), 65535, np.uint16))),
        ("image:huge-name", tensor_image(pixels(rng, 16), name="n" * 20000)),
        *[(f"image:{label}", tensor_pb2.Image(tensor=value)) for label, value
          in hostile_tensors(rng)],
    ]


def hostile_tensors(rng: np.random.Generator) -> list[tuple[str, tensor_pb2.Tensor]]:
    """Malformed and extreme tensors: wrong dtype, shape or byte length, huge declared sizes."""
    data = bytes(64)
    u8 = tensor_pb2.DATA_TYPE_UINT8
    return [
        ("tensor:unspecified-dtype", tensor_pb2.Tensor(dtype=0, shape=[8, 8], data=data)),
        ("tensor:unknown-dtype", tensor_pb2.Tensor(dtype=99, shape=[8, 8], data=data)),
        ("tensor:negative-dtype", tensor_pb2.Tensor(dtype=-7, shape=[8, 8], data=data)),
        ("tensor:short-data", tensor_pb2.Tensor(dtype=u8, shape=[8, 8], data=data[:63])),
        ("tensor:long-data", tensor_pb2.Tensor(dtype=u8, shape=[8, 8], data=data + b"\0")),
        ("tensor:negative-dim", tensor_pb2.Tensor(dtype=u8, shape=[-8, -8], data=data)),
        ("tensor:zero-dim", tensor_pb2.Tensor(dtype=u8, shape=[0, 8], data=b"")),
        ("tensor:no-shape", tensor_pb2.Tensor(dtype=u8, data=b"\1")),
        ("tensor:huge-declared", tensor_pb2.Tensor(dtype=u8, shape=[2**31, 2**31], data=data)),
        ("tensor:int64-max-dims", tensor_pb2.Tensor(dtype=u8, shape=[2**63 - 1, 2], data=b"")),
        ("tensor:overflowing-product",
         tensor_pb2.Tensor(dtype=u8, shape=[2**32, 2**32, 0], data=b"")),
        ("tensor:rank-9", tensor_pb2.Tensor(dtype=u8, shape=[1] * 9, data=b"\1")),
        ("tensor:bool", tensor_pb2.Tensor(dtype=tensor_pb2.DATA_TYPE_BOOL, shape=[8, 8],
                                          data=rng.bytes(64))),
        ("tensor:float-nan", tensor(np.full((4, 2), np.nan))),
        ("tensor:float-inf", tensor(np.array([[np.inf, -np.inf], [1e308, -1e308]]))),
        ("tensor:float-1e30", tensor(np.full((3, 2), 1e30, np.float32))),
        ("tensor:negative-coords", tensor(np.full((3, 2), -1e6))),
        ("tensor:int64-extremes", tensor(np.array([[2**63 - 1, -(2**63)]] * 3, np.int64))),
        ("tensor:wrong-columns", tensor(np.ones((3, 3)))),
        ("tensor:empty-rows", tensor(np.zeros((0, 2)))),
        ("tensor:random-bytes-float64", tensor_pb2.Tensor(
            dtype=tensor_pb2.DATA_TYPE_FLOAT64, shape=[4, 2], data=rng.bytes(64))),
        ("tensor:random-bytes-float32-stack", tensor_pb2.Tensor(
            dtype=tensor_pb2.DATA_TYPE_FLOAT32, shape=[1, 8, 8, 3], data=rng.bytes(768))),
        ("tensor:labels-uint32-max", tensor(np.full((32, 32), 2**32 - 1, np.uint32))),
        ("tensor:labels-negative", tensor(np.full((32, 32), -3, np.int64))),
        ("tensor:labels-float", tensor(rng.random((32, 32)))),
        ("tensor:labels-wrong-size", tensor(np.ones((7, 5), np.int32))),
        ("tensor:patches-odd-channels", tensor(np.zeros((2, 16, 16, 5), np.uint8))),
        ("tensor:patches-many-tiny", tensor(np.zeros((64, 1, 1, 3), np.uint8))),
    ]
