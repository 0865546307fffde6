"""Result tables exported as CSV, Parquet, .npy and AnnData .h5ad."""

from __future__ import annotations

import json
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from labsight.export import keep_table, write_table
from labsight.tables import feature_table
from labsight.tensors import to_tensor
from labsight.v1 import gateway_pb2 as pb

VALUES = np.array([[0.1, 0.2, 0.3], [1.0, 2.0, 3.0]])


def _result(job_id: str = "job-1", coordinates: bool = True) -> pb.JobResult:
    result = pb.JobResult(job_id=job_id, pipeline="spot-features", input_name=f"{job_id}.png",
                          provenance={"model": "inception-v3", "model_version": "1"})
    result.tables["features"].CopyFrom(
        feature_table(["avgpool1", "avgpool2", "avgpool3"], VALUES, ["AAAC-1", "AAAG-1"])
    )
    if coordinates:
        result.tensors["coordinates"].CopyFrom(to_tensor(np.array([[10.0, 20.0], [30.0, 40.0]])))
    return result


def test_h5ad_holds_features_in_obsm_and_spots_in_obs(tmp_path: Path) -> None:
    path = tmp_path / "spots.h5ad"
    write_table([_result()], "features", path, "h5ad")
    adata = anndata.read_h5ad(path)
    assert list(adata.obs_names) == ["AAAC-1", "AAAG-1"]
    np.testing.assert_array_equal(adata.obsm["features"], VALUES)
    np.testing.assert_array_equal(adata.obsm["spatial"], [[10.0, 20.0], [30.0, 40.0]])
    assert adata.obs["x"].tolist() == [10.0, 30.0] and adata.obs["y"].tolist() == [20.0, 40.0]
    assert list(adata.uns["feature_columns"]) == ["avgpool1", "avgpool2", "avgpool3"]
    assert dict(adata.uns["provenance"]) == {"model": "inception-v3", "model_version": "1"}
    assert "class" not in adata.obs


def test_h5ad_keeps_class_labels_as_a_categorical_obs_column(tmp_path: Path) -> None:
    path = tmp_path / "classes.h5ad"
    write_table([_result("a"), _result("b")], "features", path, "h5ad", class_labels=["tumour", "normal"])
    adata = anndata.read_h5ad(path)
    assert adata.obs["class"].tolist() == ["tumour", "tumour", "normal", "normal"]
    assert list(adata.obs["class"].cat.categories) == ["normal", "tumour"]


def test_parquet_carries_the_provenance_and_differing_values_are_all_kept(tmp_path: Path) -> None:
    other = _result("b")
    other.provenance["model_version"] = "2"
    path = tmp_path / "features.parquet"
    write_table([_result("a"), other], "features", path, "parquet")
    metadata = pq.read_schema(path).metadata
    assert json.loads(metadata[b"labsight"]) == {"model": "inception-v3", "model_version": "1, 2"}
    assert len(pd.read_parquet(path)) == 4


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_tables_keep_ids_columns_and_exact_values(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"features.{fmt}"
    write_table([_result()], "features", path, fmt)
    frame = pd.read_csv(path, float_precision="round_trip") if fmt == "csv" else pd.read_parquet(path)
    assert list(frame.columns) == ["id", "avgpool1", "avgpool2", "avgpool3"]
    assert frame["id"].tolist() == ["AAAC-1", "AAAG-1"]
    np.testing.assert_array_equal(frame.iloc[:, 1:].to_numpy(), VALUES)


def test_npy_holds_the_values_and_several_results_are_stacked(tmp_path: Path) -> None:
    path = tmp_path / "features.npy"
    write_table([_result("a"), _result("b")], "features", path, "npy")
    np.testing.assert_array_equal(np.load(path), np.vstack([VALUES, VALUES]))
    h5ad = tmp_path / "both.h5ad"
    write_table([_result("a"), _result("b", coordinates=False)], "features", h5ad, "h5ad")
    adata = anndata.read_h5ad(h5ad)
    assert list(adata.obs_names) == ["a.png/AAAC-1", "a.png/AAAG-1", "b.png/AAAC-1", "b.png/AAAG-1"]
    assert "spatial" not in adata.obsm


def test_unknown_formats_and_tables_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="format: expected one of"):
        write_table([_result()], "features", tmp_path / "x.xlsx", "xlsx")
    with pytest.raises(ValueError, match="has no table 'cells'"):
        write_table([_result()], "cells", tmp_path / "x.csv", "csv")


def test_a_result_kept_for_one_table_exports_as_the_whole_result_does(tmp_path: Path) -> None:
    whole = _result("a")
    whole.labels["well"] = "A1"
    whole.tensors["edge"].CopyFrom(to_tensor(np.array([0, 1], np.uint8)))
    whole.tensors["crops"].CopyFrom(to_tensor(np.zeros((2, 64, 64, 4), np.uint8)))
    whole.tables["image_summary"].CopyFrom(feature_table(["count"], np.array([[2.0]]), ["a.png"]))
    kept = pb.JobResult()
    kept.CopyFrom(whole)
    assert keep_table(kept, "features") is kept
    assert sorted(kept.tables) == ["features"] and sorted(kept.tensors) == ["coordinates", "edge"]
    assert kept.ByteSize() < whole.ByteSize() // 100
    assert (kept.job_id, kept.input_name, dict(kept.labels), dict(kept.provenance)) == (
        whole.job_id, whole.input_name, dict(whole.labels), dict(whole.provenance))
    for fmt in ("csv", "h5ad"):
        write_table([whole], "features", tmp_path / f"whole.{fmt}", fmt)
        write_table([kept], "features", tmp_path / f"kept.{fmt}", fmt)
    assert (tmp_path / "kept.csv").read_text() == (tmp_path / "whole.csv").read_text()
    whole_adata, kept_adata = (anndata.read_h5ad(tmp_path / f"{n}.h5ad") for n in ("whole", "kept"))
    pd.testing.assert_frame_equal(kept_adata.obs, whole_adata.obs)
    np.testing.assert_array_equal(kept_adata.obsm["spatial"], whole_adata.obsm["spatial"])
