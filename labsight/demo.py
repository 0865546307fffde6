"""The demo submission of ``labsight up --demo``: a fractal job on a reproducible test image."""

from __future__ import annotations

from typing import Any

import numpy as np

from labsight.client import LabSightClient
from labsight.results import result_to_dict
from labsight.v1 import gateway_pb2 as pb


def demo_image() -> np.ndarray:
    """The 64x64 RGB checkerboard-plus-noise image of the seed's fractal reference outputs."""
    rng = np.random.RandomState(7)
    yy, xx = np.mgrid[0:64, 0:64]
    base = np.where(((xx // 8) + (yy // 8)) % 2 == 0, 60, 160)
    noisy = base[..., None] + rng.randint(0, 16, size=(64, 64, 3)) + np.array([0, 10, 20])
    return noisy.astype(np.uint8)


def run_demo(client: LabSightClient, timeout_s: float = 300.0) -> dict[str, Any]:
    """Submit the demo fractal job, wait for it, and return its summary."""
    job = client.submit("fractal", demo_image(), {"percolation": True}, labels={"source": "demo"})
    job = client.wait(job.job_id, timeout_s)
    summary: dict[str, Any] = {
        "job_id": job.job_id,
        "pipeline": job.pipeline,
        "status": pb.JobStatus.Name(job.status).removeprefix("JOB_STATUS_").lower(),
    }
    if job.status == pb.JOB_STATUS_DONE:
        result = result_to_dict(client.result(job.job_id))
        summary["fractal_dimension"] = result["scalars"]["fractal_dimension"]
        summary["lacunarity"] = result["tensors"]["lacunarity"]
    else:
        summary["error"] = job.error
    return summary
