"""Submitted paths: folders expanded, bad files all named before anything is sent, names
relative to the common folder, and content keys that repeat exactly when the job does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from labsight.client import build_request
from labsight.images import encode_png
from labsight.inputs import InputError, check_inputs, content_key, expand_inputs, input_names


def _png(path: Path, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(np.full((8, 8), value, np.uint8)))
    return path


def test_a_folder_gives_its_images_and_recursive_its_subfolders_too(tmp_path: Path) -> None:
    top = [_png(tmp_path / "b.png"), _png(tmp_path / "A.TIF")]
    (tmp_path / "notes.txt").write_text("not an image")
    nested = _png(tmp_path / "sub" / "c.jpeg")
    assert expand_inputs([tmp_path]) == sorted(top)
    assert expand_inputs([tmp_path], recursive=True) == sorted([*top, nested])


def test_a_folder_gives_its_whole_slide_and_bigtiff_files(tmp_path: Path) -> None:
    slides = []
    for name in ("a.svs", "b.ndpi", "c.btf", "d.qptiff", "e.ome.tif"):
        tifffile.imwrite(tmp_path / name, np.zeros((8, 8, 3), np.uint8), photometric="rgb",
                         bigtiff=name.endswith(".btf"))
        slides.append(tmp_path / name)
    (tmp_path / "a.vsi").write_bytes(b"not read")  # Olympus VSI: not a TIFF tifffile reads
    assert expand_inputs([tmp_path]) == sorted(slides)
    check_inputs(slides)  # TIFFs by their signature: no InputError


def test_files_named_twice_are_submitted_once(tmp_path: Path) -> None:
    image = _png(tmp_path / "a.png")
    assert expand_inputs([image, tmp_path, image]) == [image]


def test_every_missing_path_and_empty_folder_is_named(tmp_path: Path) -> None:
    _png(tmp_path / "only-below" / "deep" / "x.png")
    with pytest.raises(InputError) as refused:
        expand_inputs([tmp_path / "nope.png", tmp_path / "only-below"])
    message = str(refused.value)
    assert f"{tmp_path / 'nope.png'}: no such file or folder" in message
    assert f"{tmp_path / 'only-below'}: no images" in message and "--recursive" in message


def test_names_keep_the_path_below_the_common_folder(tmp_path: Path) -> None:
    a, b = _png(tmp_path / "plate" / "a" / "n_0.png"), _png(tmp_path / "plate" / "b" / "n_0.png")
    assert [f.name for f in input_names([a, b])] == ["a/n_0.png", "b/n_0.png"]
    assert [f.name for f in input_names([a])] == ["n_0.png"]


def test_a_linked_file_is_named_where_the_link_is(tmp_path: Path) -> None:
    stored = _png(tmp_path / "store" / "blob-1234.png")
    link = tmp_path / "plate" / "a" / "A01.png"
    link.parent.mkdir(parents=True)
    link.symlink_to(stored)
    other = _png(tmp_path / "plate" / "b" / "A01.png")
    assert [f.name for f in input_names([link, other])] == ["a/A01.png", "b/A01.png"]


def test_check_names_every_file_that_is_no_image(tmp_path: Path) -> None:
    good = _png(tmp_path / "good.png")
    text = tmp_path / "notes.png"
    text.write_text("hello")
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    check_inputs([good])
    with pytest.raises(InputError) as refused:
        check_inputs([good, text, empty])
    lines = str(refused.value).splitlines()
    assert lines == [f"{text}: is not a PNG, JPEG or TIFF image (by its first bytes)",
                     f"{empty}: is empty"]


def test_content_key_changes_with_the_image_and_the_parameters_only(tmp_path: Path) -> None:
    image, other = _png(tmp_path / "a.png", 1), _png(tmp_path / "b" / "a.png", 2)
    key = content_key(build_request("fractal", image, {"box_sizes": "3-9"}))
    assert key == content_key(build_request("fractal", image, {"box_sizes": "3-9"}))
    assert key != content_key(build_request("fractal", image, {"box_sizes": "3-11"}))
    assert key != content_key(build_request("fractal", other, {"box_sizes": "3-9"}))
    assert key.startswith("cli-") and len(key) == 68


def test_a_job_goes_whole_under_the_limit_and_only_an_encoded_image_goes_in_chunks_over_it(
    tmp_path: Path,
) -> None:
    from labsight.client import fits_one_message

    tiles = np.zeros((40, 64, 64, 3), np.uint8)  # 491,520 bytes of tensor data
    stacked = build_request("fractal", None, {}, tensors={"tiles": tiles})
    assert fits_one_message(stacked, 1 << 20)
    with pytest.raises(ValueError, match="fewer tiles or patches per job") as refused:
        fits_one_message(stacked, 400_000)
    assert "its tensors and extra images" in str(refused.value)
    array = build_request("fractal", np.zeros((512, 512), np.uint8), {})
    with pytest.raises(ValueError, match="a main image given as an array"):
        fits_one_message(array, 200_000)
    encoded = build_request("fractal", _png(tmp_path / "big.png"), {})
    assert not fits_one_message(encoded, 10)  # uploaded in chunks
