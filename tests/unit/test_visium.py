"""Space Ranger folders read as spots, coordinate CSVs with headers, and spot AnnData in scanpy's layout."""

from __future__ import annotations

from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pytest

from labsight.cli import _load_array
from labsight.export import results_to_anndata
from labsight.spatial import add_visium, fill_anndata
from labsight.tables import feature_table
from labsight.tensors import to_tensor
from labsight.v1 import gateway_pb2 as pb
from labsight.visium import find_fullres_image, read_spaceranger
from tests.visium_support import write_spaceranger


@pytest.mark.parametrize("header", [True, False], ids=["spaceranger-2", "spaceranger-1"])
def test_a_spaceranger_folder_gives_barcodes_positions_scalefactors_and_images(
    tmp_path: Path, header: bool
) -> None:
    written = write_spaceranger(tmp_path, header=header)
    for folder in (written.run, written.outs):  # the run folder or its outs/
        spots = read_spaceranger(folder, written.fullres)
        assert spots.barcodes == written.barcodes
        assert spots.library_id == "sample-1"
        np.testing.assert_array_equal(spots.centres, written.centres)
        np.testing.assert_array_equal(spots.in_tissue, written.in_tissue)
        assert spots.array_rows.tolist()[:5] == [0, 0, 0, 0, 1]
        assert spots.array_cols.tolist()[:5] == [0, 2, 4, 6, 1]
        assert spots.spot_diameter == 89.47
        assert spots.images["hires"].shape == (240, 320, 3)
        assert spots.images["lowres"].shape == (69, 92, 3)
    tissue = read_spaceranger(written.run).tissue_spots()
    assert tissue.barcodes == written.barcodes[:9]
    np.testing.assert_array_equal(tissue.centres, written.centres[:9])


def test_the_fullres_image_is_found_next_to_the_output_unless_there_are_several(
    tmp_path: Path,
) -> None:
    written = write_spaceranger(tmp_path, image_in_outs=True)
    assert find_fullres_image(written.run) == written.fullres
    assert find_fullres_image(written.outs) == written.fullres
    (written.run / "other.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match=r"several full-resolution image candidates .*--image"):
        find_fullres_image(written.run)


def test_a_positions_header_may_order_the_columns_its_way(tmp_path: Path) -> None:
    written = write_spaceranger(tmp_path)
    positions = written.outs / "spatial" / "tissue_positions.csv"
    frame = pd.read_csv(positions)
    frame[frame.columns[::-1]].to_csv(positions, index=False)
    spots = read_spaceranger(written.run)
    assert spots.barcodes == written.barcodes
    np.testing.assert_array_equal(spots.centres, written.centres)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda outs: (outs / "spatial" / "scalefactors_json.json").unlink(),
         "scalefactors_json.json: missing"),
        (lambda outs: (outs / "spatial" / "scalefactors_json.json").write_text("{}"),
         "expected JSON with spot_diameter_fullres"),
        (lambda outs: (outs / "spatial" / "tissue_positions.csv").write_text("barcode,in_tissue\nA,1\n"),
         "header lacks columns"),
        (lambda outs: (outs / "spatial" / "tissue_positions.csv").unlink(),
         "spatial/ holds neither of"),
    ],
)
def test_a_broken_spaceranger_folder_is_named(tmp_path: Path, damage: object, message: str) -> None:
    written = write_spaceranger(tmp_path)
    damage(written.outs)  # type: ignore[operator]
    with pytest.raises(ValueError, match=message):
        read_spaceranger(written.run)
    with pytest.raises(ValueError, match="no spatial/ folder"):
        read_spaceranger(tmp_path)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("1,2\n3.5,4\n", [[1, 2], [3.5, 4]]),
        ("x,y\n1,2\n3.5,4\n", [[1, 2], [3.5, 4]]),
        ("id,Y,X,size\n7,2,1,9\n8,4,3.5,9\n", [[1, 2], [3.5, 4]]),  # x, y picked by name
    ],
)
def test_coordinate_csvs_may_have_a_header(tmp_path: Path, content: str, expected: list) -> None:
    path = tmp_path / "spots.csv"
    path.write_text(content)
    np.testing.assert_array_equal(_load_array(path), expected)


def _result(ids: list[str], values: np.ndarray, edge: list[int], labels: dict[str, str]) -> pb.JobResult:
    result = pb.JobResult(job_id="j1", pipeline="spot-features", input_name="tissue.tif",
                          provenance={"model": "m"}, labels=labels)
    result.tables["features"].CopyFrom(feature_table(["f0", "f1"], values, ids))
    result.tensors["coordinates"].CopyFrom(to_tensor(np.arange(2.0 * len(ids)).reshape(-1, 2)))
    result.tensors["edge"].CopyFrom(to_tensor(np.array(edge, np.uint8)))
    return result


def test_spot_anndata_has_x_labels_edge_flags_and_the_visium_layout(tmp_path: Path) -> None:
    written = write_spaceranger(tmp_path)
    ids = [written.barcodes[8], written.barcodes[0]]
    values = np.array([[1.0, 2.0], [3.0, 4.0]])
    adata = results_to_anndata([_result(ids, values, [1, 0], {"sample": "LIMS-42", "x": "clash"})],
                               "features")
    assert adata.X.dtype == np.float32 and adata.X.shape == (2, 2)
    assert list(adata.var_names) == ["f0", "f1"]
    assert adata.obs["edge"].tolist() == [True, False]
    assert adata.obs["sample"].tolist() == ["LIMS-42", "LIMS-42"]
    assert adata.obs["label_x"].tolist() == ["clash", "clash"]  # x is the coordinate column
    add_visium(adata, read_spaceranger(written.run, written.fullres))
    library = adata.uns["spatial"]["sample-1"]
    assert library["scalefactors"]["spot_diameter_fullres"] == 89.47
    assert library["images"]["hires"].shape == (240, 320, 3)
    assert library["metadata"]["source_image_path"] == str(written.fullres)
    assert adata.obs["array_row"].tolist() == [2, 0]
    assert adata.obs["in_tissue"].tolist() == [1, 1]
    path = tmp_path / "spots.h5ad"
    adata.write_h5ad(path)
    back = anndata.read_h5ad(path)
    assert back.uns["spatial"]["sample-1"]["scalefactors"]["tissue_hires_scalef"] == 0.5
    with pytest.raises(ValueError, match="none of the 2 spot ids is a barcode"):
        add_visium(results_to_anndata([_result(["0", "1"], values, [0, 0], {})], "features"),
                   read_spaceranger(written.run))


def test_an_existing_anndata_is_filled_by_barcode_and_keeps_its_x(tmp_path: Path) -> None:
    counts = np.arange(12.0).reshape(3, 4)
    target = anndata.AnnData(X=counts, obs=pd.DataFrame(index=["C-1", "A-1", "Z-1"]))
    features = results_to_anndata(
        [_result(["A-1", "B-1", "C-1"], np.array([[1.0, 2], [3, 4], [5, 6]]), [0, 1, 1], {"k": "v"})],
        "features")
    assert fill_anndata(target, features) == 2
    np.testing.assert_array_equal(target.X, counts)
    np.testing.assert_array_equal(target.obsm["features"][:2], [[5, 6], [1, 2]])
    assert np.isnan(target.obsm["features"][2]).all()
    assert list(target.uns["feature_columns"]) == ["f0", "f1"]
    assert target.obs["edge"].tolist()[:2] == [True, False]
    path = tmp_path / "filled.h5ad"
    target.write_h5ad(path)  # missing spots' flags and labels must not make it unwritable
    assert anndata.read_h5ad(path).obs["k"].tolist()[:2] == ["v", "v"]
    with pytest.raises(ValueError, match="none of its 3 obs_names is a spot id"):
        fill_anndata(target, results_to_anndata(
            [_result(["Q-1"], np.ones((1, 2)), [0], {})], "features"))
