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

ALLOWED = {"labsight-client", "grpcio", "protobuf", "numpy", "typing-extensions"}
"""What installing the light client may bring: itself, its three dependencies, and grpcio's one."""

HEAVY = ("torch", "onnxruntime", "numba", "scipy", "pandas", "redis", "PIL", "tifffile", "services")
"""Modules of the full package that a light client must neither install nor import."""

MAX_INSTALLED_MB = 100
"""Bound on everything the install puts in the environment (see the measured figures it prints)."""

FAST = {"box_sizes": "3-11"}

CLIENT_SCRIPT = """
import asyncio, json, sys, time
started = time.perf_counter()
import labsight.aio, labsight.client
import_s = time.perf_counter() - started
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
heavy = sorted(name for name in json.loads(sys.argv[4]) if name in sys.modules)
print(json.dumps({"import_s": import_s, "sync": sync.to_numpy().tolist(),
                  "async": asynchronous.to_numpy().tolist(), "columns": list(sync.tables["fractal"].columns),
                  "pipelines": pipelines, "heavy_imported": heavy}))
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
    assert not {"torch", "onnxruntime", "numba"} & set(sizes)
    assert sizes["labsight-client"] < 2
    assert total_mb < MAX_INSTALLED_MB

    image = tmp_path / "demo.png"
    image.write_bytes(encode_png(demo_image()))
    stack.start_worker()
    # -I: isolated from this checkout (no current folder or PYTHONPATH on the path)
    answer = json.loads(_run(python, "-I", "-c", CLIENT_SCRIPT, stack.gateway.address, image,
                             json.dumps(FAST), json.dumps(HEAVY)))
    print(f"import labsight.client, labsight.aio: {answer['import_s']:.3f} s")
    assert answer["heavy_imported"] == []
    full = stack.client.run("fractal", image, FAST, timeout_s=240)
    np.testing.assert_array_equal(np.array(answer["sync"]), full.to_numpy())
    np.testing.assert_array_equal(np.array(answer["async"]), full.to_numpy())
    assert answer["columns"] == list(full.tables["fractal"].columns)
    assert "fractal" in answer["pipelines"]
