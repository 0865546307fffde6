"""The Open Inference Protocol stubs in labsight/oip match protos/labsight/oip exactly."""

from __future__ import annotations

import filecmp
from pathlib import Path

from labsight.oip.protogen import generate


def test_regenerating_the_open_inference_stubs_changes_nothing(repo_root: Path, tmp_path: Path) -> None:
    generate(tmp_path)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*_pb2*"))
    committed = sorted(p.relative_to(repo_root) for p in (repo_root / "labsight" / "oip").glob("*_pb2*"))
    assert generated == committed
    different = [str(p) for p in generated if not filecmp.cmp(tmp_path / p, repo_root / p, shallow=False)]
    assert different == [], f"stale generated code; run python -m labsight.oip.protogen: {different}"
