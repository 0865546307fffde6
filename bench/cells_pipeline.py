"""The ``cells`` pipeline through the stack against ``segment_cells`` called directly.

Run from the repository root:

    python bench/cells_pipeline.py [--images 12] [--side 1024] [--workers 1] [--rounds 3]

``--images`` generated HPA-like 4-channel uint16 TIFF files (``bench/segmentation.py``'s
image: packed cells, 0.08 µm per pixel) go as ``cells`` jobs through a real ``labsight
up`` (its own home and Redis, ``--workers`` worker processes; ``bench/vessel.py``'s
``labsight_up``); a round ends when every result (both label masks and the cell
table) has been fetched. The baseline is what the service computes, called on the
decoded arrays in a process of its own (a session of its own, as `up`'s children)
by as many threads as the stack has jobs in flight: ``segment_cells`` with the
default method, then ``measure_cells``.

Both sides run with the same environment: LABSIGHT_ORT_THREADS and
LABSIGHT_MODEL_INSTANCES as set (default: the services' own choice). After an
untimed pass, rounds alternate which side goes first; printed: each round's
images/s and ratio, min/median/max of the ratio (target >= 0.8), the load
average, and one JSON line.
"""

from __future__ import annotations

import os

from labsight.runtime.cpus import limit_thread_pools

limit_thread_pools()  # before numpy and OpenCV load, as the services do

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import tifffile  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from segmentation import hpa_like_image  # noqa: E402
from vessel import baseline_process, labsight_up  # noqa: E402

from labsight.client import LabSightClient, build_request  # noqa: E402
from labsight.v1 import gateway_pb2 as pb  # noqa: E402
from services.gateway.worker import DEFAULT_CONCURRENCY  # noqa: E402
from services.segmentation.cells import DEFAULT_METHOD, segment_cells  # noqa: E402
from services.segmentation.measure import measure_cells  # noqa: E402

PIXEL_SIZE_UM = 0.08
"""HPA images' pixel size, the pipeline's default."""


def _cells_of_file(path: str) -> int:
    image = np.moveaxis(tifffile.imread(path), 0, -1)  # (C, Y, X) as written -> (Y, X, 4)
    nuclei, cells = segment_cells(image[..., 0], image[..., 3], image[..., 2],
                                  pixel_size_um=PIXEL_SIZE_UM)
    return len(measure_cells(nuclei, cells, image, pixel_size_um=PIXEL_SIZE_UM).labels)


def direct_rate(paths: list[str], threads: int) -> float:
    """Images per second of reading, segmenting and measuring each file in this process."""
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(_cells_of_file, paths))
    return len(paths) / (time.perf_counter() - start)


def pipeline_rate(lab: LabSightClient, paths: list[str], run: str, side: int) -> float:
    """Images per second of ``cells`` jobs from submission to the last result fetched."""
    requests = [build_request("cells", Path(path), name=f"{run}-{Path(path).stem}") for path in paths]
    start = time.perf_counter()
    for job_id in lab.submit_batch(requests).job_ids:
        job = lab.wait(job_id, timeout_s=900)
        if job.status != pb.JOB_STATUS_DONE:
            raise RuntimeError(f"job {job_id} ended {pb.JobStatus.Name(job.status)}: {job.error}")
        labels = lab.result(job_id).tensor("cell_labels")
        if labels.shape != (side, side):
            raise RuntimeError(f"job {job_id}: cell_labels of shape {labels.shape}")
    return len(paths) / (time.perf_counter() - start)


def throughput(count: int, side: int, workers: int, rounds: int) -> dict[str, object]:
    """Rates of the pipeline and of the direct calls, paired by round in alternating order."""
    folder = Path(tempfile.mkdtemp(prefix="labsight-bench-cells-"))
    paths = []
    for index in range(count):
        path = folder / f"field-{index:03d}.tif"
        image = hpa_like_image(side, PIXEL_SIZE_UM, seed=index)
        tifffile.imwrite(path, np.moveaxis(image, -1, 0), imagej=True, metadata={"axes": "CYX"})
        paths.append(str(path))
    in_flight = workers * DEFAULT_CONCURRENCY
    direct, served, loads = [], [], []
    with labsight_up(workers, DEFAULT_CONCURRENCY) as endpoints, baseline_process() as baseline, \
            LabSightClient(endpoints.gateway, token=endpoints.token, timeout_s=900) as lab:
        pipeline_rate(lab, paths[:2], "warm", side)
        baseline.submit(direct_rate, paths[:2], in_flight).result()
        for round_index in range(rounds):
            loads.append(os.getloadavg()[0])
            order = ("direct", "pipeline") if round_index % 2 == 0 else ("pipeline", "direct")
            for name in order:
                if name == "direct":
                    direct.append(baseline.submit(direct_rate, paths, in_flight).result())
                else:
                    served.append(pipeline_rate(lab, paths, f"round{round_index}", side))
    ratios = [s / d for s, d in zip(served, direct, strict=True)]
    return {"images": count, "side": side, "method": DEFAULT_METHOD, "workers": workers,
            "jobs_in_flight": in_flight, "cpus": os.cpu_count(), "load_average_per_round": loads,
            "direct_images_per_s": direct, "pipeline_images_per_s": served, "ratios": ratios,
            "min_ratio": min(ratios), "median_ratio": statistics.median(ratios), "max_ratio": max(ratios)}


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
          f"{args.workers} worker(s), {report['jobs_in_flight']} jobs in flight, {report['cpus']} CPUs")
    rows = zip(report["pipeline_images_per_s"], report["direct_images_per_s"],  # type: ignore[call-overload]
               report["load_average_per_round"], strict=True)
    for index, (served, direct, load) in enumerate(rows):
        print(f"   round {index + 1}: pipeline {served:6.2f} images/s, direct {direct:6.2f} images/s, "
              f"ratio {served / direct:.3f}, load {load:.1f}")
    print(f"   ratio pipeline/direct: min {report['min_ratio']:.3f}  median {report['median_ratio']:.3f}  "
          f"max {report['max_ratio']:.3f} (target >= 0.8)")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
