"""Small files that declare huge images, built with the real libraries for the limit tests.

Each costs well under a megabyte on disk but hundreds of megabytes once decoded,
the shapes reported in issue 10.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import tifffile
from PIL import Image as PILImage


def _zlib_strips(strip_bytes: int, count: int) -> tuple[bytes, ...]:
    """``count`` copies of one zlib-compressed strip of ``strip_bytes`` zeros (compressed once)."""
    return (zlib.compress(bytes(strip_bytes), 9),) * count


def planar_tiff(samples: int = 3, height: int = 1000, width: int = 200_000) -> bytes:
    """A zlib TIFF of zeros with separate planes (planarconfig 2), shape (samples, height, width)."""
    rows = 8
    strips = _zlib_strips(rows * width, samples * height // rows)
    buffer = io.BytesIO()
    tifffile.imwrite(
        buffer, iter(strips), shape=(samples, height, width), dtype=np.uint8,
        planarconfig="separate", photometric="rgb" if samples == 3 else "minisblack",
        compression="zlib", rowsperstrip=rows,
    )
    return buffer.getvalue()


def many_samples_tiff(height: int = 1000, width: int = 1000, samples: int = 300) -> bytes:
    """A zlib TIFF of zeros with ``samples`` interleaved samples per pixel."""
    strips = _zlib_strips(width * samples, height)
    buffer = io.BytesIO()
    tifffile.imwrite(
        buffer, iter(strips), shape=(height, width, samples), dtype=np.uint8,
        planarconfig="contig", photometric="minisblack", compression="zlib", rowsperstrip=1,
    )
    return buffer.getvalue()


def jpeg_declaring(height: int, width: int) -> bytes:
    """A tiny RGB JPEG whose SOF0 header is patched to declare ``height`` x ``width`` pixels."""
    buffer = io.BytesIO()
    PILImage.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buffer, format="JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    # SOF0: marker, length (2), precision (1), height (2), width (2).
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def png_zeros(height: int, width: int, channels: int = 1) -> bytes:
    """An 8-bit grey (1) or RGB (3) PNG of zeros, compressed row by row without holding the image."""
    colour_type = {1: 0, 3: 2}[channels]

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    compressor = zlib.compressobj(9)
    row = bytes(1 + width * channels)  # filter byte 0, then the samples
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))
