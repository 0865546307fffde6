"""HPA channel files (ID_red.png ...) grouped into one input per image (labsight.inputs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from labsight.inputs import InputError, InputFile, channel_files, group_channel_files

CHANNELS = ("red", "green", "blue", "yellow")


def _files(names: list[str]) -> list[InputFile]:
    return [InputFile(Path("/data") / name, name) for name in names]


def test_channel_files_are_grouped_by_id_and_other_files_kept() -> None:
    names = [f"{image}_{c}.png" for image in ("a/1_A1_1", "b/2_B2_3") for c in CHANNELS]
    sets, others = group_channel_files(_files([*names, "whole.tif", "x.png"]))
    assert [s.name for s in sets] == ["a/1_A1_1", "b/2_B2_3"]
    assert sets[0].channels == {c: Path(f"/data/a/1_A1_1_{c}.png") for c in CHANNELS}
    assert list(sets[0].channels) == list(CHANNELS)
    assert [f.name for f in others] == ["whole.tif", "x.png"]


def test_channel_names_are_matched_in_any_case() -> None:
    sets, others = group_channel_files(_files([f"7_{c.upper()}.tif" for c in CHANNELS]))
    assert [s.name for s in sets] == ["7"] and not others
    assert sets[0].channels["yellow"] == Path("/data/7_YELLOW.tif")


def test_a_missing_or_doubled_channel_names_the_image() -> None:
    names = [f"1_{c}.png" for c in CHANNELS[:3]] + [f"2_{c}.png" for c in CHANNELS] + ["2_red.tif"]
    with pytest.raises(InputError) as refused:
        group_channel_files(_files(names))
    message = str(refused.value)
    assert "1: no 1_yellow file" in message
    assert "2: several files for one channel (2_red.png, 2_red.tif)" in message


def test_flags_are_named_by_their_shared_id_else_by_the_red_file() -> None:
    paths = [Path(f"/x/9_{c}.png") for c in CHANNELS]
    assert channel_files(*paths).name == "9"
    assert channel_files(*(Path(f"/x/{c}.tif") for c in CHANNELS)).name == "red.tif"
