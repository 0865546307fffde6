"""Organelle classifier benchmark: cells per second served against in-process, and explanation costs.

Run from the repository root with Redis on 127.0.0.1:6379 (or REDIS_URL; a
private redis-server is started when none answers):

    python bench/classifier.py [--fields 12] [--clients 8] [--workers 2] [--rounds 3] [--lime-cells 5]

Data: ``--fields`` generated 512×512 RGBY fields (services.classifier.generated_cells,
a seed the shipped model never saw) with their true cell masks, about 14 cells each.

1. ``ClassifyCells`` under concurrent load: ``--clients`` threads send one field each
   per call to the classifier service (its own process: the shipped model on ONNX
   Runtime behind the dynamic batcher). Baseline: ``classify_cells`` in this process
   with the same model on ONNX Runtime called directly (crops + model, no transport,
   no batcher), over the same fields. Each of ``--rounds`` rounds runs the two back to
   back; printed: each round's cells/s and ratio, and min/median/max of the ratios.
2. ``hpa-cells`` through the gateway: jobs of the 4-channel fields through Redis,
   ``--workers`` worker threads, the segmentation service and the classifier service (own processes).
   Baseline: the same work in this process (classical ``segment_cells`` on the three
   reference channels, ``measure_cells`` for the cells table, then ``classify_cells``).
   Paired rounds as in 1.
3. Explanations per cell on one thread: Grad-CAM (captum, torch) and LIME (1000
   perturbations through ONNX Runtime, as ExplainCells runs it); target ≤ 5 s per cell.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.service_process import start_service  # noqa: E402
from labsight.catalog import GATEWAY  # noqa: E402
from labsight.client import LabSightClient, build_request  # noqa: E402
from labsight.config import Settings  # noqa: E402
from labsight.images import image_from_array  # noqa: E402
from labsight.models import ServingConfig, build_engine, load_torch_model  # noqa: E402
from labsight.redis_server import start_redis, stop_redis  # noqa: E402
from labsight.runtime.server import start_server  # noqa: E402
from labsight.tensors import to_tensor  # noqa: E402
from labsight.v1 import classifier_pb2, classifier_pb2_grpc  # noqa: E402
from labsight.v1 import gateway_pb2 as pb  # noqa: E402
from services.classifier.cells import classify_cells  # noqa: E402
from services.classifier.explain import cam_layer, grad_cam, lime_explanation  # noqa: E402
from services.classifier.generated_cells import CellField, generate_cell_field  # noqa: E402
from services.classifier.repository import DEFAULT_MODEL, classifier_repository, load_thresholds  # noqa: E402
from services.gateway.servicer import register as register_gateway  # noqa: E402
from services.gateway.worker import build_worker  # noqa: E402
from services.segmentation.cells import segment_cells  # noqa: E402
from services.segmentation.measure import measure_cells  # noqa: E402

PIXEL_SIZE_UM = 0.3
"""Pixel size at which the generated cells (radius 24-36 px) have HPA cells' size."""

SEED = 4711

QUIET_ENV = {**os.environ, "LABSIGHT_LOG_LEVEL": "WARNING"}
"""Environment of the services this bench starts."""


def timed(work: Callable[[], int]) -> float:
    """Cells per second of ``work`` (which returns the cells it handled)."""
    start = time.perf_counter()
    cells = work()
    return cells / (time.perf_counter() - start)


def concurrent_classify(address: str, fields: list[CellField], clients: int) -> int:
    """ClassifyCells of every field from ``clients`` threads; returns the cells classified."""
    stub = classifier_pb2_grpc.ClassifierServiceStub(grpc.insecure_channel(address))
    requests = [classifier_pb2.ClassifyCellsRequest(image=image_from_array(f.image),
                                                    cell_labels=to_tensor(f.cell_labels))
                for f in fields]
    counts = [0] * clients
    barrier = threading.Barrier(clients)

    def client(index: int) -> None:
        barrier.wait()
        for request in requests[index::clients]:
            counts[index] += len(stub.ClassifyCells(request, timeout=300).cell_ids)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts)


def paired(name: str, raw: Callable[[], int], served: Callable[[], int], rounds: int) -> None:
    """Run the two back to back ``rounds`` times and print rates and ratios."""
    ratios = []
    print(name)
    for index in range(rounds):
        raw_rate, served_rate = timed(raw), timed(served)
        ratios.append(served_rate / raw_rate)
        print(f"   round {index + 1}: served {served_rate:8.1f} cells/s, in-process {raw_rate:8.1f} "
              f"cells/s, ratio {ratios[-1]:.3f}")
    print(f"   ratio served/in-process: min {min(ratios):.3f}, median {statistics.median(ratios):.3f}, "
          f"max {max(ratios):.3f} (target >= 0.8)")


def main() -> None:
    """Run the three parts and print their numbers."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--fields", type=int, default=12)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lime-cells", type=int, default=5)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    fields = [generate_cell_field(np.random.default_rng((SEED, i)), size=512, cells=14)
              for i in range(args.fields)]
    cells = sum(int(f.cell_labels.max()) for f in fields)
    manifest = classifier_repository().get(DEFAULT_MODEL)
    engine = build_engine(manifest, "", "cpu", ServingConfig.from_env().cache_dir)
    thresholds = load_thresholds(manifest)

    def predict(batch: np.ndarray) -> np.ndarray:
        return engine.outputs(batch)["probabilities"]

    def in_process_classify() -> int:
        return sum(len(classify_cells(f.image, f.cell_labels, predict, thresholds=thresholds,
                                      batch_size=32).cell_ids) for f in fields)

    def in_process_hpa_cells() -> int:
        found = 0
        for f in fields:
            nuclei, labels = segment_cells(f.image[..., 0], f.image[..., 3], f.image[..., 2],
                                           pixel_size_um=PIXEL_SIZE_UM)
            measure_cells(nuclei, labels, f.image, pixel_size_um=PIXEL_SIZE_UM)
            found += len(classify_cells(f.image, labels, predict, thresholds=thresholds,
                                        batch_size=32).cell_ids)
        return found

    local = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    private: tuple[subprocess.Popen[bytes], str] | None = None
    try:
        local.ping()
        redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    except redis.ConnectionError:
        private = start_redis(Path(tempfile.mkdtemp(prefix="labsight-bench-redis-")))
        redis_url = private[1]
    prefix = f"labsight-bench-{uuid.uuid4().hex[:8]}"
    settings = Settings(redis_url=redis_url, key_prefix=prefix, allow_anonymous=True)
    classifier, classifier_address = start_service("services.classifier", QUIET_ENV)
    segmentation, segmentation_address = start_service("services.segmentation", QUIET_ENV)
    settings.service_addresses = {"features": "127.0.0.1:1", "segmentation": segmentation_address,
                                  "classifier": classifier_address}
    gateway = start_server(register_gateway, GATEWAY.grpc_services, settings)
    stop = threading.Event()
    workers = [threading.Thread(target=build_worker(settings, consumer=f"bench-{i}").run, args=(stop,),
                                kwargs={"block_ms": 50}) for i in range(args.workers)]
    for worker in workers:
        worker.start()
    requests = [build_request("hpa-cells", image_from_array(f.image),
                              {"pixel_size_um": str(PIXEL_SIZE_UM)}) for f in fields]

    def through_gateway() -> int:
        with LabSightClient(gateway.address, token="", timeout_s=600) as lab:
            job_ids = lab.submit_batch(requests).job_ids
            finals = [lab.wait(job_id, timeout_s=600) for job_id in job_ids]
            failed = [job.error for job in finals if job.status != pb.JOB_STATUS_DONE]
            if failed:
                raise RuntimeError(f"{len(failed)} jobs failed, e.g. {failed[0]}")
            return sum(len(lab.result(job_id).tables["classes"].row_ids) for job_id in job_ids)

    try:
        print(f"model {manifest.name} {manifest.version}; {args.fields} generated 512x512 fields, "
              f"{cells} cells; {os.cpu_count()} CPUs")
        concurrent_classify(classifier_address, fields[:2], 2)  # untimed: load, export, connect
        through_gateway()  # untimed
        paired(f"1) ClassifyCells, {args.clients} concurrent clients, against classify_cells "
               "in-process on ONNX Runtime:", in_process_classify,
               lambda: concurrent_classify(classifier_address, fields, args.clients), args.rounds)
        paired(f"2) hpa-cells jobs through the gateway, {args.workers} workers, segmentation and "
               "classifier services, against segment_cells + measure_cells + classify_cells "
               "in-process:",
               in_process_hpa_cells, through_gateway, args.rounds)
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=60)
        gateway.stop(0)
        for process in (classifier, segmentation):
            process.terminate()
            process.wait(timeout=30)
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"{prefix}:*", count=5000))
        for offset in range(0, len(keys), 1000):
            client.delete(*keys[offset : offset + 1000])
        if private is not None:
            stop_redis(*private)

    from labsight.cell_crops import cell_crops

    crops = cell_crops(fields[0].image, fields[0].cell_labels, manifest.input_size[0]).pixels
    crops = crops[: args.lime_cells]
    top = predict(crops).argmax(axis=1)
    network = load_torch_model(manifest)
    layer = cam_layer(network, manifest.module_path("features"))
    start = time.perf_counter()
    grad_cam(network, crops, top, layer=layer)
    cam_seconds = (time.perf_counter() - start) / len(crops)
    lime_seconds = []
    for crop, target in zip(crops, top, strict=True):
        start = time.perf_counter()
        lime_explanation(crop, predict, int(target))
        lime_seconds.append(time.perf_counter() - start)
    print(f"3) explanations per cell, one thread: Grad-CAM {cam_seconds * 1000:.1f} ms; LIME "
          f"(1000 samples) min {min(lime_seconds):.2f} s, median {statistics.median(lime_seconds):.2f} "
          f"s, max {max(lime_seconds):.2f} s over {len(lime_seconds)} cells (target <= 5 s)")


if __name__ == "__main__":
    main()
