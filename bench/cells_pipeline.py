"""The ``cells`` pipeline through the stack against ``segment_cells`` called directly.

Run from the repository root:

    python bench/cells_pipeline.py [--images 12] [--side 1024] [--workers 1] [--rounds 6] [--png]

``--images`` generated HPA-like 4-channel uint16 TIFF files (``bench/segmentation.py``'s
image: packed cells, 0.08 µm per pixel; with ``--png``, since 2026-12-07, each image as
four 16-bit channel PNGs, HPA's layout, sent as the job's inputs red, green, blue and
yellow, and read by the baseline with OpenCV) go as ``cells`` jobs through a real ``labsight
up`` (its own home and Redis, ``--workers`` worker processes; ``bench/vessel.py``'s
``labsight_up``); a round ends when every result (both label masks and the cell
table) has been fetched. The baseline is what the service computes: reading each
file, ``segment_cells`` with the default method, then ``measure_cells``, in two
variants: one process running as many threads as the stack has jobs in flight,
and, since 2026-12-06, one process per CPU (``usable_cpus()``), each on its share of
the files (``paths[i::n]``) with its share of those threads, timed from this
process until the last of them finished (the stack's work runs in the worker and
the segmentation service, two interpreters that share no GIL; until then the
one-process variant was the only baseline). In every round the faster variant
is the baseline; both variants' figures are printed, and how often each was the
faster. Every baseline process runs in a session of its own, as `up`'s children
do, and starts with the glibc malloc variables `up` gives the segmentation
service (``PROCESS_MALLOC["segmentation"]``, MALLOC_ARENA_MAX=2 among them; glibc
reads them at process start; since 2026-12-06; ``bench/vessel.py``'s
``baseline_environment``).

Both sides otherwise run with the same environment: LABSIGHT_ORT_THREADS and
LABSIGHT_MODEL_INSTANCES as set (default: the services' own choice; in the
per-CPU processes, where unset, one ONNX Runtime session of their share of the
CPUs' threads, and numba and OpenMP threads as many, as `up` sizes a service of
several processes). Every process is started and warm (model loaded, kernels
compiled) before the rounds, untimed, and the pipeline takes an untimed batch;
then ``--rounds`` rounds (default 6, an even number) run the pipeline and the two
variants, paired (``bench/_paired.py``): the direct calls first in odd rounds, the
pipeline in even ones (until 2026-12-06 the default of 3 rounds put the direct
calls first in 2 of 3), the variants' order swapped every two rounds. Printed:
each round's order, images/s of each side, the ratio to the faster variant and
the load average before and after; min/median/max of the ratio (target >= 0.8) and of each variant's
images/s; and one JSON line.
"""

from __future__ import annotations

import os

from labsight.runtime.cpus import limit_thread_pools

limit_thread_pools()  # before numpy and OpenCV load, as the services do

import argparse  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import tifffile  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from segmentation import hpa_like_image  # noqa: E402
from vessel import (  # noqa: E402
    PROCESSES,
    THREADS,
    VARIANTS,
    baseline_environment,
    baseline_process,
    baseline_rounds,
    baseline_shares,
    faster_variants,
    labsight_up,
    share_count,
    threads_of,
)

from bench._paired import round_ratios, spread  # noqa: E402
from labsight.client import LabSightClient, build_request  # noqa: E402
from labsight.v1 import gateway_pb2 as pb  # noqa: E402
from labsight.v1 import tensor_pb2  # noqa: E402
from services.gateway.worker import DEFAULT_CONCURRENCY  # noqa: E402
from services.segmentation.cells import DEFAULT_METHOD, segment_cells  # noqa: E402
from services.segmentation.measure import measure_cells  # noqa: E402

PIXEL_SIZE_UM = 0.08
"""HPA images' pixel size, the pipeline's default."""


CHANNELS = ("red", "green", "blue", "yellow")
"""The HPA channel roles, in the order of the generated image's channels."""

Field = str | tuple[str, ...]
"""One image: a 4-channel TIFF's path, or the paths of its four channel PNGs (HPA's layout)."""


def read_field(field: Field) -> np.ndarray:
    """The (Y, X, 4) pixels of a field: the TIFF read with tifffile, the channel PNGs with
    OpenCV (the fastest PNG reader here) and stacked."""
    if isinstance(field, str):
        return np.moveaxis(tifffile.imread(field), 0, -1)  # (C, Y, X) as written -> (Y, X, 4)
    return np.stack([cv2.imread(path, cv2.IMREAD_UNCHANGED) for path in field], axis=-1)


def _cells_of_file(field: Field) -> int:
    image = read_field(field)
    nuclei, cells = segment_cells(image[..., 0], image[..., 3], image[..., 2],
                                  pixel_size_um=PIXEL_SIZE_UM)
    return len(measure_cells(nuclei, cells, image, pixel_size_um=PIXEL_SIZE_UM).labels)


def direct_rate(paths: list[Field], threads: int) -> float:
    """Images per second of reading, segmenting and measuring each file in this process."""
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(_cells_of_file, paths))
    return len(paths) / (time.perf_counter() - start)


def cells_share(paths: list[Field], threads: int) -> Callable[[], int]:
    """The work of one process of the per-CPU variant, warmed on its first two files (model
    loaded, kernels compiled): reading, segmenting and measuring ``paths`` on ``threads``
    threads; the work returns the cells found."""
    pool = ThreadPoolExecutor(threads)

    def cells(batch: list[Field]) -> int:
        return sum(pool.map(_cells_of_file, batch))

    cells(paths[:2])
    return functools.partial(cells, paths)


def field_request(field: Field, name: str) -> pb.SubmitJobRequest:
    """The ``cells`` job of one field: its TIFF as the main image, or its PNGs as the inputs
    red, green, blue and yellow (as `labsight submit` sends an HPA folder)."""
    if isinstance(field, str):
        return build_request("cells", Path(field), name=name)
    return build_request("cells", tensor_pb2.Image(), name=name,
                         images={role: Path(path) for role, path in zip(CHANNELS, field, strict=True)})


def pipeline_rate(lab: LabSightClient, paths: list[Field], run: str, side: int) -> float:
    """Images per second of ``cells`` jobs from submission to the last result fetched."""
    requests = [field_request(field, f"{run}-{index}") for index, field in enumerate(paths)]
    start = time.perf_counter()
    for job_id in lab.submit_batch(requests).job_ids:
        job = lab.wait(job_id, timeout_s=900)
        if job.status != pb.JOB_STATUS_DONE:
            raise RuntimeError(f"job {job_id} ended {pb.JobStatus.Name(job.status)}: {job.error}")
        labels = lab.result(job_id).tensor("cell_labels")
        if labels.shape != (side, side):
            raise RuntimeError(f"job {job_id}: cell_labels of shape {labels.shape}")
    return len(paths) / (time.perf_counter() - start)


def write_images(count: int, side: int, png: bool = False) -> list[Field]:
    """``count`` generated images of ``side``² written in a new folder, each as a 4-channel
    TIFF or (``png``) as four 16-bit channel PNGs; their paths."""
    folder = Path(tempfile.mkdtemp(prefix="labsight-bench-cells-"))
    fields: list[Field] = []
    for index in range(count):
        image = hpa_like_image(side, PIXEL_SIZE_UM, seed=index)
        if png:
            paths = tuple(str(folder / f"field-{index:03d}_{role}.png") for role in CHANNELS)
            for channel, path in enumerate(paths):
                cv2.imwrite(path, np.ascontiguousarray(image[..., channel]))
            fields.append(paths)
            continue
        path = folder / f"field-{index:03d}.tif"
        tifffile.imwrite(path, np.moveaxis(image, -1, 0), imagej=True, metadata={"axes": "CYX"})
        fields.append(str(path))
    return fields


def throughput(count: int, side: int, workers: int, rounds: int, png: bool = False) -> dict[str, object]:
    """Rates of the pipeline and of the direct calls in their two variants, paired by round
    (:func:`vessel.baseline_rounds`); each round's faster variant is its baseline."""
    paths = write_images(count, side, png)
    in_flight = workers * DEFAULT_CONCURRENCY
    shares = share_count(count)
    share_threads = [threads_of(in_flight, share, shares) for share in range(shares)]
    loaders = [functools.partial(cells_share, paths[share::shares], share_threads[share])
               for share in range(shares)]
    with labsight_up(workers, DEFAULT_CONCURRENCY) as endpoints, baseline_process() as baseline, \
            baseline_shares(loaders) as processes, \
            LabSightClient(endpoints.gateway, token=endpoints.token, timeout_s=900) as lab:
        pipeline_rate(lab, paths[:2], "warm", side)
        baseline.submit(direct_rate, paths[:2], in_flight).result()
        runs = iter(range(rounds))

        def per_cpu() -> float:
            seconds, _, _ = processes.run()
            return count / seconds

        figures, loads, orders = baseline_rounds(
            {THREADS: lambda: baseline.submit(direct_rate, paths, in_flight).result(),
             PROCESSES: per_cpu},
            lambda: pipeline_rate(lab, paths, f"round{next(runs)}", side), rounds)
    faster = faster_variants(figures)
    direct = [figures[variant][index] for index, variant in enumerate(faster)]
    ratios = round_ratios(figures["pipeline"], direct)
    return {"images": count, "side": side, "files": "png" if png else "tiff",
            "method": DEFAULT_METHOD, "workers": workers,
            "jobs_in_flight": in_flight, "baseline_processes": shares,
            "threads_per_process": share_threads, "cpus": os.cpu_count(),
            "baseline_environment": {THREADS: baseline_environment(),
                                     PROCESSES: baseline_environment(shares)},
            "load_average_per_round": loads, "order_per_round": orders,
            "direct_threads_images_per_s": figures[THREADS],
            "direct_processes_images_per_s": figures[PROCESSES], "faster_per_round": faster,
            "faster_rounds": {name: faster.count(name) for name in VARIANTS},
            "direct_images_per_s": direct, "pipeline_images_per_s": figures["pipeline"],
            "ratios": ratios, "min_ratio": min(ratios), "median_ratio": statistics.median(ratios),
            "max_ratio": max(ratios)}


def main() -> None:
    """Run the benchmark and print its numbers."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--side", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=6,
                        help="rounds; the direct calls go first in odd rounds, the pipeline in even "
                             "ones, so an even number puts each first equally often")
    parser.add_argument("--png", action="store_true",
                        help="write each image as four 16-bit channel PNGs (HPA's layout, sent as "
                             "the inputs red, green, blue, yellow) instead of one 4-channel TIFF")
    args = parser.parse_args()
    report = throughput(args.images, args.side, args.workers, args.rounds, args.png)
    print(f"{args.images} images {args.side}x{args.side}x4 uint16 as "
          f"{'four channel PNGs' if args.png else 'one TIFF'} each, method {report['method']}, "
          f"{args.workers} worker(s), {report['jobs_in_flight']} jobs in flight, {report['cpus']} CPUs; "
          f"direct in one process of {report['jobs_in_flight']} threads and in "
          f"{report['baseline_processes']} processes (one per CPU) of {report['threads_per_process']} "
          f"threads, each round's faster the baseline; baseline environments "
          f"{report['baseline_environment']}")
    rows = zip(report["pipeline_images_per_s"], report["direct_threads_images_per_s"],  # type: ignore[call-overload]
               report["direct_processes_images_per_s"], report["faster_per_round"],
               report["ratios"], report["order_per_round"], report["load_average_per_round"], strict=True)
    for index, (served, threads, processes, faster, ratio, order, load) in enumerate(rows):
        print(f"   round {index + 1} ({' -> '.join(order)}): pipeline {served:6.2f} images/s, direct "
              f"threads {threads:6.2f}, direct processes {processes:6.2f} images/s, ratio to the "
              f"faster ({faster}) {ratio:.3f}, load {load[0]:.1f} -> {load[1]:.1f}")
    print(f"   ratio pipeline/direct (each round's faster variant): min {report['min_ratio']:.3f}  "
          f"median {report['median_ratio']:.3f}  max {report['max_ratio']:.3f} (target >= 0.8)")
    faster_rounds: dict[str, int] = report["faster_rounds"]  # type: ignore[assignment]
    print(f"   direct images/s min / median / max: threads "
          f"{spread(report['direct_threads_images_per_s'])}, processes "  # type: ignore[arg-type]
          f"{spread(report['direct_processes_images_per_s'])}; the faster: threads in "  # type: ignore[arg-type]
          f"{faster_rounds[THREADS]} of {args.rounds} rounds, processes in {faster_rounds[PROCESSES]}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
