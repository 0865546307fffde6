"""The light client (clients/python, `labsight-client`): its wheel, built from this repository,
installs alone in a fresh virtual environment without the services' heavy packages, and its
sync and asyncio SDK get the same results from a real gateway as the full package does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from labsight.demo import demo_image
from labsight.images import encode_png

from .conftest import InProcessStack

ALLOWED = {"labsight-client", "grpcio", "protobuf", "typing-extensions"}
"""What installing the light client may bring: itself, its two dependencies, and grpcio's one."""

HEAVY = ("numpy", "torch", "onnxruntime", "numba", "scipy", "pandas", "redis", "PIL", "tifffile",
         "services")
"""Modules of the full package that the light client's core must neither install nor import."""

MAX_INSTALLED_MB = 60
"""Bound on everything the base install puts in the environment (see the measured figures it prints)."""

MAX_IMPORT_CPU_S = 0.5
"""Bound on the CPU time of ``import labsight.client, labsight.aio`` in the fresh environment."""

FAST = {"box_sizes": "3-11"}

CLIENT_SCRIPT = """
import asyncio, json, sys, time
started = time.process_time()
import labsight.aio, labsight.client
import_cpu_s = time.process_time() - started
from labsight.aio import AsyncLabSightClient
from labsight.client import LabSightClient

address, image, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
with LabSightClient(address, token="") as lab:
    sync = lab.run("fractal", image, params, timeout_s=240)

async def run_async():
    async with AsyncLabSightClient(address, token="") as lab:
        pipelines = [info.name for info in await lab.pipelines()]
        return await lab.run("fractal", image, params, timeout_s=240), pipelines

asynchronous, pipelines = asyncio.run(run_async())
try:
    sync.to_numpy()
    refused = ""
except ImportError as error:
    refused = str(error)
heavy = sorted(name for name in json.loads(sys.argv[4]) if name in sys.modules)
print(json.dumps({"import_cpu_s": import_cpu_s, "sync": sync.tables["fractal"].values.data.hex(),
                  "async": asynchronous.tables["fractal"].values.data.hex(), "csv": sync.to_csv(),
                  "columns": list(sync.tables["fractal"].columns), "pipelines": pipelines,
                  "heavy_imported": heavy, "to_numpy_refused": refused}))
"""

ARRAYS_SCRIPT = """
import json, sys
from labsight.client import LabSightClient
with LabSightClient(sys.argv[1], token="") as lab:
    result = lab.run("fractal", sys.argv[2], json.loads(sys.argv[3]), timeout_s=240)
print(json.dumps(result.to_numpy().tolist()))
"""


def _run(*command: str | Path) -> str:
    done = subprocess.run([str(part) for part in command], capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{command}: {done.stderr[-3000:]}"
    return done.stdout


def _installed(python: Path) -> tuple[dict[str, float], float]:
    """Megabytes of each distribution installed in the environment of ``python``, and in all."""
    listing = _run(python, "-I", "-c", """
import json, os, sysconfig
from importlib import metadata
site = sysconfig.get_paths()["purelib"]
sizes = {}
for dist in metadata.distributions():
    files = [dist.locate_file(f) for f in dist.files or []]
    name = dist.metadata["Name"].lower().replace("_", "-")
    sizes[name] = sum(os.path.getsize(f) for f in files if os.path.isfile(f))
total = sum(os.path.getsize(os.path.join(root, f)) for root, _, names in os.walk(site) for f in names)
print(json.dumps([sizes, total]))
""")
    sizes, total = json.loads(listing)
    return {name: size / 1e6 for name, size in sizes.items()}, total / 1e6


@pytest.mark.timeout(900)
def test_light_client_installs_alone_and_gets_the_gateways_results(
    stack: InProcessStack, repo_root: Path, tmp_path: Path
) -> None:
    wheels = tmp_path / "wheels"
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", wheels,
         repo_root / "clients" / "python")
    (wheel,) = wheels.glob("labsight_client-*.whl")
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)  # so all it holds is what pip installs
    python = venv / "bin" / "python"
    _run(sys.executable, "-m", "pip", "--python", python, "install", "-q", wheel)

    sizes, total_mb = _installed(python)
    print(f"installed: {total_mb:.1f} MB;",
          ", ".join(f"{name} {mb:.1f} MB" for name, mb in sorted(sizes.items())))
    assert set(sizes) <= ALLOWED, f"unexpected packages: {set(sizes) - ALLOWED}"
    assert sizes["labsight-client"] < 2
    assert total_mb < MAX_INSTALLED_MB

    image = tmp_path / "demo.png"
    image.write_bytes(encode_png(demo_image()))
    stack.start_worker()
    # -I: isolated from this checkout (no current folder or PYTHONPATH on the path)
    answer = json.loads(_run(python, "-I", "-c", CLIENT_SCRIPT, stack.gateway.address, image,
                             json.dumps(FAST), json.dumps(HEAVY)))
    print(f"import labsight.client, labsight.aio: {answer['import_cpu_s']:.3f} s CPU")
    assert answer["heavy_imported"] == []
    assert answer["import_cpu_s"] < MAX_IMPORT_CPU_S
    full = stack.client.run("fractal", image, FAST, timeout_s=240)
    assert answer["sync"] == answer["async"] == full.tables["fractal"].values.data.hex()
    assert answer["columns"] == list(full.tables["fractal"].columns)
    assert answer["csv"] == full.to_csv()
    assert "fractal" in answer["pipelines"]
    assert "pip install 'labsight-client[arrays]'" in answer["to_numpy_refused"]

    # The arrays extra brings numpy, and with it the array views.
    _run(sys.executable, "-m", "pip", "--python", python, "install", "-q", f"{wheel}[arrays]")
    assert "numpy" in _installed(python)[0]
    arrays = json.loads(_run(python, "-I", "-c", ARRAYS_SCRIPT, stack.gateway.address, image,
                             json.dumps(FAST)))
    np.testing.assert_array_equal(np.array(arrays), full.to_numpy())


def test_to_csv_reads_the_table_without_numpy_as_numpy_does(stack: InProcessStack) -> None:
    stack.start_worker()
    result = stack.client.run("fractal", demo_image(), FAST, timeout_s=240)
    lines = result.to_csv().splitlines()
    table = result.tables["fractal"]
    assert lines[0].split(",") == ["id", *table.columns] and len(lines) == 1 + len(table.row_ids)
    parsed = np.array([[float(cell) if cell else np.nan for cell in line.split(",")[1:]]
                       for line in lines[1:]])
    np.testing.assert_array_equal(parsed, result.to_numpy())
