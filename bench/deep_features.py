"""Deep-features benchmark: gateway + queue + features service against raw ONNX Runtime, paired.

Run from the repository root (it starts its own redis-server as ``labsight up`` runs it, with
the AOF, and counts its CPU; with REDIS_URL set it uses that Redis instead and cannot count it;
until 2026-12-06 it used the machine's Redis on 127.0.0.1:6379, without an AOF, uncounted):

    python bench/deep_features.py [--patches 384] [--per-job 64] [--jobs-per-submit 0] [--rounds 5]
                                  [--workers 1]

Every part of LabSight runs as its own process, as ``labsight up`` runs it: the gateway
(``python -m services.gateway``), ``--workers`` workers and the features service
(EfficientNet-Lite0 ``avgpool``, preloaded, dynamic batching at ``--batch``), each with the
environment ``labsight up`` gives it (``labsight.runtime.cpus.size_stack``: thread pools and
glibc malloc variables; variables already set win, as in ``up``). The baseline is
raw ONNX Runtime in a separate process with the model services' environment, in the
service's own session layout: as many
sessions as the service runs instances, each with the service's intra-op thread count
(both resolved from LABSIGHT_MODEL_INSTANCES and LABSIGHT_ORT_THREADS exactly as the service
resolves them), on the same cut of the same ONNX graph, one Python thread per session taking
the next batch, fed tensors that are already preprocessed (the service preprocesses; the
baseline does not). ONNX Runtime's other settings are its defaults.

1. ``--patches`` 224x224 RGB patches go through the gateway as ``deep-features`` jobs of
   ``--per-job`` patches (a tensor stack each), in one SubmitBatch or in calls of
   ``--jobs-per-submit`` jobs (as ``labsight submit`` sends folders in parts, each part queued
   while the next is sent); the service side's time runs from the first SubmitBatch
   to the last job's features fetched (GetJobResult) and decoded into numpy. The baseline runs
   the same patches at its fastest batch size up to ``--batch`` (least CPU per image, measured
   at its start) and at the service's slice (it runs its batches in slices of
   LABSIGHT_ORT_RUN_ROWS rows per thread), both in every round; each round's faster pass is
   its baseline, so a noisy pick at the start never leaves the baseline weaker than the
   service's own layout. Each process's CPU per patch is printed too: on a shared machine it shows where
   the service side's extra work goes, which the wall-time ratio blurs. Then the transport
   floor: the same jobs' bytes moved along the served path with no LabSight code (each job's
   request into a raw gRPC bytes sink, SET into the bench's Redis and read back, its
   ExtractDeepFeatures requests into sinks), its CPU per patch, and the most the ratio could
   reach on these cores if LabSight cost nothing beyond that: raw / (raw + floor). Since
   2026-12-07 also the CPU per patch of the service's own ``preprocess`` (uint8 patches to the
   normalised float32 input, which the baseline is spared), and the ceiling with it too:
   raw / (raw + floor + preprocessing).
2. ``--clients`` threads send single images straight to the features service, against the
   same images through the raw sessions by part 1's rule: every round the baseline runs them at
   batch 1 (what a caller without a batcher gets from the same sessions), at its fastest batch
   found at the start and at the service's slice, and the fastest of the three is that round's
   baseline (how often each was the faster is printed). Until 2026-12-06 this part's baseline
   was batch 1 only, while the service batched across the clients, which flattered the service.

Each part runs both sides once per round, in rotating order; figures are min / median / max.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from multiprocessing.connection import Connection
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._cpu import process_cpu_seconds  # noqa: E402
from bench._paired import load_text, paired_rounds, round_ratios, spread  # noqa: E402
from bench.bytes_sink import PUT  # noqa: E402
from bench.service_process import start_process, start_service, stop_process  # noqa: E402
from labsight.client import LabSightClient, build_request  # noqa: E402
from labsight.images import image_from_array  # noqa: E402
from labsight.models.engines import build_layer_index  # noqa: E402
from labsight.models.onnx_graph import cut_at_outputs, load_onnx  # noqa: E402
from labsight.redis_server import free_port, start_redis, stop_redis  # noqa: E402
from labsight.runtime.cpus import size_stack  # noqa: E402
from labsight.tensor_wire import serialize_with_arrays  # noqa: E402
from labsight.up import replica_name, service_target  # noqa: E402
from labsight.v1 import features_pb2, features_pb2_grpc  # noqa: E402
from labsight.v1 import gateway_pb2 as pb  # noqa: E402
from services.features.deep import preprocess  # noqa: E402
from services.features.extractor import ExtractorConfig  # noqa: E402
from services.features.models import DEFAULT_MODEL, feature_repository  # noqa: E402
from services.gateway.pipelines.deep_features import CHUNK_IMAGES  # noqa: E402

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


def fastest_batch(sessions: list[ort.InferenceSession], input_name: str, tensors: np.ndarray,
                  largest: int) -> int:
    """The batch size, a power of 2 up to ``largest``, at which the sessions take the least CPU
    per image (this process's CPU time, which other processes' load does not inflate as it does
    wall time): on CPU, batches of many rows outgrow the caches, so batch 32 is not the raw
    baseline's best."""
    sizes = [1 << power for power in range(largest.bit_length()) if 1 << power <= largest]
    rows = tensors[: max(largest, 64) * len(sessions)]
    cpu: dict[int, float] = {}
    for _ in range(3):
        for size in sizes:
            start = time.process_time()
            run_sessions(sessions, input_name, rows, size)
            cpu[size] = min(cpu.get(size, float("inf")), time.process_time() - start)
    return min(sizes, key=cpu.__getitem__)


def baseline_process(connection: Connection, patches: int, batch: int) -> None:
    """The raw baseline's process: build the sessions, then answer ("run", batch, count) with
    the seconds of one pass, until ("stop", ...). It first sends (instances, threads per
    instance) and its fastest batch size up to ``batch``."""
    sessions, input_name, layout = raw_sessions()
    manifest = feature_repository().get(DEFAULT_MODEL)
    tensors = preprocess(list(make_patches(patches)), manifest.input_size, manifest.preprocessing)
    run_sessions(sessions, input_name, tensors[: batch * len(sessions)], batch)  # warm-up
    connection.send((layout, fastest_batch(sessions, input_name, tensors, batch)))
    while True:
        command, size, count = connection.recv()
        if command == "stop":
            return
        connection.send(run_sessions(sessions, input_name, tensors[:count], size))


class Baseline:
    """The raw ONNX Runtime baseline in its own spawned process."""

    def __init__(self, patches: int, batch: int, env: Mapping[str, str]) -> None:
        context = multiprocessing.get_context("spawn")
        self.connection, child_end = context.Pipe()
        self.process = context.Process(target=baseline_process, args=(child_end, patches, batch))
        with environment(env):  # a spawned process starts with this process's environment
            self.process.start()
        self.layout: tuple[int, int]
        self.fastest_batch: int
        self.layout, self.fastest_batch = self.connection.recv()

    def seconds(self, batch: int, count: int) -> float:
        """Seconds of one pass over the first ``count`` patches at ``batch``."""
        self.connection.send(("run", batch, count))
        return self.connection.recv()

    def close(self) -> None:
        """Stop the process."""
        self.connection.send(("stop", 0, 0))
        self.process.join(timeout=60)


def raw_sides(baseline: Baseline, sizes: list[int], count: int
              ) -> tuple[dict[str, Callable[[], float]], dict[int, CpuMeter]]:
    """One paired side per raw batch size, named ``raw {size}``, timing a pass over the first
    ``count`` patches at that size; and each size's CPU meter of the baseline process."""
    meters = {size: CpuMeter({"raw": baseline.process.pid}) for size in sizes}
    sides = {f"raw {size}": meters[size].wrap(lambda size=size: baseline.seconds(size, count))
             for size in sizes}
    return sides, meters


def best_raw(seconds: Mapping[str, list[float]], meters: Mapping[int, CpuMeter], items: int
             ) -> tuple[list[int], list[float], list[float]]:
    """Round by round, the raw batch size that was fastest, its items per second and its CPU
    milliseconds per item: each round's baseline is its fastest raw pass."""
    sizes = list(meters)
    rounds = len(seconds[f"raw {sizes[0]}"])
    faster = [min(sizes, key=lambda size, r=r: seconds[f"raw {size}"][r]) for r in range(rounds)]
    rates = [items / seconds[f"raw {size}"][r] for r, size in enumerate(faster)]
    cpu_ms = [meters[size].per_item(items)["raw"][r] for r, size in enumerate(faster)]
    return faster, rates, cpu_ms


def by_batch_text(seconds: Mapping[str, list[float]], faster: list[int], items: int) -> str:
    """Each raw batch size's items per second (min / median / max) and how often it was the faster."""
    sizes = sorted(set(int(name.removeprefix("raw ")) for name in seconds if name.startswith("raw ")))
    return "; ".join(
        f"{size}: {spread([items / s for s in seconds[f'raw {size}']], '.1f')} "
        f"(faster in {faster.count(size)} of {len(faster)} rounds)" for size in sizes)


def batch_roles_text(roles: Iterable[tuple[int, str]]) -> str:
    """``batch N (why), ...`` in size order, the reasons of a size that comes twice joined."""
    by_size: dict[int, list[str]] = {}
    for size, why in roles:
        by_size.setdefault(size, []).append(why)
    return ", ".join(f"batch {size} ({' and '.join(whys)})" for size, whys in sorted(by_size.items()))


@contextlib.contextmanager
def environment(env: Mapping[str, str]) -> Iterator[None]:
    """This process's environment set to ``env`` inside the block, restored after it."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


class CpuMeter:
    """CPU seconds each named process spends in the calls it wraps, one list entry per call.

    ``client`` is this process (the benchmark's client threads), read with
    ``time.process_time``; the others by pid from /proc.
    """

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.seconds: dict[str, list[float]] = {name: [] for name in [*pids, "client"]}

    def _now(self) -> dict[str, float]:
        return {**{name: process_cpu_seconds(pid) for name, pid in self.pids.items()},
                "client": time.process_time()}

    def wrap(self, run: Callable[[], float]) -> Callable[[], float]:
        """``run``, its processes' CPU seconds recorded around each call."""

        def measured() -> float:
            before = self._now()
            result = run()
            after = self._now()
            for name in self.seconds:
                self.seconds[name].append(after[name] - before[name])
            return result

        return measured

    def per_item(self, items: int) -> dict[str, list[float]]:
        """Milliseconds per item of every process, call by call."""
        return {name: [1000 * s / items for s in values] for name, values in self.seconds.items()}


def env_text(env: Mapping[str, str], names: Iterable[str]) -> str:
    """``NAME=value`` of each of ``names`` as ``env`` has it."""
    return " ".join(f"{name}={env[name]}" for name in sorted(names) if name in env)


def batch_metrics(metrics_ports: list[int]) -> tuple[float, float, float]:
    """(batches, items, seconds running batches) of the batchers for the benchmarked layer, summed
    over the service's processes (their metrics ports)."""
    label = f'batcher="{DEFAULT_MODEL}:{LAYER}"'
    names = ("labsight_batch_size_count", "labsight_batch_size_sum", "labsight_batch_run_seconds_sum")
    values = dict.fromkeys(names, 0.0)
    for port in metrics_ports:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        for line in body.splitlines():
            name = line.split("{", 1)[0]
            if name in values and label in line:
                values[name] += float(line.rsplit(" ", 1)[1])
    return values[names[0]], values[names[1]], values[names[2]]


def through_gateway(lab: LabSightClient, requests: list[pb.SubmitJobRequest], per_job: int,
                    jobs_per_submit: int = 0) -> float:
    """Seconds from the first SubmitBatch to every job's features fetched and decoded into numpy.

    The jobs go in one SubmitBatch, or (``jobs_per_submit`` > 0) in SubmitBatch calls of that
    many under one batch id, one after the other, as ``labsight submit`` sends a folder in
    parts: each part is queued, and can run, while the next one is sent.
    """
    start = time.perf_counter()
    size = jobs_per_submit or len(requests)
    batch_id = uuid.uuid4().hex
    job_ids = [job_id for offset in range(0, len(requests), size)
               for job_id in lab.submit_batch(requests[offset : offset + size], batch_id).job_ids]
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
    channel = grpc.insecure_channel(address, options=[("grpc.lb_policy_name", "round_robin")])
    stub = features_pb2_grpc.FeatureServiceStub(channel)  # calls spread over its processes
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


def along_the_path(sink_address: str, redis_url: str, requests: list[pb.SubmitJobRequest],
                   patches: np.ndarray, per_job: int) -> float:
    """Every job's bytes moved along the served path with no LabSight code on it: the job's
    SubmitJobRequest serialized into a raw gRPC bytes sink (client to gateway), the same bytes
    SET into Redis and read back (gateway to Redis to worker), and each ExtractDeepFeatures
    request of CHUNK_IMAGES patches, written as the worker writes it, into a sink (worker to
    features service); seconds taken. No result, record, check or model: a floor."""
    channel = grpc.insecure_channel(sink_address, options=[("grpc.lb_policy_name", "round_robin")])
    put = channel.unary_unary(PUT)  # bytes in, bytes out: no (de)serializers
    client = redis.Redis.from_url(redis_url)
    key = f"labsight-bench-floor-{uuid.uuid4().hex}"
    start = time.perf_counter()
    try:
        for index, request in enumerate(requests):
            sent = request.SerializeToString()
            put(sent, timeout=600)
            client.set(key, sent)
            received = client.get(key)
            assert received is not None and len(received) == len(sent)
            stack = patches[index * per_job : (index + 1) * per_job]
            for offset in range(0, len(stack), CHUNK_IMAGES):
                chunk = features_pb2.ExtractDeepFeaturesRequest(model=DEFAULT_MODEL, layer=LAYER)
                put(serialize_with_arrays(chunk, {"image_stack": stack[offset : offset + CHUNK_IMAGES]}),
                    timeout=600)
        return time.perf_counter() - start
    finally:
        client.delete(key)
        client.close()
        channel.close()


def transport_floor(sinks: list[subprocess.Popen[bytes]], sink_address: str, redis_url: str,
                    redis_pid: int | None, requests: list[pb.SubmitJobRequest], patches: np.ndarray,
                    per_job: int, rounds: int, raw_ms: float) -> None:
    """Print the CPU per patch of :func:`along_the_path` over ``rounds`` passes (this process,
    the sinks and the bench's Redis) and the most the served ratio could reach on these cores
    if LabSight cost nothing beyond moving the bytes: raw / (raw + floor) in CPU per patch (the
    rounds are CPU-bound, so rates follow CPU per patch)."""
    meter = CpuMeter({**{f"sink {index + 1}": sink.pid for index, sink in enumerate(sinks)},
                      **({"redis": redis_pid} if redis_pid is not None else {})})
    along_the_path(sink_address, redis_url, requests[:1], patches, per_job)  # untimed: connections
    moved = meter.wrap(lambda: along_the_path(sink_address, redis_url, requests, patches, per_job))
    for _ in range(rounds):
        moved()
    per_patch = meter.per_item(len(patches))
    totals = [sum(values) for values in zip(*per_patch.values(), strict=True)]
    ceilings = [raw_ms / (raw_ms + ms) for ms in totals]
    print(f"   transport floor: each job's bytes into a raw gRPC bytes sink, SET into Redis and read "
          f"back, each {CHUNK_IMAGES}-patch ExtractDeepFeatures request into a sink "
          f"({len(sinks)} sink processes{'' if redis_pid is not None else '; Redis not counted'}); "
          f"CPU ms per patch {spread(totals, '.2f')} ("
          + ", ".join(f"{name} {spread(values, '.2f')}" for name, values in per_patch.items())
          + f"); with raw ORT's {raw_ms:.2f}, the most a served ratio can reach on these cores: "
          f"{spread(ceilings)} (target >= 0.9)")
    preparing = [preprocessing_ms(patches) for _ in range(rounds)]
    with_preparing = [raw_ms / (raw_ms + ms + prep)
                      for ms, prep in zip(totals, preparing, strict=True)]
    print(f"   the preprocessing the service does and the baseline is spared (the service's "
          f"`preprocess` in {CHUNK_IMAGES}-patch requests, one thread): CPU ms per patch "
          f"{spread(preparing, '.2f')}; with it, the most a served ratio can reach: "
          f"{spread(with_preparing)} (target >= 0.9)")


def preprocessing_ms(patches: np.ndarray) -> float:
    """CPU ms per patch of the features service's own preprocessing of ``patches`` (uint8 to
    its normalised float32 model input), in requests of CHUNK_IMAGES as it gets them."""
    manifest = feature_repository().get(DEFAULT_MODEL)
    start = time.thread_time()
    for offset in range(0, len(patches), CHUNK_IMAGES):
        preprocess(list(patches[offset : offset + CHUNK_IMAGES]), manifest.input_size,
                   manifest.preprocessing)
    return 1000 * (time.thread_time() - start) / len(patches)


def redis_for_bench() -> tuple[str, tuple[subprocess.Popen[bytes], str] | None]:
    """REDIS_URL when it is set, else a private redis-server configured as `labsight up`'s
    (AOF); (url, the private server or None)."""
    url = os.environ.get("REDIS_URL")
    if url:
        return url, None
    private = start_redis(Path(tempfile.mkdtemp(prefix="labsight-bench-redis-")))
    return private[1], private


def main() -> None:
    """Run both parts and print rates, ratios, the mean executed batch size and the load."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--patches", type=int, default=384)
    parser.add_argument("--per-job", type=int, default=64)
    parser.add_argument("--jobs-per-submit", type=int, default=0,
                        help="jobs per SubmitBatch call, queued one part after the other "
                             "(0: all in one call)")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes (default 1, as labsight up sizes it on up to 8 CPUs)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--delay-ms", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--single", type=int, default=192, help="images of part 2 per round (0: part 1 only)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    patches = make_patches(args.patches)
    redis_url, private = redis_for_bench()
    prefix = f"labsight-bench-{uuid.uuid4().hex[:8]}"
    quiet = {**os.environ, "LABSIGHT_LOG_LEVEL": "WARNING"}
    sizing = size_stack(workers=args.workers)
    service_env = {**sizing.service_environment(), **quiet}  # as labsight up gives them
    replicas = sizing.replicas_of("features")  # as many processes as `labsight up` runs
    metrics_ports = [free_port() for _ in range(replicas)]
    processes: list[subprocess.Popen[bytes]] = []
    baseline = Baseline(args.patches, args.batch, service_env)
    try:
        started = [start_service("services.features", {
            **sizing.service_environment("features"), **quiet,
            "LABSIGHT_MAX_BATCH_SIZE": str(args.batch), "LABSIGHT_MAX_QUEUE_DELAY_MS": str(args.delay_ms),
            "LABSIGHT_PRELOAD_MODELS": f"{DEFAULT_MODEL}:{LAYER}"}, metrics_port=port)
            for port in metrics_ports]
        features = [process for process, _ in started]
        features_address = service_target([address for _, address in started])
        processes += features
        stack_env = {**quiet, "REDIS_URL": redis_url, "LABSIGHT_KEY_PREFIX": prefix,
                     "LABSIGHT_ALLOW_ANONYMOUS": "1", "LABSIGHT_FEATURES_ADDR": features_address,
                     "LABSIGHT_WEB_PORT": "-1"}
        gateway_env = {**sizing.gateway_environment(), **stack_env}
        gateway, gateway_address = start_service("services.gateway", gateway_env)
        processes.append(gateway)
        worker_env = {**sizing.worker_environment(), **stack_env}
        workers = [start_process("services.gateway.worker", worker_env) for _ in range(args.workers)]
        processes += workers
        requests = [
            build_request("deep-features", pb.JobInput().image, {"model": DEFAULT_MODEL, "layer": LAYER},
                          tensors={"patches": patches[offset : offset + args.per_job]})
            for offset in range(0, len(patches), args.per_job)
        ]
        instances, threads = baseline.layout
        slice_rows = ExtractorConfig.from_env().run_rows * threads or args.batch
        print(f"{load_text()}")
        print(f"model {DEFAULT_MODEL} layer {LAYER}, 224x224 patches, max batch {args.batch}, "
              f"max queue delay {args.delay_ms} ms, runs of at most "
              f"{slice_rows} rows; baseline: {instances} ONNX Runtime session(s) of {threads} "
              f"intra-op thread(s); service: {replicas} process(es) of "
              f"{instances // replicas or 1} such session(s); "
              f"{args.workers} worker process(es)")
        malloc = [name for name in quiet if name.startswith("MALLOC_") or name == "GLIBC_TUNABLES"]
        print(f"environment as labsight up gives it: features service and raw baseline "
              f"{env_text(service_env, sizing.service_environment())}; workers "
              f"{env_text(worker_env, sizing.worker_environment())}; gateway "
              f"{env_text(gateway_env, sizing.gateway_environment())}; glibc malloc of the client: "
              f"{env_text(quiet, malloc) or 'defaults'}")
        with LabSightClient(gateway_address, token="", timeout_s=600) as lab:
            through_gateway(lab, requests[:2], args.per_job)  # untimed: connections, buffers
            before = load_text()
            served_cpu = CpuMeter({
                **{replica_name("features", index): process.pid for index, process in enumerate(features)},
                "gateway": gateway.pid,
                **{f"worker {index}": worker.pid for index, worker in enumerate(workers)},
                **({"redis": private[0].pid} if private is not None else {})})
            # The baseline runs at its fastest batch and at the service's slice of rows, and each
            # round's faster pass is that round's baseline: a noisy pick of the fastest batch at
            # the start cannot leave the baseline weaker than the layout the service runs.
            raw_sizes = sorted({baseline.fastest_batch, slice_rows})
            raw, raw_meters = raw_sides(baseline, raw_sizes, len(patches))
            batches_before = batch_metrics(metrics_ports)
            seconds = paired_rounds({
                **raw,
                "service": served_cpu.wrap(lambda: through_gateway(lab, requests, args.per_job,
                                                                   args.jobs_per_submit)),
            }, args.rounds)
            run_seconds = batch_metrics(metrics_ports)[2] - batches_before[2]
        faster, raw_rates, raw_ms = best_raw(seconds, raw_meters, len(patches))
        service_rates = [len(patches) / s for s in seconds["service"]]
        submits = (f"SubmitBatch calls of {args.jobs_per_submit} job(s) one after the other"
                   if args.jobs_per_submit else "one SubmitBatch")
        print(f"1) {len(patches)} patches as {len(requests)} jobs of {args.per_job} in {submits}, "
              f"gateway + queue + features + results fetched, against raw ONNX Runtime, the faster "
              f"in each round of batch {baseline.fastest_batch} (its least CPU per image of batches "
              f"1 to {args.batch}) and batch {slice_rows} (the service's slice); "
              f"{args.rounds} rounds, patches/s min / median / max:")
        print(f"   service: {spread(service_rates, '.1f')}")
        print(f"   raw ORT: {spread(raw_rates, '.1f')}")
        if len(raw_sizes) > 1:
            print(f"   raw ORT by batch: {by_batch_text(seconds, faster, len(patches))}")
        print(f"   ratio service/raw: {spread(round_ratios(service_rates, raw_rates))} (target >= 0.9)")
        print(f"   before: {before}; after: {load_text()}")
        print(f"   the service's ONNX Runtime sessions ran batches "
              f"{100 * run_seconds / (instances * sum(seconds['service'])):.0f}% of the service side's time")
        served_ms = served_cpu.per_item(len(patches))
        total = [sum(values) for values in zip(*served_ms.values(), strict=True)]
        print("   CPU ms per patch, min / median / max"
              + (" (Redis at REDIS_URL not counted):" if private is None else ":"))
        for name, values in [*served_ms.items(), ("served total", total)]:
            print(f"   {name:>12}: {spread(values, '.2f')}")
        print(f"   {'raw ORT':>12}: {spread(raw_ms, '.2f')}")
        sinks = [start_service("bench.bytes_sink", {**sizing.service_environment("features"), **quiet})
                 for _ in range(replicas)]
        try:
            transport_floor([process for process, _ in sinks],
                            service_target([address for _, address in sinks]), redis_url,
                            private[0].pid if private is not None else None, requests, patches,
                            args.per_job, args.rounds, statistics.median(raw_ms))
        finally:
            for process, _ in sinks:
                stop_process(process)

        if args.single > 0:  # part 2; --single 0 leaves it out
            single = patches[: args.single]
            concurrent_clients(features_address, single[: args.clients], args.clients)  # untimed
            batches, items, _ = batch_metrics(metrics_ports)
            before = load_text()
            single_cpu = CpuMeter({replica_name("features", index): process.pid
                                   for index, process in enumerate(features)})
            single_sizes = sorted({1, baseline.fastest_batch, slice_rows})
            raw, raw_meters = raw_sides(baseline, single_sizes, len(single))
            seconds = paired_rounds({
                **raw,
                "service": single_cpu.wrap(
                    lambda: concurrent_clients(features_address, single, args.clients)),
            }, args.rounds)
            batches_after, items_after, _ = batch_metrics(metrics_ports)
            faster, raw_rates, raw_ms = best_raw(seconds, raw_meters, len(single))
            service_rates = [len(single) / s for s in seconds["service"]]
            print(f"2) {len(single)} single images from {args.clients} concurrent clients straight to the "
                  f"features service, against raw ONNX Runtime, the fastest in each round of "
                  + batch_roles_text([(1, "no batcher"), (baseline.fastest_batch, "its least CPU per "
                                      "image at the start"), (slice_rows, "the service's slice")])
                  + "; images/s min / median / max:")
            print(f"   service: {spread(service_rates, '.1f')} "
                  f"(mean executed batch {(items_after - items) / max(batches_after - batches, 1):.2f})")
            print(f"   raw ORT, fastest of the round: {spread(raw_rates, '.1f')}")
            print(f"   raw ORT by batch: {by_batch_text(seconds, faster, len(single))}")
            print(f"   ratio service/raw: {spread(round_ratios(service_rates, raw_rates))}")
            print(f"   before: {before}; after: {load_text()}")
            single_ms = single_cpu.per_item(len(single))
            served_ms = [sum(values) for values in zip(*(single_ms[replica_name("features", index)]
                                                        for index in range(replicas)), strict=True)]
            print(f"   CPU ms per image: features {spread(served_ms, '.2f')}, clients "
                  f"{spread(single_ms['client'], '.2f')}; raw ORT (the round's fastest batch) "
                  f"{spread(raw_ms, '.2f')}")
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
