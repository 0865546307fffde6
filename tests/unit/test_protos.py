"""The generated stubs match protos/ exactly, and every part of the contract is documented."""

from __future__ import annotations

import filecmp
import re
from pathlib import Path

from labsight.protogen import generate, proto_files


def test_regenerating_stubs_changes_nothing(repo_root: Path, tmp_path: Path) -> None:
    generate(tmp_path)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.py*"))
    assert generated, "protoc produced nothing"
    committed = sorted(
        p.relative_to(repo_root) for p in (repo_root / "labsight" / "v1").glob("*_pb2*")
    )
    assert generated == committed
    different = [str(p) for p in generated if not filecmp.cmp(tmp_path / p, repo_root / p, shallow=False)]
    assert different == [], f"stale generated code; run python -m labsight.protogen: {different}"


_DECLARATION = re.compile(
    r"^\s*(message|enum|service|rpc|oneof)\s+\w+|^\s*(repeated\s+|map<[^>]+>\s+)?[\w.]+\s+\w+\s*=\s*\d+;"
)


def test_every_message_field_and_rpc_has_a_doc_comment(repo_root: Path) -> None:
    undocumented = []
    for proto in proto_files(repo_root / "protos"):
        lines = proto.read_text().splitlines()
        for number, line in enumerate(lines):
            if _DECLARATION.match(line) and not lines[number - 1].strip().startswith("//"):
                undocumented.append(f"{proto.name}:{number + 1}: {line.strip()}")
    assert undocumented == []


def test_all_protos_share_the_versioned_package(repo_root: Path) -> None:
    for proto in proto_files(repo_root / "protos"):
        assert "package labsight.v1;" in proto.read_text(), proto.name
