"""Label masks written one result at a time end under the names a whole batch's write gives them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from labsight.result import MaskWriter, write_label_masks
from labsight.tensors import to_tensor
from labsight.v1 import gateway_pb2 as pb


def _cells_result(job_id: str, input_name: str, label: int) -> pb.JobResult:
    result = pb.JobResult(job_id=job_id, pipeline="cells", input_name=input_name)
    mask = np.zeros((6, 8), np.uint16)
    mask[1:4, 2:5] = label
    result.tensors["cell_labels"].CopyFrom(to_tensor(mask))
    result.tensors["nucleus_labels"].CopyFrom(to_tensor(mask // 2))
    return result


def test_a_repeated_stem_renames_the_first_files_as_a_whole_batch_write_names_them(
    tmp_path: Path,
) -> None:
    results = [_cells_result("j1", "plate/A1.png", 1), _cells_result("j2", "B1.tif", 2),
               _cells_result("j3", "plate/A1.tiff", 3), _cells_result("j4", "plate/A1.png", 4)]
    writer = MaskWriter(tmp_path / "streamed")
    first = writer.add(results[0])
    assert first == [tmp_path / "streamed/plate/A1_nuclei.tif", tmp_path / "streamed/plate/A1_cells.tif"]
    for result in results[1:]:
        writer.add(result)
    whole = write_label_masks(results, tmp_path / "whole")
    assert [p.relative_to(tmp_path / "streamed") for p in writer.written] == [
        p.relative_to(tmp_path / "whole") for p in whole]
    assert [p.name for p in writer.written[::2]] == [
        "A1_j1_nuclei.tif", "B1_nuclei.tif", "A1_j3_nuclei.tif", "A1_j4_nuclei.tif"]
    on_disk = sorted(p.relative_to(tmp_path / "streamed") for p in (tmp_path / "streamed").rglob("*.tif"))
    assert on_disk == sorted(p.relative_to(tmp_path / "streamed") for p in writer.written)
    for path, label in zip(writer.written[1::2], (1, 2, 3, 4), strict=True):
        mask = tifffile.imread(path)
        assert mask.dtype == np.int32 and mask.max() == label


def test_a_result_without_masks_writes_nothing_and_stems_must_match_the_results(
    tmp_path: Path,
) -> None:
    writer = MaskWriter(tmp_path)
    with pytest.raises(KeyError, match="no label masks"):
        writer.add(pb.JobResult(job_id="j1", pipeline="fractal"))
    assert writer.written == [] and not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="2 stems for 1 results"):
        write_label_masks([_cells_result("j1", "a.png", 1)], tmp_path, ["a", "b"])
