"""The ``cells`` pipeline through the stack against ``segment_cells`` called directly.

Run from the repository root:

    python bench/cells_pipeline.py [--images 12] [--side 1024] [--workers 1] [--rounds 3]

``--images`` generated HPA-like 4-channel uint16 TIFF files (``bench/segmentation.py``'s
image: packed cells, 0.08 µm per pixel) go through the gateway as ``cells`` jobs:
Redis Streams, ``--workers`` worker threads, the segmentation service in its own
process (``python -m services.segmentation``) and back; the round ends when every
result (both label masks and the cell table) has been fetched. The baseline is what
the service computes, called in this process on the decoded arrays with the same
concurrency: ``segment_cells`` with the default method, then ``measure_cells``.

Both sides get one ONNX Runtime thread and one model instance per process
(LABSIGHT_ORT_THREADS=1, LABSIGHT_MODEL_INSTANCES=1) and one OpenCV/BLAS thread.
After an untimed pass, rounds alternate which side goes first; printed: each
round's images/s and ratio, min/median/max of the ratio (target >= 0.8), the load
average, and one JSON line. Redis on 127.0.0.1:6379 (or REDIS_URL), else a private one.
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")
os.environ.setdefault("LABSIGHT_ORT_THREADS", "1")
os.environ.setdefault("LABSIGHT_MODEL_INSTANCES", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import redis  # noqa: E402
import tifffile  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from segmentation import hpa_like_image  # noqa: E402
from vessel import PipelineUnderTest  # noqa: E402

from bench.service_process import start_service  # noqa: E402
from labsight.client import LabSightClient, build_request  # noqa: E402
from labsight.config import Settings  # noqa: E402
from labsight.redis_server import start_redis, stop_redis  # noqa: E402
from labsight.v1 import gateway_pb2 as pb  # noqa: E402
from services.segmentation.cells import DEFAULT_METHOD, segment_cells  # noqa: E402
from services.segmentation.measure import measure_cells  # noqa: E402

cv2.setNumThreads(1)

PIXEL_SIZE_UM = 0.08
"""HPA images' pixel size, the pipeline's default."""


def direct_rate(images: list[np.ndarray], threads: int) -> float:
    """Images per second of segmentation + measurement called in this process."""

    def one(image: np.ndarray) -> int:
        nuclei, cells = segment_cells(image[..., 0], image[..., 3], image[..., 2],
                                      pixel_size_um=PIXEL_SIZE_UM)
        return len(measure_cells(nuclei, cells, image, pixel_size_um=PIXEL_SIZE_UM).labels)

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, images))
    return len(images) / (time.perf_counter() - start)


def pipeline_rate(under_test: PipelineUnderTest, requests: list[pb.SubmitJobRequest],
                  side: int) -> float:
    """Images per second from submitting the jobs to the last result fetched."""
    with LabSightClient(under_test.gateway.address, token="", timeout_s=600) as lab:
        start = time.perf_counter()
        job_ids = lab.submit_batch(requests).job_ids
        for job_id in job_ids:
            job = lab.wait(job_id, timeout_s=600)
            if job.status != pb.JOB_STATUS_DONE:
                raise RuntimeError(f"job {job_id} ended {job.status}: {job.error}")
            labels = lab.result(job_id).tensor("cell_labels")
            if labels.shape != (side, side):
                raise RuntimeError(f"job {job_id}: cell_labels of shape {labels.shape}")
        return len(requests) / (time.perf_counter() - start)


def _redis_url() -> tuple[str, tuple[subprocess.Popen[bytes], str] | None]:
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        redis.Redis.from_url(url).ping()
        return url, None
    except redis.ConnectionError:
        private = start_redis(Path(tempfile.mkdtemp(prefix="labsight-bench-redis-")))
        return private[1], private


def throughput(count: int, side: int, workers: int, rounds: int) -> dict[str, object]:
    """Rates of the pipeline and of the direct calls, paired by round in alternating order."""
    images = [hpa_like_image(side, PIXEL_SIZE_UM, seed=index) for index in range(count)]
    folder = Path(tempfile.mkdtemp(prefix="labsight-bench-cells-"))
    files = []
    for index, image in enumerate(images):
        path = folder / f"field-{index:03d}.tif"
        tifffile.imwrite(path, np.moveaxis(image, -1, 0), imagej=True, metadata={"axes": "CYX"})
        files.append(path)
    redis_url, private = _redis_url()
    prefix = f"labsight-bench-{uuid.uuid4().hex[:8]}"
    settings = Settings(redis_url=redis_url, key_prefix=prefix, allow_anonymous=True)
    process, address = start_service("services.segmentation",
                                     {**os.environ, "LABSIGHT_LOG_LEVEL": "WARNING"})
    settings.service_addresses = {"segmentation": address, "features": "127.0.0.1:1",
                                  "classifier": "127.0.0.1:1"}

    def requests(run: str) -> list[pb.SubmitJobRequest]:
        return [build_request("cells", path, name=f"{run}-{path.stem}",
                              idempotency_key=f"{prefix}-{run}-{path.stem}") for path in files]

    direct, served = [], []
    try:
        under_test = PipelineUnderTest(settings, workers)
        try:
            pipeline_rate(under_test, requests("warm")[:2], side)
            direct_rate(images[:2], workers)
            for round_index in range(rounds):
                order = ("direct", "pipeline") if round_index % 2 == 0 else ("pipeline", "direct")
                for side_name in order:
                    if side_name == "direct":
                        direct.append(direct_rate(images, workers))
                    else:
                        served.append(pipeline_rate(under_test, requests(f"round{round_index}"), side))
        finally:
            under_test.close()
    finally:
        process.terminate()
        process.wait(timeout=30)
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"{prefix}:*", count=5000))
        for offset in range(0, len(keys), 1000):
            client.delete(*keys[offset : offset + 1000])
        if private is not None:
            stop_redis(*private)
    ratios = [s / d for s, d in zip(served, direct, strict=True)]
    return {"images": count, "side": side, "method": DEFAULT_METHOD, "workers": workers,
            "ort_threads": int(os.environ["LABSIGHT_ORT_THREADS"]), "cpus": os.cpu_count(),
            "load_average": list(os.getloadavg()), "direct_images_per_s": direct,
            "pipeline_images_per_s": served, "ratios": ratios, "min_ratio": min(ratios),
            "median_ratio": statistics.median(ratios), "max_ratio": max(ratios)}


def main() -> None:
    """Run the benchmark and print its numbers."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--side", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    report = throughput(args.images, args.side, args.workers, args.rounds)
    print(f"{args.images} images {args.side}x{args.side}x4 uint16, method {report['method']}, "
          f"{args.workers} worker(s) / thread(s), {report['cpus']} CPUs, "
          f"load {report['load_average'][0]:.2f}")
    for index, (served, direct) in enumerate(zip(report["pipeline_images_per_s"],  # type: ignore[call-overload]
                                                 report["direct_images_per_s"], strict=True)):
        print(f"   round {index + 1}: pipeline {served:6.2f} images/s, direct {direct:6.2f} images/s, "
              f"ratio {served / direct:.3f}")
    print(f"   ratio pipeline/direct: min {report['min_ratio']:.3f}  median {report['median_ratio']:.3f}  "
          f"max {report['max_ratio']:.3f} (target >= 0.8)")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
