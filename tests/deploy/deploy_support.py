"""Helpers of the deployment tests: paths, the renderer, manifest look-ups."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = ("cpu", "gpu", "hpa")

Manifest = dict[str, Any]


def load_module(path: Path) -> ModuleType:
    """Import a script that is not part of a package (deploy/render.py, the health check)."""
    spec = importlib.util.spec_from_file_location(path.stem.replace("-", "_"), path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render = load_module(REPO / "deploy" / "render.py")


def find(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    """The one manifest of ``kind`` named ``name``."""
    matches = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def of_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    """Every manifest of ``kind``."""
    return [m for m in manifests if m["kind"] == kind]


def tool(name: str) -> str:
    """A command-line tool from the test dependencies, on PATH or in this virtual environment."""
    beside_python = Path(sys.executable).with_name(name)
    found = shutil.which(name) or (str(beside_python) if beside_python.exists() else None)
    assert found, f"{name} is missing: pip install -e '.[test]'"
    return found
