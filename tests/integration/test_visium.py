"""Visium as it comes: a Space Ranger folder through `labsight submit --visium` to scanpy-ready AnnData."""

from __future__ import annotations

import json
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pytest

from labsight.cli import main
from services.features.models import DEFAULT_MODEL
from tests.integration.conftest import InProcessStack
from tests.visium_support import SpaceRangerRun, write_spaceranger


def _submit(stack: InProcessStack, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Submit through the CLI, wait, and return the job id of the done job."""
    gateway = ["--gateway", stack.gateway.address, "--token", ""]
    code = main(["submit", "spot-features", *args, *gateway, "--wait", "--json",
                 "--param", f"model={DEFAULT_MODEL}"])
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and line["status"] == "done", line
    return str(line["job_id"])


def _results(stack: InProcessStack, job_id: str, *args: str) -> None:
    assert main(["results", job_id, "--gateway", stack.gateway.address, "--token", "", *args]) == 0


def _sc_read_visium_like(written: SpaceRangerRun, path: Path) -> np.ndarray:
    """An h5ad as scanpy's read_visium makes it (every spot, gene counts in X); returns X."""
    counts = np.random.default_rng(3).poisson(2.0, (len(written.barcodes), 5)).astype(np.float32)
    adata = anndata.AnnData(X=counts, obs=pd.DataFrame(index=written.barcodes),
                            var=pd.DataFrame(index=[f"gene{i}" for i in range(5)]))
    adata.obsm["spatial"] = written.centres
    adata.uns["spatial"] = {"sample-1": {"scalefactors": written.scalefactors}}
    adata.write_h5ad(path)
    return counts


def test_a_spaceranger_folder_becomes_spot_anndata_with_labels_edges_and_the_visium_layout(
    stack: InProcessStack, model_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack.start_worker()
    written = write_spaceranger(tmp_path)  # Space Ranger 2.x: tissue_positions.csv with a header
    job_id = _submit(stack, capsys, "--visium", str(written.run),
                     "--label", "sample=LIMS-42", "--label", "slide=V19L01-041")
    output = tmp_path / "spots.h5ad"
    _results(stack, job_id, "-o", str(output), "--visium", str(written.run))
    adata = anndata.read_h5ad(output)
    tissue = written.barcodes[:9]  # the last three spots are off the tissue
    assert list(adata.obs_names) == tissue
    assert adata.X is not None and adata.X.dtype == np.float32 and adata.X.shape == (9, 1280)
    np.testing.assert_array_equal(adata.X, adata.obsm["features"].astype(np.float32))
    assert np.isfinite(adata.X).all()
    np.testing.assert_array_equal(adata.obsm["spatial"], written.centres[:9])
    edge = dict(zip(adata.obs_names, adata.obs["edge"], strict=True))
    assert edge.pop("AAACCGTTCGTCCAGG-1") and not any(edge.values())  # padded, flagged, present
    assert set(adata.obs["sample"]) == {"LIMS-42"} and set(adata.obs["slide"]) == {"V19L01-041"}
    library = adata.uns["spatial"]["sample-1"]
    assert library["scalefactors"]["spot_diameter_fullres"] == written.scalefactors["spot_diameter_fullres"]
    assert library["images"]["hires"].shape == (240, 320, 3)
    assert adata.obs["in_tissue"].tolist() == [1] * 9

    existing = tmp_path / "visium.h5ad"
    counts = _sc_read_visium_like(written, existing)
    _results(stack, job_id, "--into", str(existing))
    filled = anndata.read_h5ad(existing)
    np.testing.assert_array_equal(filled.X, counts)
    assert list(filled.obs_names) == written.barcodes
    np.testing.assert_array_equal(filled.obsm["features"][:9], adata.obsm["features"])
    assert np.isnan(filled.obsm["features"][9:]).all()  # off-tissue spots got no patch
    assert filled.uns["spatial"]["sample-1"]["scalefactors"]["tissue_hires_scalef"] == 0.5


def test_a_spaceranger_1_folder_without_header_and_a_named_image(
    stack: InProcessStack, model_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack.start_worker()
    written = write_spaceranger(tmp_path, header=False, width=660)
    fullres = tmp_path / "he.tif"
    written.fullres.rename(fullres)
    with pytest.raises(SystemExit, match="keeps no full-resolution image.*--image FULLRES.tif"):
        main(["submit", "spot-features", "--visium", str(written.outs),
              "--gateway", stack.gateway.address, "--token", ""])
    job_id = _submit(stack, capsys, "--visium", str(written.outs), "--image", str(fullres),
                     "--param", "spot_edge=drop")
    output = tmp_path / "spots.h5ad"
    _results(stack, job_id, "-o", str(output))
    adata = anndata.read_h5ad(output)
    assert list(adata.obs_names) == [b for b in written.barcodes[:9] if b != "AAACCGTTCGTCCAGG-1"]
    assert not adata.obs["edge"].any()
