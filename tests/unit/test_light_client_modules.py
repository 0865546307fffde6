"""The light client's wheel (clients/python) holds every module the SDK imports, its core
imports none of the services' heavy packages nor numpy (an extra), and its array views name
that extra where numpy is missing (checked here without building the wheel; the integration
test installs it)."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

HEAVY = ("numpy", "torch", "onnxruntime", "numba", "scipy", "pandas", "anndata", "redis", "PIL",
         "tifffile", "services")

SDK_MODULES = ("labsight.client", "labsight.aio", "labsight.batch_submit", "labsight.inputs")

ARRAY_MODULES = ("labsight.tensors", "labsight.tables", "labsight.export", "labsight.spatial")
"""What the SDK imports when an array is asked for (the light client's arrays extra)."""


def _imported_after(*modules: str) -> list[str]:
    """Every module loaded by importing ``modules``, in a fresh interpreter."""
    script = f"import sys, json, {', '.join(modules)}; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def _imported_after_sdk() -> list[str]:
    """Every module loaded by importing the SDK's core, in a fresh interpreter."""
    return _imported_after(*SDK_MODULES)


def test_the_sdk_imports_nothing_heavy_and_the_wheel_holds_what_it_imports(repo_root: Path) -> None:
    imported = _imported_after_sdk()
    assert [name for name in imported if name.split(".")[0] in HEAVY] == []
    project = tomllib.loads((repo_root / "clients" / "python" / "pyproject.toml").read_text())
    shipped = set(project["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"].values())
    with_arrays = _imported_after(*SDK_MODULES, *ARRAY_MODULES)
    needed = {f"{name.replace('.', '/')}.py" for name in with_arrays
              if name.startswith("labsight.") and name.split(".")[1] != "v1"}
    assert needed <= shipped, f"modules the SDK imports but the wheel lacks: {needed - shipped}"
    assert {"labsight/v1", "labsight/__init__.py"} <= shipped
    dependencies = {requirement.split(">")[0].split("=")[0] for requirement in
                    project["project"]["dependencies"]}
    assert dependencies == {"grpcio", "protobuf"}
    extras = project["project"]["optional-dependencies"]
    assert all(any(r.startswith("numpy") for r in extras[name]) for name in ("arrays", "pandas", "anndata",
                                                                             "tiff"))


def test_the_array_views_name_the_extra_where_numpy_is_missing(tmp_path: Path) -> None:
    npy = tmp_path / "pixels.npy"
    npy.write_bytes(b"\x93NUMPY")  # never read: numpy is missing
    script = f"""
import sys
sys.modules["numpy"] = None  # as in an environment without the arrays extra
from labsight.client import as_image, build_request
from labsight.result import Result
from labsight.v1 import gateway_pb2 as pb, tensor_pb2
table = tensor_pb2.FeatureTable(columns=["a", "b"], row_ids=["r1"], values=tensor_pb2.Tensor(
    dtype=tensor_pb2.DATA_TYPE_FLOAT64, shape=[1, 2], data=bytes(8) + bytes.fromhex("000000000000f87f")))
result = Result(pb.JobResult(job_id="j", pipeline="fractal", tables={{"fractal": table}},
                            tensors={{"x": tensor_pb2.Tensor()}}))
print(result.to_csv(), end="")
print(build_request("fractal", {str(tmp_path / "x.png")!r}).input.image.name)
for call in (result.to_numpy, lambda: result.tensor("x"), lambda: as_image({str(npy)!r})):
    try:
        call()
    except ImportError as error:
        print(error)
"""
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    lines = done.stdout.splitlines()
    assert lines[:3] == ["id,a,b", "r1,0.0,", "x.png"], done.stderr  # NaN as an empty cell
    assert lines[3].startswith("Result.to_numpy needs numpy") and "'labsight-client[arrays]'" in lines[3]
    assert lines[4].startswith("Result.tensor needs numpy")
    assert "needs numpy" in lines[5] and "pixels.npy" in lines[5]
    assert len(lines) == 6, done.stderr
