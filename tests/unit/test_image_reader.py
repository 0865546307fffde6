"""Reading microscope files: axes from metadata, chosen planes and channels, projections, limits."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage

from labsight.errors import InvalidArgument
from labsight.image_reader import parse_channels, parse_plane, parse_z_project
from labsight.images import (
    decode_image,
    decode_label_mask,
    image_from_array,
    image_info,
    label_mask_info,
    read_image,
)
from labsight.v1 import tensor_pb2


def _tiff(pixels: np.ndarray, **read: str) -> tensor_pb2.Image:
    return _tiff_with(pixels, {}, **read)


def _tiff_with(pixels: np.ndarray, options: dict[str, object], **read: str) -> tensor_pb2.Image:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, pixels, **options)
    return tensor_pb2.Image(
        encoded=tensor_pb2.EncodedImage(data=buffer.getvalue()),
        read=tensor_pb2.ImageReadOptions(**read),
    )


def _imagej(pixels: np.ndarray, axes: str, **read: str) -> tensor_pb2.Image:
    return _tiff_with(pixels, {"imagej": True, "metadata": {"axes": axes}}, **read)


def _stack(shape: tuple[int, ...], dtype: type = np.uint16) -> np.ndarray:
    return np.random.default_rng(sum(shape)).integers(0, 4000, shape).astype(dtype)


def test_plane_and_channel_texts_parse() -> None:
    assert parse_plane("3") == (("", 3),)
    assert parse_plane("z=3, T=0") == (("Z", 3), ("T", 0))
    assert parse_channels("0,2") == (0, 2)
    assert parse_channels("DAPI, 1") == ("DAPI", 1)
    assert parse_z_project("MAX") == "max"
    for bad in ("3,4", "z=x", "z=1,z=2"):
        with pytest.raises(ValueError):
            parse_plane(bad)
    with pytest.raises(ValueError, match="expected one of max, mean, sum"):
        parse_z_project("median")


def test_imagej_hyperstack_planes_channels_and_projections_are_the_arrays_pixels() -> None:
    tzcyx = _stack((2, 4, 3, 8, 10))
    assert np.array_equal(decode_image(_imagej(tzcyx, "TZCYX", plane="t=1,z=2", channels="2,0")),
                          np.moveaxis(tzcyx[1, 2][[2, 0]], 0, -1))
    assert np.array_equal(decode_image(_imagej(tzcyx, "TZCYX", plane="t=0", z_project="max",
                                               channels="1")), tzcyx[0, :, 1].max(axis=0))
    mean = decode_image(_imagej(tzcyx, "TZCYX", plane="t=1", z_project="mean", channels="0"))
    assert np.array_equal(mean, np.floor(tzcyx[1, :, 0].mean(axis=0) + 0.5).astype(np.uint16))
    total = decode_image(_imagej(tzcyx, "TZCYX", plane="t=1", z_project="sum", channels="0"))
    assert np.array_equal(total, tzcyx[1, :, 0].astype(np.int64).sum(axis=0))


def test_a_sum_that_overflows_uint16_is_clipped() -> None:
    zyx = np.full((3, 4, 4), 30000, np.uint16)
    assert decode_image(_imagej(zyx, "ZYX", z_project="sum")).max() == 65535


def test_imagej_rgb_hyperstack_counts_channels_then_samples() -> None:
    zcyxs = _stack((2, 2, 6, 6, 3), np.uint8)
    pixels = decode_image(_imagej(zcyxs, "ZCYXS", plane="1", channels="4"))  # c=1, s=1
    assert np.array_equal(pixels, zcyxs[1, 1, :, :, 1])
    rgb = decode_image(_imagej(zcyxs, "ZCYXS", plane="0", channels="3,4,5"))
    assert np.array_equal(rgb, zcyxs[0, 1])


def test_a_stack_without_a_choice_is_refused_from_its_header_listing_axes_and_parameters() -> None:
    image = _imagej(_stack((5, 2, 8, 8)), "ZCYX")
    with pytest.raises(InvalidArgument) as error:
        image_info(image, "input.image", choices_field="params")
    message = str(error.value)
    assert message.startswith("input.image: a stack with axes ZCYX [Z=5, C=2, Y=8, X=8] (Z depth, C channel)")
    assert "params.plane" in message and "params.z_project=max|mean|sum" in message


def test_pages_without_axes_metadata_are_a_stack_of_pages() -> None:
    pages = _stack((3, 8, 8), np.uint8)
    options = {"photometric": "minisblack", "metadata": None}
    with pytest.raises(InvalidArgument, match=r"a stack with axes IYX \[I=3, Y=8, X=8\] \(I page\)"):
        image_info(_tiff_with(pages, options))
    assert np.array_equal(decode_image(_tiff_with(pages, options, plane="2")), pages[2])
    assert np.array_equal(decode_image(_tiff_with(pages, options, z_project="max")), pages.max(axis=0))


@pytest.mark.parametrize(
    "options",
    [
        {"imagej": True, "metadata": {"axes": "CYX"}},
        {"ome": True, "metadata": {"axes": "CYX"}},
        {"photometric": "minisblack", "planarconfig": "separate"},
    ],
    ids=["imagej", "ome", "planar"],
)
def test_channel_first_files_are_read_channels_last(options: dict[str, object]) -> None:
    cyx = _stack((4, 6, 9), np.uint8)
    assert image_info(_tiff_with(cyx, options)).shape == (6, 9, 4)
    np.testing.assert_array_equal(decode_image(_tiff_with(cyx, options)), np.moveaxis(cyx, 0, -1))


def test_ome_channel_names_and_significant_bits_are_used() -> None:
    cyx = _stack((3, 8, 8))
    options = {"ome": True, "metadata": {"axes": "CYX", "SignificantBits": 12,
                                         "Channel": {"Name": ["DAPI", "GFP", "ER"]}}}
    picked = read_image(_tiff_with(cyx, options, channels="ER,DAPI", intensity="bit-depth"))
    assert picked.provenance["intensity_range"] == "0-4095"
    expected = np.moveaxis(cyx[[2, 0]], 0, -1).astype(np.int64) * 65535
    np.testing.assert_array_equal(picked.pixels, (2 * expected + 4095) // (2 * 4095))


def test_rgba_with_opaque_alpha_reads_as_rgb_and_transparent_alpha_is_refused() -> None:
    rgb = _stack((6, 6, 3), np.uint8)
    rgba = np.dstack([rgb, np.full((6, 6), 255, np.uint8)])
    planar = {"photometric": "rgb", "planarconfig": "separate", "extrasamples": ["unassalpha"]}
    assert np.array_equal(decode_image(_tiff_with(np.moveaxis(rgba, -1, 0), planar)), rgb)
    buffer = io.BytesIO()
    PILImage.fromarray(rgba).save(buffer, format="PNG")
    png = tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=buffer.getvalue()))
    assert image_info(png).shape == (6, 6, 3)
    assert np.array_equal(decode_image(png), rgb)
    rgba[0, 0, 3] = 128
    with pytest.raises(InvalidArgument, match=r"alpha channel is not opaque \(1 of 36 pixels"):
        decode_image(_tiff_with(np.moveaxis(rgba, -1, 0), planar))
    kept = decode_image(_tiff_with(np.moveaxis(rgba, -1, 0), planar, channels="0,1,2,3"))
    assert np.array_equal(kept, rgba)


def test_grey_with_opaque_alpha_reads_as_grey() -> None:
    buffer = io.BytesIO()
    PILImage.new("LA", (5, 4), (77, 255)).save(buffer, format="PNG")
    pixels = decode_image(tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=buffer.getvalue())))
    assert pixels.shape == (4, 5) and (pixels == 77).all()


def test_a_plane_is_read_without_decoding_the_whole_stack() -> None:
    zyx = _stack((40, 64, 64))  # 40 pages of 8 KiB
    page = 64 * 64 * 2
    assert image_info(_imagej(zyx, "ZYX", plane="7"), max_bytes=page).decode_bytes == page
    projected = image_info(_imagej(zyx, "ZYX", z_project="max"), max_bytes=10 * page)
    assert projected.decode_bytes == page + 64 * 64 * 8  # one page and the accumulator
    with pytest.raises(InvalidArgument, match=r"over the limit of 8191 bytes \(raise LABSIGHT_MAX_IMAGE"):
        image_info(_imagej(zyx, "ZYX", plane="7"), max_bytes=page - 1)


def test_every_channel_page_of_a_plane_counts_against_the_limit() -> None:
    zcyx = _stack((2, 6, 32, 32))
    page = 32 * 32 * 2
    assert image_info(_imagej(zcyx, "ZCYX", plane="1")).decode_bytes == 6 * page
    assert image_info(_imagej(zcyx, "ZCYX", plane="1", channels="4")).decode_bytes == page


def test_choices_on_a_plain_image_are_refused() -> None:
    image = image_from_array(np.zeros((8, 8, 3), np.uint8))
    image.read.plane = "1"
    with pytest.raises(InvalidArgument, match=r"image\.read\.plane: .*no stack axes"):
        image_info(image, "image")
    image.read.plane, image.read.z_project = "", "max"
    with pytest.raises(InvalidArgument, match=r"image\.read\.z_project: image has no z axis"):
        image_info(image, "image")
    image.read.z_project, image.read.channels = "", "3"
    with pytest.raises(InvalidArgument, match=r"channel 3 is beyond image's 3 channel\(s\)"):
        image_info(image, "image")


@pytest.mark.parametrize("dtype", [np.int32, np.uint32, np.int64, np.uint16])
def test_integer_label_masks_are_read_as_they_are(dtype: type) -> None:
    labels = np.zeros((16, 20), dtype)
    labels[2:6, 3:9], labels[10:14, 10:18] = 5, 70 if dtype == np.uint16 else 70000
    mask = _tiff(labels)
    info = label_mask_info(mask, "input.images[cell_labels]")
    assert (info.shape, info.dtype) == ((16, 20), np.dtype(dtype))
    np.testing.assert_array_equal(decode_label_mask(mask, "input.images[cell_labels]"), labels)


def test_masks_that_are_not_one_plane_of_integers_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="expected an integer label mask .* got dtype float32"):
        label_mask_info(_tiff(np.zeros((8, 8), np.float32)), "mask")
    with pytest.raises(InvalidArgument, match=r"one 2-D plane of integers, got axes ZYX"):
        label_mask_info(_imagej(np.zeros((3, 8, 8), np.uint16), "ZYX"), "mask")


def test_a_tiff_with_more_pages_than_the_limit_is_refused_before_its_series_is_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    buffer = io.BytesIO()
    with tifffile.TiffWriter(buffer) as writer:
        for _ in range(30):
            writer.write(np.zeros((1, 1), np.uint8), photometric="minisblack", metadata=None)
    image = tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=buffer.getvalue()))
    image.read.plane = "3"
    assert image_info(image).shape == (1, 1)
    monkeypatch.setenv("LABSIGHT_MAX_TIFF_PAGES", "29")
    with pytest.raises(InvalidArgument, match=r"input\.image: TIFF with 30 pages, over the limit of 29 "
                       r"\(raise LABSIGHT_MAX_TIFF_PAGES"):
        image_info(image, "input.image")


def test_only_the_first_image_of_a_multi_image_ome_file_is_read_and_that_is_warned() -> None:
    buffer = io.BytesIO()
    first, second = _stack((2, 8, 8)), _stack((2, 8, 9))
    with tifffile.TiffWriter(buffer, ome=True) as writer:
        writer.write(first, metadata={"axes": "CYX"})
        writer.write(second, metadata={"axes": "CYX"})
    image = tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=buffer.getvalue()))
    reading = read_image(image, "input.image")
    np.testing.assert_array_equal(reading.pixels, np.moveaxis(first, 0, -1))
    assert any(w.startswith("input.image: the file holds 2 images (TIFF series); only the first "
                            "(CYX [C=2, Y=8, X=8]) was read") for w in reading.warnings)
    assert not any("images (TIFF series)" in w for w in read_image(_tiff(first[0])).warnings)
