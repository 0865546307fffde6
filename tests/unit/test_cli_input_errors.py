"""The CLI names a missing or unreadable input file instead of printing a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from labsight.cli import main

NOWHERE = ["--gateway", "127.0.0.1:1", "--token", "t"]


def test_a_missing_image_is_named_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "plate" / "A1.png"
    assert main(["submit", "fractal", str(missing), *NOWHERE]) == 2
    assert f"labsight: {missing}: no such file or folder" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("spots.csv", "x,y\n1,two\n", "expected numbers below an optional header line"),
        ("tissue_positions.csv", "barcode,in_tissue,array_row,array_col,pxl_row_in_fullres,"
         "pxl_col_in_fullres\nAAAC-1,1,0,0,10,20\n", "give its folder instead: --visium"),
        ("spots.txt", "1,2\n", "expected a .npy, .csv or .tsv file"),
        ("absent.npy", None, "--tensor: no such file"),
    ],
)
def test_a_bad_tensor_file_says_what_is_wrong(
    tmp_path: Path, name: str, content: str | None, message: str
) -> None:
    image = tmp_path / "image.npy"
    image.write_bytes(b"")
    tensor = tmp_path / name
    if content is not None:
        tensor.write_text(content)
    with pytest.raises(SystemExit, match=message):
        main(["submit", "spot-features", str(image), "--tensor", f"spot_centres={tensor}", *NOWHERE])
