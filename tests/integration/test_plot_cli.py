"""`labsight plot` against real jobs of an in-process stack: curves by group, plates, spots, cells."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from skimage import data

from labsight.cli import main
from labsight.client import build_request
from labsight.v1 import gateway_pb2 as pb
from services.features.models import DEFAULT_MODEL

from .conftest import InProcessStack

RNG = np.random.default_rng(11)


def _gateway(stack: InProcessStack) -> list[str]:
    return ["--gateway", stack.gateway.address, "--token", ""]


def _done(stack: InProcessStack, job_id: str) -> None:
    job = stack.client.wait(job_id, timeout_s=300)
    assert job.status == pb.JOB_STATUS_DONE, job.error


def _white_share(path: Path) -> float:
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("L"))
    return float(np.mean(pixels > 250))


def test_plot_draws_a_fractal_batch_by_group_and_as_a_plate(
    stack: InProcessStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack.start_worker()
    batch = f"plate-{uuid.uuid4().hex[:8]}"
    names = [f"plate1_B{column:02d}_s1.png" for column in range(1, 7)]
    requests = [
        build_request("fractal", (RNG.random((48, 48)) < 0.2 + 0.1 * i).astype(np.uint8) * 255,
                      {"box_sizes": "3-11"}, labels={"class": "ab"[i % 2]}, name=name)
        for i, name in enumerate(names)
    ]
    job_ids = stack.client.submit_batch(requests, batch).job_ids
    for job_id in job_ids:
        _done(stack, job_id)
    dimensions = [stack.client.result(job_id).scalars["fractal_dimension"] for job_id in job_ids]
    capsys.readouterr()
    curves = tmp_path / "curves.svg"
    assert main(["plot", "--batch", batch, *_gateway(stack), "-o", str(curves), "--by", "class"]) == 0
    stderr = capsys.readouterr().err
    assert "curves plot of 6 results written to" in stderr
    assert "--kind plate draws a plate heatmap" in stderr
    svg = curves.read_text()
    assert "a (n=3): D = " in svg and "b (n=3): D = " in svg

    groups = tmp_path / "groups.csv"
    groups.write_text("image,treatment\n" + "".join(
        f"{name},{'low' if i < 3 else 'high'}\n" for i, name in enumerate(names)))
    assert main(["plot", "--batch", batch, *_gateway(stack), "-o", str(curves),
                 "--groups", str(groups)]) == 0
    svg = curves.read_text()
    assert "low (n=3)" in svg and "high (n=3)" in svg

    plate = tmp_path / "plate.svg"
    assert main(["plot", "--batch", batch, *_gateway(stack), "-o", str(plate), "--kind", "plate"]) == 0
    assert "plate plot of 6 results" in capsys.readouterr().err
    svg = plate.read_text()
    assert "fractal_dimension: 6 images in 6 of 96 wells" in svg
    for value in dimensions:
        assert f"{value:.3g}" in svg  # each well's value written in its well

    with pytest.raises(SystemExit, match="jobs without label 'dose'"):
        main(["plot", "--batch", batch, *_gateway(stack), "-o", str(plate), "--by", "dose"])
    with pytest.raises(SystemExit, match="give --by LABEL or --groups CSV, not both"):
        main(["plot", "--batch", batch, *_gateway(stack), "-o", str(plate), "--by", "class",
              "--groups", str(groups)])


def test_plot_draws_spots_on_their_tissue_and_cells_as_outlines(
    stack: InProcessStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack.start_worker()
    tissue = data.chelsea()  # 300 x 451 RGB
    tissue_path = tmp_path / "tissue.png"
    Image.fromarray(tissue).save(tissue_path)
    centres = np.array([[100.0, 100.0], [250.0, 150.0], [350.0, 200.0]])
    spots = stack.client.submit("spot-features", tissue_path,
                                {"model": DEFAULT_MODEL, "spot_diameter": 80},
                                tensors={"spot_centres": centres})
    mask = np.zeros(tissue.shape[:2], np.int32)
    mask[50:120, 60:110], mask[150:260, 200:300], mask[180:250, 20:90] = 4, 9, 12
    mask_path = tmp_path / "cells.tif"
    tifffile.imwrite(mask_path, mask)
    cells = stack.client.submit("spot-features", tissue_path, {"model": DEFAULT_MODEL},
                                tensors={"cell_labels": mask})
    _done(stack, spots.job_id)
    _done(stack, cells.job_id)
    capsys.readouterr()

    on_tissue, on_white = tmp_path / "spots.png", tmp_path / "white.png"
    assert main(["plot", spots.job_id, *_gateway(stack), "-o", str(on_tissue),
                 "--image", str(tissue_path)]) == 0
    assert "tissue plot of 1 result" in capsys.readouterr().err
    assert main(["plot", spots.job_id, *_gateway(stack), "-o", str(on_white)]) == 0
    assert "--image FILE to draw it underneath" in capsys.readouterr().err
    assert _white_share(on_tissue) < _white_share(on_white) - 0.1  # the cat is there
    svg = tmp_path / "spots.svg"
    assert main(["plot", spots.job_id, *_gateway(stack), "-o", str(svg), "--colour-by", "PC2"]) == 0
    assert re.search(r"3 spots, 80 px across", svg.read_text())

    outlined = tmp_path / "cells.png"
    assert main(["plot", cells.job_id, *_gateway(stack), "-o", str(outlined)]) == 0
    assert "--cell-labels MASK" in capsys.readouterr().err  # no mask: a PCA, and how to do better
    assert main(["plot", cells.job_id, *_gateway(stack), "-o", str(outlined),
                 "--image", str(tissue_path), "--cell-labels", str(mask_path)]) == 0
    assert "tissue plot of 1 result" in capsys.readouterr().err
    tifffile.imwrite(tmp_path / "small.tif", mask[:100])
    with pytest.raises(SystemExit, match="not the image's"):
        main(["plot", cells.job_id, *_gateway(stack), "-o", str(outlined),
              "--image", str(tissue_path), "--cell-labels", str(tmp_path / "small.tif")])
