"""`labsight evaluate-segmentation` on label files written by tifffile and PIL."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from labsight.cli import main


def _truth() -> np.ndarray:
    labels = np.zeros((40, 60), np.uint16)
    labels[2:12, 2:12] = 1
    labels[20:30, 20:35] = 2
    labels[5:15, 40:55] = 3
    return labels


def _rgba(labels: np.ndarray) -> np.ndarray:
    """mnfinder-style mask: one colour per object, alpha 0 = background."""
    palette = np.array([[0, 0, 0, 0], [255, 0, 0, 255], [0, 200, 50, 255], [10, 20, 250, 255]],
                       np.uint8)
    return palette[labels]


def _json_line(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_files_score_an_rgba_truth_and_print_a_table_and_json(tmp_path: Path, capsys):
    truth = _truth()
    pred = truth.astype(np.int32) * 5  # other ids, same objects...
    pred[5:15, 40:55] = 0  # ...but object 3 missed
    pred[35:39, 0:4] = 99  # and one false positive
    tifffile.imwrite(tmp_path / "pred.tif", pred)
    Image.fromarray(_rgba(truth), "RGBA").save(tmp_path / "gt.png")

    code = main(["evaluate-segmentation", str(tmp_path / "pred.tif"), str(tmp_path / "gt.png")])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].split()[:4] == ["image", "true", "pred", "AP50"]
    assert lines[1].split()[0] == "gt" and lines[2].split()[0] == "overall"
    report = _json_line(out)
    overall = report["overall"]
    assert (overall["n_true"], overall["n_predicted"], overall["true_positives"]) == (3, 3, 2)
    assert overall["ap50"] == pytest.approx(2 / 4)
    assert overall["f1"] == pytest.approx(2 / 3)
    assert overall["mean_iou"] == 1.0
    assert report["images"][0]["image"] == "gt"


def test_folders_pair_by_relative_path_and_stem_and_pool(tmp_path: Path):
    truth = _truth()
    (tmp_path / "gt" / "plate1").mkdir(parents=True)
    (tmp_path / "pred" / "plate1").mkdir(parents=True)
    Image.fromarray(_rgba(truth), "RGBA").save(tmp_path / "gt" / "plate1" / "a.png")
    Image.fromarray(truth).save(tmp_path / "gt" / "b.png")  # 16-bit grey labels
    tifffile.imwrite(tmp_path / "pred" / "plate1" / "a.tif", truth.astype(np.int32))
    tifffile.imwrite(tmp_path / "pred" / "b.tiff", np.zeros_like(truth, np.uint8))

    done = subprocess.run(
        [sys.executable, "-m", "labsight.cli", "evaluate-segmentation", "--json",
         str(tmp_path / "pred"), str(tmp_path / "gt")],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1  # --json: the JSON line only
    report = json.loads(lines[0])
    by_name = {row["image"]: row for row in report["images"]}
    assert set(by_name) == {"plate1/a", "b"}
    assert by_name["plate1/a"]["mean_ap"] == 1.0
    assert by_name["b"]["ap50"] == 0.0 and by_name["b"]["mean_iou"] is None
    assert report["overall"]["true_positives"] == 3 and report["overall"]["false_negatives"] == 3


def test_non_integer_mask_exits_2_naming_the_file(tmp_path: Path, capsys):
    tifffile.imwrite(tmp_path / "pred.tif", np.full((8, 8), 0.5, np.float32))
    tifffile.imwrite(tmp_path / "gt.tif", np.ones((8, 8), np.uint8))
    code = main(["evaluate-segmentation", str(tmp_path / "pred.tif"), str(tmp_path / "gt.tif")])
    err = capsys.readouterr().err
    assert code == 2
    assert "PRED" in err and "pred.tif" in err and "non-integer" in err


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: tifffile.imwrite(p / "gt.tif", np.full((8, 8), -1, np.int16)), "GT .*gt.tif.*>= 0"),
        (lambda p: tifffile.imwrite(p / "gt.tif", np.ones((8, 9), np.uint8)), "shape"),
        (lambda p: (p / "gt.tif").write_bytes(b"not a tiff"), "GT .*gt.tif.*cannot read"),
    ],
)
def test_bad_truth_exits_2_with_a_message(tmp_path: Path, capsys, make, message):
    tifffile.imwrite(tmp_path / "pred.tif", np.ones((8, 8), np.uint8))
    make(tmp_path)
    assert main(["evaluate-segmentation", str(tmp_path / "pred.tif"), str(tmp_path / "gt.tif")]) == 2
    assert re.search(message, capsys.readouterr().err)


def test_unpaired_files_in_folders_exit_2(tmp_path: Path, capsys):
    for side in ("pred", "gt"):
        (tmp_path / side).mkdir()
    tifffile.imwrite(tmp_path / "pred" / "a.tif", np.ones((4, 4), np.uint8))
    tifffile.imwrite(tmp_path / "gt" / "a.tif", np.ones((4, 4), np.uint8))
    tifffile.imwrite(tmp_path / "gt" / "c.tif", np.ones((4, 4), np.uint8))
    assert main(["evaluate-segmentation", str(tmp_path / "pred"), str(tmp_path / "gt")]) == 2
    err = capsys.readouterr().err
    assert "without a partner" in err and "c.tif" in err and "a.tif" not in err


def test_colour_masks_split_a_reused_colour_and_rgb_black_is_background(tmp_path: Path, capsys):
    truth = np.zeros((20, 30), np.int32)
    truth[1:5, 1:5] = 1
    truth[10:15, 20:28] = 2
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[truth > 0] = (200, 10, 10)  # one colour for two nuclei far apart
    Image.fromarray(rgb, "RGB").save(tmp_path / "gt.png")
    tifffile.imwrite(tmp_path / "pred.tif", truth)
    assert main(["evaluate-segmentation", "--json", str(tmp_path / "pred.tif"),
                 str(tmp_path / "gt.png")]) == 0
    overall = _json_line(capsys.readouterr().out)["overall"]
    assert overall["n_true"] == 2 and overall["mean_ap"] == 1.0
