"""`-o FILE` picks the format from the suffix, refuses a contradicting --format, and replaces
the file whole."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from labsight.export import output_format, write_atomically, write_table
from labsight.tables import feature_table
from labsight.v1 import gateway_pb2 as pb


@pytest.mark.parametrize(
    ("output", "given", "expected"),
    [("x.csv", "", "csv"), ("x.TSV", "", "tsv"), ("x.parquet", "", "parquet"),
     ("x.h5ad", "", "h5ad"), ("x.npy", "", "npy"), ("x.arff", "", "arff"),
     ("x.json", "", "json"), ("x.jsonl", "", "json"), ("x.csv", "csv", "csv"),
     ("x.out", "csv", "csv"), ("", "", "json"), ("", "csv", "csv")],
)
def test_the_suffix_names_the_format(output: str, given: str, expected: str) -> None:
    assert output_format(output, given) == expected


def test_a_format_that_contradicts_the_suffix_is_refused() -> None:
    with pytest.raises(ValueError, match="--format json contradicts the output file 'x.csv'"):
        output_format("x.csv", "json")
    with pytest.raises(ValueError, match="cannot tell the format of 'x.out'"):
        output_format("x.out")


def _result(job_id: str) -> pb.JobResult:
    result = pb.JobResult(job_id=job_id, input_name=f"{job_id}.png")
    result.tables["fractal"].CopyFrom(feature_table(["MinkDF1"], np.array([[1.5]]), [f"{job_id}.png"]))
    return result


def test_writing_twice_replaces_the_file(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    write_table([_result("a"), _result("b")], "fractal", path, "csv")
    write_table([_result("a"), _result("b")], "fractal", path, "csv")
    assert pd.read_csv(path)["id"].tolist() == ["a.png", "b.png"]
    assert [p.name for p in tmp_path.iterdir()] == ["x.csv"]


def test_a_failed_write_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "x.tsv"
    path.write_text("old\n")

    def fail(temporary: Path) -> None:
        temporary.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(path, fail)
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["x.tsv"]


def test_npy_goes_to_a_name_without_its_suffix(tmp_path: Path) -> None:
    path = tmp_path / "values.out"
    write_table([_result("a")], "fractal", path, "npy")
    assert np.load(path).tolist() == [[1.5]]
