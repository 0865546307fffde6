"""Vessel-content benchmarks: quality of the classical default, and the pipeline's throughput.

Run from the repository root:

    python bench/vessel.py quality [--count 200] [--seed 2026]
    python bench/vessel.py throughput [--photos 40] [--scale 2] [--workers 1] [--rounds 3]

``quality``: generated vessels (``services/segmentation/generated_vessels.py``;
the default seed was not used to choose the method's settings) segmented by
``segment_vessel_content``; printed as JSON: mean matched instance IoU (Hungarian
on IoU, unmatched true phases count 0), the share of phases at IoU ≥ 0.8,
fill-level errors per phase and of the total (shares of the vessel's height),
panoptic quality at IoU 0.5, seconds per photo. Targets: IoU ≥ 0.8, fill
level within 0.03 of the height.

``throughput``: ``--photos`` generated photos enlarged ``--scale`` times (JPEG
photo, PNG mask) go through the gateway as ``vessel-content`` jobs: Redis
Streams, ``--workers`` worker threads, the segmentation service in its own
process (``python -m services.segmentation``), and back (the worker computes
the fill levels). The baseline is ``segment_vessel_content`` in this process on
the decoded arrays with the same concurrency (``--workers`` threads). After one
untimed pass, each round runs the baseline and the pipeline back to back;
printed: each round's photos/s and ratio, the median ratio (target ≥ 0.8), and
one JSON line. Redis on 127.0.0.1:6379 (or REDIS_URL), else a private one.
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import redis  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.service_process import start_service  # noqa: E402
from labsight.catalog import GATEWAY  # noqa: E402
from labsight.client import LabSightClient, build_request  # noqa: E402
from labsight.config import Settings  # noqa: E402
from labsight.images import encode_png  # noqa: E402
from labsight.redis_server import start_redis, stop_redis  # noqa: E402
from labsight.runtime.server import start_server  # noqa: E402
from labsight.v1 import gateway_pb2 as pb  # noqa: E402
from labsight.v1 import tensor_pb2  # noqa: E402
from services.gateway.servicer import register as register_gateway  # noqa: E402
from services.gateway.worker import build_worker  # noqa: E402
from services.segmentation.generated_vessels import generate_vessels  # noqa: E402
from services.segmentation.vessel_metrics import LayerScores, PanopticCounts  # noqa: E402
from services.segmentation.vessels import segment_vessel_content  # noqa: E402

cv2.setNumThreads(1)


def quality(count: int, seed: int) -> dict[str, float]:
    """Scores of the classical default on ``count`` generated vessels of ``seed``."""
    scores, panoptic = LayerScores(), PanopticCounts()
    vessels = generate_vessels(count, seed)
    start = time.perf_counter()
    for vessel in vessels:
        content = segment_vessel_content(vessel.photo, vessel.vessel_mask)
        scores.add(content.instance_masks, content.fill_levels, content.filled,
                   vessel.instance_masks, vessel.fill_levels, vessel.filled)
        panoptic.add(content.instance_masks, vessel.instance_masks)
    return {**scores.summary(), "panoptic_quality": panoptic.quality,
            "seconds_per_photo": (time.perf_counter() - start) / count, "seed": float(seed)}


def photos(count: int, scale: float, seed: int = 11) -> list[tuple[np.ndarray, np.ndarray]]:
    """Generated (photo, mask) pairs enlarged ``scale`` times."""
    pairs = []
    for vessel in generate_vessels(count, seed):
        size = (round(vessel.photo.shape[1] * scale), round(vessel.photo.shape[0] * scale))
        pairs.append((cv2.resize(vessel.photo, size, interpolation=cv2.INTER_LINEAR),
                      cv2.resize(vessel.vessel_mask, size, interpolation=cv2.INTER_NEAREST) * 255))
    return pairs


def direct_rate(pairs: list[tuple[np.ndarray, np.ndarray]], threads: int) -> float:
    """Photos per second of the core called directly by ``threads`` threads."""
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda pair: segment_vessel_content(*pair), pairs))
    return len(pairs) / (time.perf_counter() - start)


class PipelineUnderTest:
    """The gateway (in this process) and ``workers`` worker threads."""

    def __init__(self, settings: Settings, workers: int) -> None:
        self.gateway = start_server(register_gateway, GATEWAY.grpc_services, settings)
        self.stop = threading.Event()
        self.threads = []
        for index in range(workers):
            worker = build_worker(settings, consumer=f"bench-{index}")
            thread = threading.Thread(target=worker.run, args=(self.stop,), kwargs={"block_ms": 50})
            thread.start()
            self.threads.append(thread)

    def rate(self, requests: list[pb.SubmitJobRequest]) -> float:
        """Photos per second from submitting the jobs to the last one done."""
        with LabSightClient(self.gateway.address, token="", timeout_s=600) as lab:
            start = time.perf_counter()
            job_ids = lab.submit_batch(requests).job_ids
            finals = [lab.wait(job_id, timeout_s=600) for job_id in job_ids]
            elapsed = time.perf_counter() - start
        failed = [job.error for job in finals if job.status != pb.JOB_STATUS_DONE]
        if failed:
            raise RuntimeError(f"{len(failed)} jobs failed, e.g. {failed[0]}")
        return len(requests) / elapsed

    def close(self) -> None:
        """Stop the workers and the gateway."""
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)
        self.gateway.stop(0)


def _png(pixels: np.ndarray) -> tensor_pb2.Image:
    return tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=encode_png(pixels), format="png"))


def _jpeg(pixels: np.ndarray) -> tensor_pb2.Image:
    """A photo as cameras write them: JPEG, quality 95."""
    ok, data = cv2.imencode(".jpg", pixels[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=data.tobytes(), format="jpeg"))


def throughput(count: int, scale: float, workers: int, rounds: int) -> dict[str, object]:
    """Rates of the pipeline and of the core, paired by round."""
    pairs = photos(count, scale)
    # each round submits new jobs (a run id param is not a pipeline parameter: vary the name)
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
    process, address = start_service("services.segmentation", {**os.environ, "LABSIGHT_LOG_LEVEL": "WARNING"})
    settings.service_addresses = {"segmentation": address, "features": "127.0.0.1:1",
                                  "classifier": "127.0.0.1:1"}

    def requests(run: str) -> list[pb.SubmitJobRequest]:
        return [build_request("vessel-content", _jpeg(photo), images={"vessel_mask": _png(mask)},
                              name=f"{run}-{index}", idempotency_key=f"{prefix}-{run}-{index}")
                for index, (photo, mask) in enumerate(pairs)]

    direct, served = [], []
    try:
        under_test = PipelineUnderTest(settings, workers)
        try:
            under_test.rate(requests("warm")[:4])
            direct_rate(pairs[:4], workers)
            for round_index in range(rounds):
                direct.append(direct_rate(pairs, workers))
                served.append(under_test.rate(requests(f"round{round_index}")))
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
    return {"photos": count, "photo_shape": list(pairs[0][0].shape), "workers": workers,
            "direct_photos_per_s": direct, "pipeline_photos_per_s": served, "ratios": ratios,
            "median_ratio": statistics.median(ratios)}


def main() -> None:
    """Run the chosen benchmark and print its numbers."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(dest="bench", required=True)
    quality_parser = sub.add_parser("quality")
    quality_parser.add_argument("--count", type=int, default=200)
    quality_parser.add_argument("--seed", type=int, default=2026)
    speed = sub.add_parser("throughput")
    speed.add_argument("--photos", type=int, default=40)
    speed.add_argument("--scale", type=float, default=2.0)
    speed.add_argument("--workers", type=int, default=1)
    speed.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.bench == "quality":
        print(json.dumps(quality(args.count, args.seed)))
        return
    report = throughput(args.photos, args.scale, args.workers, args.rounds)
    shape = report["photo_shape"]
    print(f"{args.photos} photos of {shape[0]}x{shape[1]}, {args.workers} worker(s) / thread(s), "
          f"{os.cpu_count()} CPUs")
    for index, (served, direct) in enumerate(zip(report["pipeline_photos_per_s"],  # type: ignore[call-overload]
                                                 report["direct_photos_per_s"], strict=True)):
        print(f"   round {index + 1}: pipeline {served:6.2f} photos/s, core {direct:6.2f} photos/s, "
              f"ratio {served / direct:.3f}")
    print(f"   median ratio pipeline/core: {report['median_ratio']:.3f} (target >= 0.8)")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
