"""The light client's wheel (clients/python) holds every module the SDK imports, and the SDK
imports none of the services' heavy packages (checked here without building the wheel; the
integration test installs it)."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

HEAVY = ("torch", "onnxruntime", "numba", "scipy", "pandas", "anndata", "redis", "PIL", "tifffile",
         "services")

SDK_MODULES = ("labsight.client", "labsight.aio", "labsight.batch_submit", "labsight.inputs")


def _imported_after_sdk() -> list[str]:
    """Every module loaded by importing the SDK, in a fresh interpreter."""
    script = f"import sys, json, {', '.join(SDK_MODULES)}; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_the_sdk_imports_nothing_heavy_and_the_wheel_holds_what_it_imports(repo_root: Path) -> None:
    imported = _imported_after_sdk()
    assert [name for name in imported if name.split(".")[0] in HEAVY] == []
    project = tomllib.loads((repo_root / "clients" / "python" / "pyproject.toml").read_text())
    shipped = set(project["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"].values())
    needed = {f"{name.replace('.', '/')}.py" for name in imported
              if name.startswith("labsight.") and name.split(".")[1] != "v1"}
    assert needed <= shipped, f"modules the SDK imports but the wheel lacks: {needed - shipped}"
    assert {"labsight/v1", "labsight/__init__.py"} <= shipped
    dependencies = {requirement.split(">")[0].split("=")[0] for requirement in
                    project["project"]["dependencies"]}
    assert dependencies == {"grpcio", "protobuf", "numpy"}
