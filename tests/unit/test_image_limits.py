"""Image limits hold before decoding: small files declaring huge images are refused from their header."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage

from labsight.errors import InvalidArgument
from labsight.images import decode_image, encode_png, image_from_array, image_info
from labsight.v1 import tensor_pb2
from tests import hostile_images

ROOT = Path(__file__).resolve().parents[2]

HOSTILE = {
    "planar_tiff": (hostile_images.planar_tiff, r"1000x200000 pixels with 3 channel\(s\) of uint8 takes "
                    r"600000000 bytes decoded"),
    "many_samples_tiff": (hostile_images.many_samples_tiff, r"300 channels; expected 1 to 8"),
    "jpeg_12000": (lambda: hostile_images.jpeg_declaring(12000, 12000),
                   r"12000x12000 pixels with 3 channel\(s\) of uint8 takes 432000000 bytes decoded"),
    "png_13000": (lambda: hostile_images.png_zeros(13000, 13000),
                  r"13000x13000 pixels with 1 channel\(s\) of uint8 takes 169000000 bytes decoded"),
}

_MEASURE = """
import resource, sys
from labsight.errors import InvalidArgument
from labsight.images import decode_image
from labsight.v1 import tensor_pb2
from tests.unit.test_image_limits import HOSTILE
image = tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=HOSTILE[sys.argv[1]][0]()))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    decode_image(image, "input.image")
    print("accepted")
except InvalidArgument as error:
    print(error)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""
"""Prints decode_image's answer for one HOSTILE case, then how many MB the process grew."""


def _encoded(data: bytes) -> tensor_pb2.Image:
    return tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=data))


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_small_file_declaring_a_huge_image_is_refused_from_its_header(case: str) -> None:
    build, message = HOSTILE[case]
    data = build()
    assert len(data) < 700_000
    with pytest.raises(InvalidArgument, match=r"^input\.image: (image of )?" + message):
        image_info(_encoded(data), "input.image")


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_refusing_a_huge_image_costs_no_memory(case: str) -> None:
    """Peak memory of decode_image on the file, measured in a fresh process (ru_maxrss)."""
    answer = subprocess.run(
        [sys.executable, "-c", _MEASURE, case], cwd=ROOT, capture_output=True, text=True,
        timeout=120, check=True,
    )
    outcome, grown_mb = answer.stdout.splitlines()
    assert outcome.startswith("input.image: ")
    assert int(grown_mb) < 50, f"decoding {case} grew the process by {grown_mb} MB before refusing"


def test_planar_tiff_decodes_with_samples_last() -> None:
    rgb = np.random.default_rng(4).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.moveaxis(rgb, 2, 0), planarconfig="separate", photometric="rgb")
    info = image_info(_encoded(buffer.getvalue()))
    assert info.shape == (5, 7, 3)
    np.testing.assert_array_equal(decode_image(_encoded(buffer.getvalue())), rgb)


def test_tiff_tile_larger_than_the_image_counts_against_the_limit() -> None:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.zeros((4, 4), np.uint8), tile=(1024, 1024), compression="zlib")
    with pytest.raises(InvalidArgument, match=r"takes 1048576 bytes decoded, over the limit of 100000"):
        decode_image(_encoded(buffer.getvalue()), max_bytes=100_000)


def test_multi_dimensional_tiff_page_is_refused_from_its_header() -> None:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.zeros((3, 16, 16), np.uint8), volumetric=True, tile=(1, 16, 16),
                    photometric="minisblack")
    with pytest.raises(InvalidArgument, match=r"axes ZYX .*expected a 2-D image"):
        image_info(_encoded(buffer.getvalue()))


@pytest.mark.parametrize(
    ("mode", "colour", "channels"),
    # Opaque alpha is dropped: grey + alpha reads as grey, RGBA as RGB.
    [("LA", (0, 255), 1), ("P", 0, 3), ("RGBA", (0, 0, 0, 255), 3), ("L", 0, 1), ("I;16", 0, 1)],
)
def test_header_tells_the_decoded_shape_of_each_pillow_mode(
    mode: str, colour: int | tuple[int, ...], channels: int
) -> None:
    buffer = io.BytesIO()
    PILImage.new(mode, (6, 4), colour).save(buffer, format="PNG")
    info = image_info(_encoded(buffer.getvalue()))
    pixels = decode_image(_encoded(buffer.getvalue()))
    assert (info.shape, info.dtype) == (pixels.shape, pixels.dtype)
    assert info.channels == channels


def test_limit_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    data = encode_png(np.zeros((10, 10, 3), np.uint8))
    image_info(_encoded(data))
    monkeypatch.setenv("LABSIGHT_MAX_IMAGE_BYTES", "299")
    with pytest.raises(InvalidArgument, match="takes 300 bytes decoded, over the limit of 299"):
        image_info(_encoded(data))
    with pytest.raises(InvalidArgument, match="needs 300 bytes, over the limit of 299"):
        image_info(image_from_array(np.zeros((10, 10, 3), np.uint8)))
