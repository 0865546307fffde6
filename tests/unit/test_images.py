"""Image inputs decode from tensors and PNG/TIFF/JPEG bytes; bad ones are named and rejected."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage

from labsight.cell_images import read_cell_image
from labsight.errors import InvalidArgument
from labsight.images import decode_image, encode_png, image_from_array, image_info, read_image
from labsight.v1 import tensor_pb2


def _encoded(data: bytes, fmt: str = "") -> tensor_pb2.Image:
    return tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=data, format=fmt))


def _rgb() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)


def test_png_rgb_and_grey_decode_losslessly() -> None:
    rgb = _rgb()
    np.testing.assert_array_equal(decode_image(_encoded(encode_png(rgb))), rgb)
    grey = rgb[..., 0].copy()
    np.testing.assert_array_equal(decode_image(_encoded(encode_png(grey))), grey)


def test_sixteen_bit_png_keeps_uint16() -> None:
    grey16 = np.random.default_rng(2).integers(0, 65535, (16, 16), dtype=np.uint16)
    decoded = decode_image(_encoded(encode_png(grey16)))
    assert decoded.dtype == np.uint16
    np.testing.assert_array_equal(decoded, grey16)


def test_tiff_uint16_multichannel_decodes() -> None:
    stack = np.random.default_rng(3).integers(0, 65535, (12, 10, 4), dtype=np.uint16)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, stack, photometric="minisblack", planarconfig="contig")
    np.testing.assert_array_equal(decode_image(_encoded(buffer.getvalue())), stack)


@pytest.mark.parametrize("compression", ["lzw", "zlib", "zstd", "packbits", "lzma"])
def test_compressed_tiffs_as_microscope_software_writes_them_decode_exactly(compression: str) -> None:
    # 12-bit data in uint16, 3 z planes x 2 channels as an ImageJ hyperstack, with the predictor
    # that LZW and Deflate writers put before 16-bit data
    stack = np.random.default_rng(4).integers(0, 4096, (3, 2, 40, 56), dtype=np.uint16)
    buffer = io.BytesIO()
    predictor = compression in ("lzw", "zlib")
    tifffile.imwrite(buffer, stack, imagej=True, metadata={"axes": "ZCYX"}, compression=compression,
                     predictor=predictor)
    image = _encoded(buffer.getvalue())
    image.read.plane = "1"
    assert image_info(image).shape == (40, 56, 2)
    np.testing.assert_array_equal(decode_image(image), np.moveaxis(stack[1], 0, -1))


def test_a_jpeg_tiled_rgb_tiff_as_slide_scanners_write_it_decodes() -> None:
    smooth = np.clip(np.add.outer(np.arange(96), np.arange(80))[..., None] + np.array([0, 40, 80]),
                     0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, smooth, photometric="rgb", compression="jpeg", tile=(32, 32))
    decoded = decode_image(_encoded(buffer.getvalue()))
    assert decoded.shape == smooth.shape and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - smooth).mean() < 2  # lossy, close


def test_a_tiff_compression_nothing_here_decodes_is_refused_from_its_header_naming_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "unknown.tif"
    tifffile.imwrite(path, np.zeros((16, 16), np.uint8))
    with tifffile.TiffFile(path, mode="r+") as tif:
        tif.pages.first.tags["Compression"].overwrite(34000)  # no such codec
    with open(path, "rb") as file:
        image = _encoded(file.read())
    for call in (image_info, decode_image):
        with pytest.raises(InvalidArgument, match=r"^image: TIFF compression unknown \(code 34000\) "
                           r"cannot be decoded here .*save the image uncompressed or with LZW"):
            call(image)


def test_jpeg_decodes_to_uint8_rgb() -> None:
    buffer = io.BytesIO()
    PILImage.fromarray(_rgb()).save(buffer, format="JPEG")
    decoded = decode_image(_encoded(buffer.getvalue(), "jpg"))
    assert decoded.shape == (20, 30, 3) and decoded.dtype == np.uint8


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_a_photo_stored_sideways_is_read_upright_as_viewers_show_it(fmt: str) -> None:
    # phones store a portrait photo as landscape pixels with EXIF orientation 6 (turn 90°
    # clockwise to view); annotation tools, viewers and OpenCV show it turned, masks are drawn so
    pixels = np.zeros((20, 30, 3), np.uint8)
    pixels[:4, :] = 255  # a white band along the stored top
    stored = PILImage.fromarray(pixels)
    exif = stored.getexif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    stored.save(buffer, format=fmt, exif=exif.tobytes())
    image = _encoded(buffer.getvalue())
    assert image_info(image).shape == (30, 20, 3)
    reading = read_image(image)
    assert reading.pixels.shape == (30, 20, 3)
    assert reading.pixels[:, -4:].min() > 200 and reading.pixels[:, :-6].max() < 60  # band on the right
    assert reading.provenance["exif_orientation"] == "6: pixels turned upright, as viewers show them"
    upright = _encoded(encode_png(pixels))
    assert "exif_orientation" not in read_image(upright).provenance
    np.testing.assert_array_equal(decode_image(upright), pixels)


def _positions(count: int = 3) -> bytes:
    """An OME-TIFF of ``count`` positions, as a plate or tile scan writes them: position k is 2
    channels of value 10·k + channel, at 0.1·(k + 1) µm a pixel."""
    buffer = io.BytesIO()
    with tifffile.TiffWriter(buffer, ome=True) as tif:
        for k in range(count):
            planes = np.stack([np.full((16, 24), 10 * k + c, np.uint16) for c in range(2)])
            tif.write(planes, metadata={"axes": "CYX", "Name": f"well-{k}",
                                        "PhysicalSizeX": 0.1 * (k + 1), "PhysicalSizeY": 0.1 * (k + 1)})
    return buffer.getvalue()


def test_series_reads_one_image_of_a_file_holding_several() -> None:
    first = read_image(_encoded(_positions()))
    assert first.pixels[0, 0].tolist() == [0, 1]
    assert any("holds 3 images" in w and "(params.series, 0-2)" in w for w in first.warnings)
    chosen = _encoded(_positions())
    chosen.read.series = "2"
    third = read_image(chosen)
    assert third.pixels.shape == (16, 24, 2) and third.pixels[0, 0].tolist() == [20, 21]
    assert not any("holds 3 images" in w for w in third.warnings)  # chosen: nothing left unsaid
    assert third.pixel_size is not None and third.pixel_size.um == pytest.approx(0.3)
    assert third.provenance["series"] == "2"
    assert image_info(chosen).shape == (16, 24, 2)


def test_a_series_the_file_does_not_hold_is_refused_naming_the_option() -> None:
    image = _encoded(_positions())
    image.read.series = "3"
    with pytest.raises(InvalidArgument, match=r"^image\.read\.series: the file holds 3 image\(s\), "
                       r"0-2; not 3$"):
        image_info(image)
    with pytest.raises(InvalidArgument, match=r"^params\.series: the file holds 3"):
        image_info(image, choices_field="params")
    image.read.series = "two"
    with pytest.raises(InvalidArgument, match=r"^image\.read\.series: expected the index of an image"):
        image_info(image)
    png = _encoded(encode_png(_rgb()))
    png.read.series = "1"
    with pytest.raises(InvalidArgument, match=r"^image\.read\.series: a PNG file holds one image"):
        read_image(png)
    png.read.series = "0"
    assert read_image(png).pixels.shape == (20, 30, 3)
    pixels = image_from_array(_rgb())
    pixels.read.series = "1"
    with pytest.raises(InvalidArgument, match="pixels sent as a tensor are one image"):
        image_info(pixels)


def test_tensor_image_passes_through() -> None:
    rgb = _rgb()
    np.testing.assert_array_equal(decode_image(image_from_array(rgb)), rgb)


def test_missing_image_is_named() -> None:
    with pytest.raises(InvalidArgument, match=r"input\.image: no image given"):
        decode_image(tensor_pb2.Image(), "input.image")


def test_empty_bytes_are_rejected() -> None:
    with pytest.raises(InvalidArgument, match=r"image\.encoded\.data: empty image bytes"):
        decode_image(_encoded(b""))


def test_unknown_signature_is_rejected() -> None:
    with pytest.raises(InvalidArgument, match="not a PNG, TIFF or JPEG"):
        decode_image(_encoded(b"GIF89a-not-supported"))


def test_truncated_png_is_reported_as_corrupt() -> None:
    data = encode_png(_rgb())
    with pytest.raises(InvalidArgument, match=r"corrupt PNG image"):
        decode_image(_encoded(data[: len(data) // 2]))


def test_a_png_signature_on_noise_is_corrupt_without_naming_an_in_memory_file() -> None:
    with pytest.raises(InvalidArgument) as error:
        decode_image(_encoded(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4))
    assert str(error.value) == ("image.encoded.data: corrupt PNG image (cannot identify image "
                                "file)")


def _tiff(pixels: np.ndarray, **options: object) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, pixels, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("options", [{}, {"rowsperstrip": 7}, {"tile": (16, 16)},
                                     {"compression": "zlib"}], ids=str)
def test_a_cut_tiff_is_refused_from_its_header(options: dict[str, object]) -> None:
    data = _tiff(np.zeros((40, 30, 3), np.uint8), **options)
    with pytest.raises(InvalidArgument, match=r"image.encoded.data: corrupt TIFF image \(truncated: "
                       r"the first page's data runs to byte [\d,]+, the file has [\d,]+ bytes\)"):
        image_info(_encoded(data[: len(data) - 100]))


@pytest.mark.parametrize(("options", "damage"), [
    ({"ome": True}, r"tag 270: invalid value offset [\d]+"),  # the OME-XML written last, cut off
    ({"imagej": True}, r"invalid page offset [\d]+"),  # the later channels' pages cut off
], ids=["ome", "imagej"])
def test_a_stack_cut_after_its_first_page_is_refused_not_read_as_one_page(
    options: dict[str, object], damage: str
) -> None:
    channels = np.random.default_rng(3).integers(0, 4096, (4, 40, 30), dtype=np.uint16)
    data = _tiff(channels, metadata={"axes": "CYX"}, **options)
    assert image_info(_encoded(data)).shape == (40, 30, 4)
    cut = data[: len(data) // 2]  # the first page whole: tifffile alone reads it as one grey page
    with tifffile.TiffFile(io.BytesIO(cut)) as tif:
        assert len(tif.pages) == 1
    with pytest.raises(InvalidArgument, match=rf"image.encoded.data: corrupt TIFF image \(truncated "
                       rf"or damaged: {damage}, in a file of [\d,]+ bytes\)"):
        image_info(_encoded(cut))
    with pytest.raises(InvalidArgument, match="truncated or damaged"):
        decode_image(_encoded(cut))


def test_a_stack_whose_later_page_lies_past_the_end_is_refused_where_that_page_is_read() -> None:
    """Every IFD intact, the last page's strip beyond the end of the file (a file cut inside
    its pixel data by a writer that puts each page's IFD before its data): the header checks
    pass, and any reading that takes that page names the short read instead of using zeros."""
    stack = np.random.default_rng(4).integers(100, 4096, (3, 40, 30), dtype=np.uint16)
    data = bytearray(_tiff(stack, imagej=True, metadata={"axes": "ZYX"}))
    tag = tifffile.TiffFile(io.BytesIO(bytes(data))).pages[2].tags["StripOffsets"]
    start = tag.valueoffset
    data[start : start + 4] = (len(data) + 64).to_bytes(4, "little")
    first = _encoded(bytes(data))
    first.read.plane = "z=0"
    assert image_info(first).shape == (40, 30)
    for read in ({"z_project": "max"}, {"plane": "z=2"}):
        image = _encoded(bytes(data))
        for option, value in read.items():
            setattr(image.read, option, value)
        with pytest.raises(InvalidArgument, match=r"image.encoded.data: corrupt TIFF image "
                           r"\(failed to read 2400 bytes, got 0\)"):
            read_image(image)
    np.testing.assert_array_equal(read_image(first).pixels, stack[0])


def test_an_uncompressed_tiff_whose_strips_hold_too_few_bytes_is_refused() -> None:
    data = bytearray(_tiff(np.zeros((40, 30), np.uint8)))
    tif = tifffile.TiffFile(io.BytesIO(bytes(data)))
    tag = tif.pages[0].tags["StripByteCounts"]
    data[tag.valueoffset : tag.valueoffset + 4] = (600).to_bytes(4, "little")  # of 1,200
    with pytest.raises(InvalidArgument, match=r"truncated: the first page's 40x30 uint8 pixels "
                       r"take 1,200 bytes, its data holds 600"):
        image_info(_encoded(bytes(data)))


def test_bit_packed_and_planar_tiffs_are_not_taken_for_cut_ones() -> None:
    planar = np.random.default_rng(2).integers(0, 4096, (3, 20, 30), dtype=np.uint16)
    assert image_info(_encoded(_tiff(planar, planarconfig="separate", photometric="rgb"))).shape \
        == (20, 30, 3)
    mask = _tiff(np.random.default_rng(3).random((33, 37)) > 0.5)  # 1 bit per pixel
    assert image_info(_encoded(mask)).shape == (33, 37)


def test_huge_image_is_rejected_before_decoding() -> None:
    with pytest.raises(InvalidArgument, match=r"20x30 pixels with 3 channel\(s\) of uint8 takes 1800 "
                       r"bytes decoded, over the limit of 100 bytes \(raise LABSIGHT_MAX_IMAGE_BYTES"):
        decode_image(_encoded(encode_png(_rgb())), max_bytes=100)


def test_wrong_dtype_and_rank_are_rejected() -> None:
    with pytest.raises(InvalidArgument, match="dtype int64 not supported; expected uint8, uint16, bool"):
        decode_image(image_from_array(np.zeros((4, 4), np.int64)))
    with pytest.raises(InvalidArgument, match=r"expected \(H, W\) or \(H, W, C\)"):
        decode_image(image_from_array(np.zeros((2, 4, 4, 3), np.uint8)))
    with pytest.raises(InvalidArgument, match="image is empty"):
        decode_image(image_from_array(np.zeros((0, 4), np.uint8)))


def test_an_unknown_format_hint_is_named_cut_short_whatever_its_length() -> None:
    data = encode_png(np.zeros((4, 4), np.uint8))
    for hint, shown in (("bmp", "'bmp'"), ("\u00e9\u6f22" * 10_000, "… (20000 characters)")):
        image = tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=data, format=hint))
        with pytest.raises(InvalidArgument) as refused:
            decode_image(image, "image")
        message = str(refused.value)
        assert message.startswith("image.encoded.format: unknown format ") and shown in message
        assert len(message) < 200  # a status message must fit the response headers


def test_a_reading_without_warnings_gives_the_same_pixels_and_no_warning() -> None:
    # 12-bit camera values in a 16-bit file: read with warnings, the low range is named.
    twelve_bit = np.random.default_rng(4).integers(0, 4096, (24, 20), dtype=np.uint16)
    image = image_from_array(twelve_bit)
    warned = read_image(image, "input.image")
    assert any("under 1/" in warning for warning in warned.warnings)
    quiet = read_image(image, "input.image", warn=False)
    assert quiet.warnings == []
    np.testing.assert_array_equal(quiet.pixels, warned.pixels)
    np.testing.assert_array_equal(decode_image(image), twelve_bit)
    # The model services read cell images so too: the same pixels, stacked red, green, blue, yellow.
    channels = [image_from_array(twelve_bit + i) for i in range(4)]
    stacked = read_cell_image([(f"channel_images[{i}]", part) for i, part in enumerate(channels)])
    np.testing.assert_array_equal(stacked, np.stack([twelve_bit + i for i in range(4)], axis=-1))


def test_a_cut_stack_is_refused_where_logging_drops_errors_and_nothing_is_logged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """LABSIGHT_LOG_LEVEL=CRITICAL: tifffile's damage records still reach the watch, none reaches
    the process's handlers, and tifffile's logger is as it was afterwards."""
    root, tiff_log = logging.getLogger(), logging.getLogger("tifffile")
    shown: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = shown.append  # type: ignore[method-assign]
    monkeypatch.setattr(root, "handlers", [handler])
    level = root.level
    root.setLevel(logging.CRITICAL)  # setLevel, not the attribute: loggers cache what is enabled
    try:
        before = (tiff_log.level, tiff_log.propagate)
        channels = np.random.default_rng(3).integers(0, 4096, (4, 40, 30), dtype=np.uint16)
        data = _tiff(channels, metadata={"axes": "CYX"}, ome=True)
        with pytest.raises(InvalidArgument, match=r"truncated or damaged: tag 270: invalid value"):
            image_info(_encoded(data[: len(data) // 2]))
        assert shown == []
        assert (tiff_log.level, tiff_log.propagate) == before
    finally:
        root.setLevel(level)
