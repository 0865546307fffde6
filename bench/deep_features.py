"""Deep-features benchmark: gateway + queue + features service against raw ONNX Runtime, paired.

Run from the repository root with Redis on 127.0.0.1:6379 (or REDIS_URL; a private
redis-server is started when none answers):

    python bench/deep_features.py [--patches 384] [--per-job 64] [--rounds 5] [--workers 1]

Every part of LabSight runs as its own process, as ``labsight up`` runs it: the gateway
(``python -m services.gateway``), ``--workers`` workers and the features service
(EfficientNet-Lite0 ``avgpool``, preloaded, dynamic batching at ``--batch``). The baseline is
raw ONNX Runtime in a separate process, in the service's own session layout: as many
sessions as the service runs instances, each with the service's intra-op thread count
(both resolved from LABSIGHT_MODEL_INSTANCES and LABSIGHT_ORT_THREADS exactly as the service
resolves them), on the same cut of the same ONNX graph, one Python thread per session taking
the next batch, fed tensors that are already preprocessed (the service preprocesses; the
baseline does not). ONNX Runtime's other settings are its defaults.

1. ``--patches`` 224x224 RGB patches go through the gateway as ``deep-features`` jobs of
   ``--per-job`` patches (a tensor stack each); the service side's time runs from SubmitBatch
   to the last job's features fetched (GetJobResult) and decoded into numpy. The baseline runs
   the same patches at batch ``--batch``.
2. ``--clients`` threads send single images straight to the features service, against the
   baseline at batch 1 (what a caller without a batcher gets from the same sessions).

Each part runs both sides once per round, in rotating order; figures are min / median / max.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from multiprocessing.connection import Connection
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._paired import load_text, paired_rounds, round_ratios, spread  # noqa: E402
from bench.service_process import start_process, start_service, stop_process  # noqa: E402
from labsight.client import LabSightClient, build_request  # noqa: E402
from labsight.images import image_from_array  # noqa: E402
from labsight.models.engines import build_layer_index  # noqa: E402
from labsight.models.onnx_graph import cut_at_outputs, load_onnx  # noqa: E402
from labsight.redis_server import free_port, start_redis, stop_redis  # noqa: E402
from labsight.v1 import features_pb2, features_pb2_grpc  # noqa: E402
from labsight.v1 import gateway_pb2 as pb  # noqa: E402
from services.features.deep import preprocess  # noqa: E402
from services.features.extractor import ExtractorConfig  # noqa: E402
from services.features.models import DEFAULT_MODEL, feature_repository  # noqa: E402

LAYER = "avgpool"


def make_patches(count: int) -> np.ndarray:
    """``count`` random 224x224 RGB uint8 patches, the same for every process (seed 0)."""
    return np.random.default_rng(0).integers(0, 256, (count, 224, 224, 3), dtype=np.uint8)


def raw_sessions() -> tuple[list[ort.InferenceSession], str, tuple[int, int]]:
    """Raw ONNX Runtime sessions in the features service's layout: (sessions, input name,
    (instances, threads per instance)), on the graph the service cuts at ``LAYER``."""
    config = ExtractorConfig.from_env()
    manifest = feature_repository().get(DEFAULT_MODEL)
    target = build_layer_index(manifest, "onnx", config.cache_dir).target(LAYER)
    model = cut_at_outputs(load_onnx(manifest, config.cache_dir), [target]).SerializeToString()
    instances, threads = config.engine_layout(on_cuda=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    sessions = [ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
                for _ in range(instances)]
    return sessions, sessions[0].get_inputs()[0].name, (instances, threads)


def run_sessions(
    sessions: list[ort.InferenceSession], input_name: str, tensors: np.ndarray, batch: int
) -> float:
    """Seconds to run every tensor at ``batch``, one thread per session taking the next batch."""
    work: queue.SimpleQueue[int] = queue.SimpleQueue()
    for offset in range(0, len(tensors), batch):
        work.put(offset)

    def drain(session: ort.InferenceSession) -> None:
        while True:
            try:
                offset = work.get_nowait()
            except queue.Empty:
                return
            session.run(None, {input_name: tensors[offset : offset + batch]})

    threads = [threading.Thread(target=drain, args=(session,)) for session in sessions]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


def baseline_process(connection: Connection, patches: int, batch: int) -> None:
    """The raw baseline's process: build the sessions, then answer ("run", batch, count) with
    the seconds of one pass, until ("stop", ...)."""
    sessions, input_name, layout = raw_sessions()
    manifest = feature_repository().get(DEFAULT_MODEL)
    tensors = preprocess(list(make_patches(patches)), manifest.input_size, manifest.preprocessing)
    run_sessions(sessions, input_name, tensors[: batch * len(sessions)], batch)  # warm-up
    connection.send(layout)
    while True:
        command, size, count = connection.recv()
        if command == "stop":
            return
        connection.send(run_sessions(sessions, input_name, tensors[:count], size))


class Baseline:
    """The raw ONNX Runtime baseline in its own spawned process."""

    def __init__(self, patches: int, batch: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.connection, child_end = context.Pipe()
        self.process = context.Process(target=baseline_process, args=(child_end, patches, batch))
        self.process.start()
        self.layout: tuple[int, int] = self.connection.recv()

    def seconds(self, batch: int, count: int) -> float:
        """Seconds of one pass over the first ``count`` patches at ``batch``."""
        self.connection.send(("run", batch, count))
        return self.connection.recv()

    def close(self) -> None:
        """Stop the process."""
        self.connection.send(("stop", 0, 0))
        self.process.join(timeout=60)


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


def through_gateway(lab: LabSightClient, requests: list[pb.SubmitJobRequest], per_job: int) -> float:
    """Seconds from SubmitBatch to every job's features fetched and decoded into numpy."""
    start = time.perf_counter()
    job_ids = lab.submit_batch(requests).job_ids
    for job_id in job_ids:
        job = lab.wait(job_id, timeout_s=600)
        if job.status != pb.JOB_STATUS_DONE:
            raise RuntimeError(f"job {job_id} ended {pb.JobStatus.Name(job.status)}: {job.error}")
        features = lab.result(job_id).to_numpy()
        if features.shape[0] != per_job:
            raise RuntimeError(f"job {job_id}: {features.shape[0]} feature rows for {per_job} patches")
    return time.perf_counter() - start


def concurrent_clients(address: str, patches: np.ndarray, clients: int) -> float:
    """Seconds for ``clients`` threads, each sending one image per call, to get every image's features."""
    stub = features_pb2_grpc.FeatureServiceStub(grpc.insecure_channel(address))
    requests = [
        features_pb2.ExtractDeepFeaturesRequest(model=DEFAULT_MODEL, layer=LAYER,
                                                images=[image_from_array(patch)])
        for patch in patches
    ]
    barrier = threading.Barrier(clients + 1)

    def client(index: int) -> None:
        barrier.wait()
        for request in requests[index::clients]:
            stub.ExtractDeepFeatures(request, timeout=120)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


def redis_for_bench() -> tuple[str, tuple[subprocess.Popen[bytes], str] | None]:
    """REDIS_URL (or the local Redis) when it answers, else a private redis-server; (url, private)."""
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        redis.Redis.from_url(url).ping()
        return url, None
    except redis.ConnectionError:
        private = start_redis(Path(tempfile.mkdtemp(prefix="labsight-bench-redis-")))
        return private[1], private


def main() -> None:
    """Run both parts and print rates, ratios, the mean executed batch size and the load."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--patches", type=int, default=384)
    parser.add_argument("--per-job", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes (default 1, as labsight up sizes it on up to 8 CPUs)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--delay-ms", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--single", type=int, default=192, help="images of part 2 per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    patches = make_patches(args.patches)
    redis_url, private = redis_for_bench()
    prefix = f"labsight-bench-{uuid.uuid4().hex[:8]}"
    quiet = {**os.environ, "LABSIGHT_LOG_LEVEL": "WARNING"}
    metrics_port = free_port()
    processes: list[subprocess.Popen[bytes]] = []
    baseline = Baseline(args.patches, args.batch)
    try:
        features, features_address = start_service("services.features", {
            **quiet, "LABSIGHT_MAX_BATCH_SIZE": str(args.batch),
            "LABSIGHT_MAX_QUEUE_DELAY_MS": str(args.delay_ms),
            "LABSIGHT_PRELOAD_MODELS": f"{DEFAULT_MODEL}:{LAYER}"}, metrics_port=metrics_port)
        processes.append(features)
        stack_env = {**quiet, "REDIS_URL": redis_url, "LABSIGHT_KEY_PREFIX": prefix,
                     "LABSIGHT_ALLOW_ANONYMOUS": "1", "LABSIGHT_FEATURES_ADDR": features_address}
        gateway, gateway_address = start_service("services.gateway", stack_env)
        processes.append(gateway)
        processes += [start_process("services.gateway.worker", stack_env) for _ in range(args.workers)]
        requests = [
            build_request("deep-features", pb.JobInput().image, {"model": DEFAULT_MODEL, "layer": LAYER},
                          tensors={"patches": patches[offset : offset + args.per_job]})
            for offset in range(0, len(patches), args.per_job)
        ]
        instances, threads = baseline.layout
        print(f"{load_text()}")
        print(f"model {DEFAULT_MODEL} layer {LAYER}, 224x224 patches, max batch {args.batch}, "
              f"max queue delay {args.delay_ms} ms; service and baseline: {instances} ONNX Runtime "
              f"session(s) of {threads} intra-op thread(s); {args.workers} worker process(es)")
        with LabSightClient(gateway_address, token="", timeout_s=600) as lab:
            through_gateway(lab, requests[:2], args.per_job)  # untimed: connections, buffers
            before = load_text()
            seconds = paired_rounds({
                "raw": lambda: baseline.seconds(args.batch, len(patches)),
                "service": lambda: through_gateway(lab, requests, args.per_job),
            }, args.rounds)
        raw_rates = [len(patches) / s for s in seconds["raw"]]
        service_rates = [len(patches) / s for s in seconds["service"]]
        print(f"1) {len(patches)} patches as {len(requests)} jobs of {args.per_job}, gateway + queue + "
              f"features + results fetched, against raw ONNX Runtime at batch {args.batch}; "
              f"{args.rounds} rounds, patches/s min / median / max:")
        print(f"   service: {spread(service_rates, '.1f')}")
        print(f"   raw ORT: {spread(raw_rates, '.1f')}")
        print(f"   ratio service/raw: {spread(round_ratios(service_rates, raw_rates))} (target >= 0.9)")
        print(f"   before: {before}; after: {load_text()}")

        single = patches[: args.single]
        concurrent_clients(features_address, single[: args.clients], args.clients)  # untimed
        batches, items = batch_metrics(metrics_port)
        before = load_text()
        seconds = paired_rounds({
            "raw": lambda: baseline.seconds(1, len(single)),
            "service": lambda: concurrent_clients(features_address, single, args.clients),
        }, args.rounds)
        batches_after, items_after = batch_metrics(metrics_port)
        raw_rates = [len(single) / s for s in seconds["raw"]]
        service_rates = [len(single) / s for s in seconds["service"]]
        print(f"2) {len(single)} single images from {args.clients} concurrent clients straight to the "
              f"features service, against raw ONNX Runtime at batch 1; images/s min / median / max:")
        print(f"   service: {spread(service_rates, '.1f')} "
              f"(mean executed batch {(items_after - items) / max(batches_after - batches, 1):.2f})")
        print(f"   raw ORT, batch 1: {spread(raw_rates, '.1f')}")
        print(f"   ratio service/raw: {spread(round_ratios(service_rates, raw_rates))}")
        print(f"   before: {before}; after: {load_text()}")
    finally:
        for process in reversed(processes):
            stop_process(process)
        baseline.close()
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"{prefix}:*", count=5000))
        for offset in range(0, len(keys), 1000):
            client.delete(*keys[offset : offset + 1000])
        if private is not None:
            stop_redis(*private)


if __name__ == "__main__":
    main()
