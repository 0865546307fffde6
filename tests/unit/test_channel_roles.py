"""Channels named by role: names as read from real TIFF headers, their column names, and how a
role's index or name resolves (labsight.channel_roles, labsight.columns)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tifffile

from labsight.channel_roles import (
    channel_names_as_read,
    parse_channel_choice,
    parse_cytoplasm_choices,
    resolve_channel,
)
from labsight.columns import cell_column_names, channel_column_names
from labsight.errors import InvalidArgument
from labsight.images import image_from_array
from labsight.v1 import tensor_pb2


def _ome(names: list[str]) -> tensor_pb2.Image:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.zeros((len(names), 8, 8), np.uint16), ome=True,
                     metadata={"axes": "CYX", "Channel": {"Name": names}})
    return tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=buffer.getvalue()))


def test_column_names_are_lower_case_slugs_one_per_channel() -> None:
    assert channel_column_names(["DAPI", "Alexa Fluor 488", "pH-3 (S10)"], 3) == (
        "dapi", "alexa_fluor_488", "ph_3_s10")
    assert channel_column_names([], 2) == ("ch0", "ch1")
    assert channel_column_names(["DAPI", "dapi", "***"], 3) == ("dapi", "ch1", "ch2")
    with pytest.raises(ValueError, match="2 channel names for 3 channels"):
        channel_column_names(["a", "b"], 3)
    columns = cell_column_names(("dapi", "gfp"))
    assert ["mean_dapi", "mean_gfp", "integrated_dapi", "integrated_gfp", "std_dapi", "std_gfp",
            "nucleus_mean_dapi", "nucleus_mean_gfp", "cytoplasm_mean_dapi",
            "cytoplasm_mean_gfp"] == columns[-10:]
    assert cell_column_names()[-1] == "cytoplasm_mean_yellow"  # HPA's layout by default


def test_names_as_read_follow_the_file_and_the_channels_picked() -> None:
    image = _ome(["DAPI", "GFP", "CellMask"])
    assert channel_names_as_read(image, "input.image", 3) == ("DAPI", "GFP", "CellMask")
    image.read.channels = "2,0"
    assert channel_names_as_read(image, "input.image", 2) == ("CellMask", "DAPI")
    image.read.channels = "GFP"
    assert channel_names_as_read(image, "input.image", 1) == ("GFP",)
    # no names in a tensor: each channel by its index in the image
    assert channel_names_as_read(image_from_array(np.zeros((4, 4, 2), np.uint8)), "x", 2) == (
        "ch0", "ch1")
    picked = image_from_array(np.zeros((4, 4, 3), np.uint8))
    picked.read.channels = "2"
    assert channel_names_as_read(picked, "x", 1) == ("ch2",)


def test_a_role_resolves_by_index_exact_name_or_name_ignoring_case() -> None:
    names = ("DAPI", "GFP", "CellMask")
    assert resolve_channel(2, names, "p") == 2
    assert resolve_channel("GFP", names, "p") == 1
    assert resolve_channel("cellmask", names, "p") == 2
    with pytest.raises(InvalidArgument, match=r"p: channel 3, but the image has 3 channel\(s\)"):
        resolve_channel(3, names, "p")
    with pytest.raises(InvalidArgument, match="p: no channel named 'Hoechst'; .* 0 DAPI, 1 GFP, "
                                              "2 CellMask"):
        resolve_channel("Hoechst", names, "p")


def test_role_parameters_parse_or_say_what_was_expected() -> None:
    assert parse_channel_choice("") is None
    assert parse_channel_choice("1") == 1 and parse_channel_choice(" DAPI ") == "DAPI"
    with pytest.raises(ValueError, match="expected one channel"):
        parse_channel_choice("0,1")
    assert parse_cytoplasm_choices("WGA,2") == ("WGA", 2)
    with pytest.raises(ValueError, match="at most 2 channels"):
        parse_cytoplasm_choices("0,1,2")


def _imagej(labels: list[str]) -> tensor_pb2.Image:
    buffer = io.BytesIO()
    movie = np.arange(3 * 2 * 8 * 8, dtype=np.uint16).reshape(3, 2, 8, 8)
    tifffile.imwrite(buffer, movie, imagej=True, metadata={"axes": "TCYX", "Labels": labels})
    return tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=buffer.getvalue()))


def test_an_imagej_hyperstack_s_slice_labels_name_its_channels_where_they_follow_them() -> None:
    from labsight.images import file_layouts, read_image

    named = _imagej(["DAPI", "GFP"] * 3)  # one label per plane, channels fastest
    assert file_layouts(named)[0].channel_names == ("DAPI", "GFP")
    named.read.channels, named.read.plane = "GFP", "t=1"
    assert np.array_equal(read_image(named, "x", warn=False).pixels,
                          np.arange(384, dtype=np.uint16).reshape(3, 2, 8, 8)[1, 1])
    # labels that name planes (Bio-Formats' import) or repeat are no channel names
    planes = [f"c:{c + 1}/2 t:{t + 1}/3" for t in range(3) for c in range(2)]
    assert file_layouts(_imagej(planes))[0].channel_names == ()
    assert file_layouts(_imagej(["DAPI", "DAPI"] * 3))[0].channel_names == ()
