"""Deep-features benchmark: gateway + queue + features service vs raw ONNX Runtime, and batching.

Run from the repository root with Redis on 127.0.0.1:6379 (or REDIS_URL; a
private redis-server is started when none answers):

    python bench/deep_features.py [--patches 1000] [--per-job 100] [--clients 16] [--rounds 5]

1. ``--patches`` 224×224 patches go through the gateway as ``deep-features``
   jobs of ``--per-job`` patches (a tensor stack each), Redis Streams, worker
   threads and the features service (its own process, EfficientNet-Lite0,
   ONNX Runtime, dynamic batching at ``--batch``). The baseline is the same
   model in this process on ONNX Runtime (its default settings) at the same
   batch size, fed tensors that are already preprocessed. After one untimed
   pass through the gateway, each of ``--rounds`` rounds runs the baseline and
   the service back to back; printed: every round's rates and ratio, and the
   median ratio.
2. ``--clients`` threads send single images straight to the features service;
   printed: the rate, the mean executed batch size (from the service's
   Prometheus metrics) and raw ONNX Runtime at batch size 1 for comparison.
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
import urllib.request
import uuid
from pathlib import Path

import grpc
import numpy as np
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from labsight.catalog import GATEWAY  # noqa: E402
from labsight.client import LabSightClient, build_request  # noqa: E402
from labsight.config import Settings  # noqa: E402
from labsight.images import image_from_array  # noqa: E402
from labsight.models import Engine, build_engine  # noqa: E402
from labsight.redis_server import free_port, start_redis, stop_redis  # noqa: E402
from labsight.runtime.server import start_server  # noqa: E402
from labsight.v1 import features_pb2, features_pb2_grpc  # noqa: E402
from labsight.v1 import gateway_pb2 as pb  # noqa: E402
from services.features.deep import preprocess  # noqa: E402
from services.features.extractor import ExtractorConfig  # noqa: E402
from services.features.models import DEFAULT_MODEL, feature_repository  # noqa: E402
from services.gateway.servicer import register as register_gateway  # noqa: E402
from services.gateway.worker import build_worker  # noqa: E402

LAYER = "avgpool"


def raw_engine(patches: np.ndarray, batch: int) -> tuple[Engine, np.ndarray]:
    """The benchmarked layer on ONNX Runtime in this process, and the patches preprocessed."""
    manifest = feature_repository().get(DEFAULT_MODEL)
    engine = build_engine(manifest, LAYER, "cpu", ExtractorConfig.from_env().cache_dir)
    tensors = preprocess(list(patches), manifest.input_size, manifest.preprocessing)
    engine.run(tensors[:batch])
    return engine, tensors


def raw_rate(engine: Engine, tensors: np.ndarray, batch: int) -> float:
    """Images per second of one pass of ONNX Runtime alone over preprocessed tensors."""
    start = time.perf_counter()
    for offset in range(0, len(tensors), batch):
        engine.run(tensors[offset : offset + batch])
    return len(tensors) / (time.perf_counter() - start)


def start_features_service(batch: int, delay_ms: float) -> tuple[subprocess.Popen[bytes], str, int]:
    """The features service in its own process; returns (process, address, metrics port)."""
    port, metrics_port = free_port(), free_port()
    env = {**os.environ, "LABSIGHT_PORT": str(port), "LABSIGHT_METRICS_PORT": str(metrics_port),
           "LABSIGHT_MAX_BATCH_SIZE": str(batch), "LABSIGHT_MAX_QUEUE_DELAY_MS": str(delay_ms),
           "LABSIGHT_LOG_LEVEL": "WARNING"}
    process = subprocess.Popen([sys.executable, "-m", "services.features"], env=env)
    address = f"127.0.0.1:{port}"
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(address))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                return process, address, metrics_port
        except grpc.RpcError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the features service did not start")


def batch_metrics(metrics_port: int) -> tuple[float, float]:
    """(batches, items) the service's batcher for the benchmarked layer has executed."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    values = {"count": 0.0, "sum": 0.0}
    label = f'batcher="{DEFAULT_MODEL}:{LAYER}"'
    for line in body.splitlines():
        for kind in values:
            if line.startswith(f"labsight_batch_size_{kind}{{") and label in line:
                values[kind] = float(line.rsplit(" ", 1)[1])
    return values["count"], values["sum"]


class GatewayUnderTest:
    """The gateway (gRPC, in this process) and ``workers`` worker threads, started once."""

    def __init__(self, settings: Settings, workers: int) -> None:
        self.gateway = start_server(register_gateway, GATEWAY.grpc_services, settings)
        self.stop = threading.Event()
        self.threads = []
        for index in range(workers):
            worker = build_worker(settings, consumer=f"bench-{index}")
            thread = threading.Thread(target=worker.run, args=(self.stop,), kwargs={"block_ms": 50})
            thread.start()
            self.threads.append(thread)

    def rate(self, requests: list[pb.SubmitJobRequest], patches: int) -> float:
        """Patches per second from submitting the jobs to the last job done."""
        with LabSightClient(self.gateway.address, token="", timeout_s=600) as lab:
            start = time.perf_counter()
            job_ids = lab.submit_batch(requests).job_ids
            finals = [lab.wait(job_id, timeout_s=600) for job_id in job_ids]
            elapsed = time.perf_counter() - start
        failed = [job.error for job in finals if job.status != pb.JOB_STATUS_DONE]
        if failed:
            raise RuntimeError(f"{len(failed)} jobs failed, e.g. {failed[0]}")
        return patches / elapsed

    def close(self) -> None:
        """Stop the workers and the gateway."""
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)
        self.gateway.stop(0)


def warm_up(address: str, patches: np.ndarray, batch: int) -> None:
    """Load the model in the service and run every engine instance once, on full batches."""
    stub = features_pb2_grpc.FeatureServiceStub(grpc.insecure_channel(address))
    futures = [
        stub.ExtractDeepFeatures.future(features_pb2.ExtractDeepFeaturesRequest(
            model=DEFAULT_MODEL, layer=LAYER,
            images=[image_from_array(patch) for patch in patches[offset : offset + batch]],
        ), timeout=300)
        for offset in range(0, len(patches), batch)
    ]
    for future in futures:
        future.result()


def concurrent_clients(address: str, patches: np.ndarray, clients: int) -> float:
    """Images per second with ``clients`` threads each sending one image per call."""
    stub = features_pb2_grpc.FeatureServiceStub(grpc.insecure_channel(address))
    requests = [
        features_pb2.ExtractDeepFeaturesRequest(model=DEFAULT_MODEL, layer=LAYER,
                                                images=[image_from_array(patch)])
        for patch in patches
    ]
    barrier = threading.Barrier(clients)

    def client(index: int) -> None:
        barrier.wait()
        for request in requests[index::clients]:
            stub.ExtractDeepFeatures(request, timeout=120)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(requests) / (time.perf_counter() - start)


def main() -> None:
    """Run both parts and print rates, ratios and the mean executed batch size."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--patches", type=int, default=1000)
    parser.add_argument("--per-job", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--delay-ms", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    patches = np.random.default_rng(0).integers(0, 256, (args.patches, 224, 224, 3), dtype=np.uint8)

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

    engine, tensors = raw_engine(patches, args.batch)
    process, address, metrics_port = start_features_service(args.batch, args.delay_ms)
    settings.service_addresses = {"features": address, "segmentation": "127.0.0.1:1",
                                  "classifier": "127.0.0.1:1"}
    requests = [
        build_request("deep-features", pb.JobInput().image, {"model": DEFAULT_MODEL, "layer": LAYER},
                      tensors={"patches": patches[offset : offset + args.per_job]})
        for offset in range(0, len(patches), args.per_job)
    ]
    raw_rates: list[float] = []
    service_rates: list[float] = []
    try:
        warm_up(address, patches[: 4 * args.batch], args.batch)
        under_test = GatewayUnderTest(settings, args.workers)
        try:
            under_test.rate(requests[:2], 0)  # untimed: connections, buffers, both instances
            # This machine's speed drifts: each round runs the baseline and the service back
            # to back, and the ratio reported is the median of the rounds' ratios.
            for _ in range(args.rounds):
                raw_rates.append(raw_rate(engine, tensors, args.batch))
                service_rates.append(under_test.rate(requests, len(patches)))
        finally:
            under_test.close()
        batches, items = batch_metrics(metrics_port)
        single = concurrent_clients(address, patches, args.clients)
        batches_after, items_after = batch_metrics(metrics_port)
    finally:
        process.terminate()
        process.wait(timeout=30)
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"{prefix}:*", count=5000))
        for offset in range(0, len(keys), 1000):
            client.delete(*keys[offset : offset + 1000])
        if private is not None:
            stop_redis(*private)
    raw_single = raw_rate(engine, tensors[: max(200, args.batch)], 1)
    ratios = [service / raw for service, raw in zip(service_rates, raw_rates, strict=True)]
    mean_batch = (items_after - items) / max(batches_after - batches, 1)
    print(f"model: {DEFAULT_MODEL} layer {LAYER}, {args.patches} patches of 224x224, "
          f"max batch {args.batch}, max queue delay {args.delay_ms} ms, {os.cpu_count()} CPUs")
    print(f"1) gateway+queue+features ({args.per_job} patches/job, {args.workers} workers) against "
          f"raw ONNX Runtime in-process at batch {args.batch}, {args.rounds} rounds:")
    for index, (service, raw) in enumerate(zip(service_rates, raw_rates, strict=True)):
        print(f"   round {index + 1}: service {service:7.1f} patches/s, raw {raw:7.1f} patches/s, "
              f"ratio {service / raw:.3f}")
    print(f"   median ratio service/raw: {statistics.median(ratios):.3f} (target >= 0.8)")
    raw = statistics.median(raw_rates)
    print(f"2) {args.clients} concurrent single-image clients -> features service: {single:8.1f} images/s")
    print(f"   mean executed batch size: {mean_batch:.2f}")
    print(f"   raw ONNX Runtime in-process, batch 1: {raw_single:8.1f} images/s "
          f"(ratio {single / raw_single:.3f}); batch {args.batch}: {raw:8.1f} (ratio {single / raw:.3f})")


if __name__ == "__main__":
    main()
