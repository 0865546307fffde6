"""BufferFile reads a buffer in place as io.BytesIO reads the same bytes, and decoders read image
files through it as through BytesIO."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage

from labsight.buffer_file import BufferFile

DATA = bytes(range(256)) * 5


def _operations(file: io.RawIOBase | io.BytesIO) -> list[object]:
    """The same reads, seeks and tells on a file, with what each answered."""
    answers: list[object] = [file.read(10), file.tell(), file.seek(100), file.read(0)]
    target = bytearray(50)
    answers += [file.readinto(target), bytes(target), file.seek(-20, io.SEEK_CUR), file.read(30)]
    answers += [file.seek(-5, io.SEEK_END), file.read(), file.read(), file.seek(5000), file.read(4)]
    target = bytearray(8)
    answers += [file.readinto(target), file.seek(1270), file.readinto(target), bytes(target)]
    answers += [file.seek(0), file.read(-1) == DATA, file.seek(3), file.read(None) == DATA[3:]]
    return answers


def test_reads_and_seeks_answer_what_bytesio_answers() -> None:
    view = memoryview(b"prefix" + DATA + b"suffix")[6:-6]
    assert _operations(BufferFile(view)) == _operations(io.BytesIO(DATA))


def test_readinto_fills_a_numpy_array_from_the_buffer() -> None:
    file = BufferFile(memoryview(DATA)[256:])
    pixels = np.empty((4, 8), np.uint16)
    assert file.readinto(pixels) == 64
    np.testing.assert_array_equal(pixels, np.frombuffer(DATA[256:320], np.uint16).reshape(4, 8))


def test_a_seek_before_the_start_and_a_closed_file_are_refused() -> None:
    file = BufferFile(DATA)
    with pytest.raises(ValueError, match="negative seek position -1"):
        file.seek(-1)
    with pytest.raises(ValueError, match="invalid whence"):
        file.seek(0, 3)
    file.close()
    with pytest.raises(ValueError, match="closed file"):
        file.read(1)


@pytest.mark.parametrize("options", [
    {"photometric": "minisblack"}, {"photometric": "minisblack", "compression": "zlib", "tile": (16, 16)},
    {"ome": True, "metadata": {"axes": "CYX"}},
], ids=str)
def test_tifffile_reads_a_tiff_through_it(options: dict[str, object]) -> None:
    pixels = np.random.default_rng(5).integers(0, 4096, (3, 40, 48), dtype=np.uint16)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, pixels, **options)
    view = memoryview(b"\0" * 7 + buffer.getvalue())[7:]
    with tifffile.TiffFile(BufferFile(view)) as tif:
        np.testing.assert_array_equal(tif.asarray(), pixels)


def test_pillow_reads_a_png_through_it() -> None:
    pixels = np.random.default_rng(6).integers(0, 256, (30, 20, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="PNG")
    with PILImage.open(BufferFile(memoryview(buffer.getvalue()))) as image:
        np.testing.assert_array_equal(np.asarray(image), pixels)
