"""``labsight inspect``: what a file holds and the parameters it needs, from its header."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from labsight.cli import main


def _plate(path: Path) -> Path:
    with tifffile.TiffWriter(path, ome=True) as tif:
        for well in ("B03", "B04"):
            tif.write(np.zeros((2, 16, 24), np.uint16), metadata={
                "axes": "CYX", "Name": well, "PhysicalSizeX": 0.325, "PhysicalSizeY": 0.325,
                "SignificantBits": 12, "Channel": {"Name": ["DAPI", "GFP"]}})
    return path


def test_a_plate_scan_names_its_wells_channels_bits_and_pixel_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["inspect", "--json", str(_plate(tmp_path / "plate.ome.tif"))]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["format"] == "tiff"
    assert [(image["name"], image["axes"], image["shape"]) for image in found["images"]] == [
        ("B03", "CYX", [2, 16, 24]), ("B04", "CYX", [2, 16, 24])]
    first = found["images"][0]
    assert first["channel_names"] == ["DAPI", "GFP"] and first["significant_bits"] == 12
    assert first["pixel_size_um"] == pytest.approx(0.325)
    assert first["pixel_size_source"] == "OME PhysicalSizeX/Y"
    hints = " | ".join(found["hints"])
    assert "--each-series" in hints and "channels=DAPI,GFP" in hints
    assert "intensity=bit-depth" in hints and "pixel_size_um" in hints
    assert "cells: --param nucleus_channel=DAPI (its nuclear stain)" in hints


def test_a_time_lapse_and_a_photo_say_what_to_choose(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    movie = tmp_path / "movie.tif"
    tifffile.imwrite(movie, np.zeros((3, 2, 24, 32), np.uint8), imagej=True, metadata={"axes": "TZYX"})
    photo = Image.fromarray(np.zeros((20, 30, 3), np.uint8))
    exif = photo.getexif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", exif=exif.tobytes())
    (tmp_path / "phone.jpg").write_bytes(buffer.getvalue())
    assert main(["inspect", str(movie), str(tmp_path / "phone.jpg")]) == 0
    text = capsys.readouterr().out
    assert "  [0]: TZYX [T=3, Z=2, Y=24, X=32] uint8" in text
    assert "a stack (t=0..2,z=0..1): give --param plane (e.g. t=0,z=0)" in text
    assert "--each-plane t makes a job of each time point" in text
    assert "a time-lapse: labsight submit cell-tracks FILE follows its cells over time" in text
    assert "  [0]: YXS [Y=30, X=20, S=3] uint8; EXIF orientation 6 (read turned upright)" in text
    # a grey movie's nuclei are its only channel; a photo's RGB gets no such hint
    assert text.count("cells: --param nucleus_channel=0 (its nuclear stain)") == 1


def test_files_it_cannot_read_are_named_and_the_others_described(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.tif").write_text("not an image")
    plate = _plate(tmp_path / "plate.ome.tif")
    assert main(["inspect", str(tmp_path / "notes.tif"), str(plate), str(tmp_path / "gone.tif")]) == 2
    captured = capsys.readouterr()
    assert f"{plate}: TIFF, 2 image(s)" in captured.out
    assert f"labsight: {tmp_path / 'notes.tif'}: corrupt TIFF image (not a TIFF file" in captured.err
    assert "gone.tif: [Errno 2] No such file" in captured.err
