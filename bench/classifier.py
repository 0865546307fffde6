"""Organelle classifier benchmark: cells per second served against in-process at the same thread
counts, CPU per cell on both sides, and explanation costs.

Run from the repository root (part 2 starts its own redis-server as ``labsight up`` runs it,
with the AOF, and counts its CPU; with REDIS_URL set it uses that Redis instead and cannot count
it; until 2026-12-06 it used the machine's Redis on 127.0.0.1:6379, without an AOF, uncounted):

    python bench/classifier.py [--fields 96] [--clients 8] [--workers 1] [--rounds 5] [--lime-cells 5]
                               [--parts 1,2,3] [--label-dtype narrow]

Data: ``--fields`` generated 512×512 RGBY fields (services.classifier.generated_cells, a seed
the shipped model never saw) with their true cell masks, about 14 cells each.

Both sides use the machine alike: the classifier service runs the shipped model on
``instances`` ONNX Runtime sessions of ``threads`` intra-op threads each (two single-threaded
sessions on a 2-CPU machine, no spinning; batches run in slices of CLASSIFIER_RUN_ROWS rows), in
as many processes as `labsight up` runs it (``size_stack``: since 2026-12-06 two of one session
each on a machine without a GPU, the clients' round_robin channels spreading the calls), and
the in-process side runs the same work in two variants, each with its own session of
``threads`` threads per worker, spinning off, in slices of as many rows: a pool of
``instances`` threads in this process, and ``instances`` processes each on its share of the
fields (no GIL shared; since 2026-12-06). Each round's faster variant is the baseline. The
services, gateway and workers get the environment `labsight up` gives them
(``labsight.runtime.cpus.size_stack``), and this process, where the in-process side runs, the
glibc malloc settings of the segmentation service (the bench re-runs itself with them unless
they are set). So a ratio below 1 is the cost of
transport, batching and process hops, not of a different use of the cores.

1. ``ClassifyCells`` under concurrent load: ``--clients`` threads send one field each per call
   to the classifier service (its processes), the cell labels in the narrowest dtype that
   holds them (``labsight.tensors.narrow_labels``: uint16 here, as the hpa-cells pipeline
   forwards SegmentCells' masks; ``--label-dtype int32`` sends 2 MB per request instead of
   1.5 MB), each request encoded by its thread just before the call (pixels and labels
   copied once into its bytes, as the worker sends them). In-process: ``classify_cells``
   (crops + model) on the same fields. Then the transport floor: the same requests, encoded
   alike by as many threads, into raw gRPC bytes sinks (``bench/bytes_sink.py``, as many
   processes as the classifier's), their CPU per cell, and the most the ratio could reach on
   these cores if the service cost nothing beyond receiving them: in-process / (in-process +
   floor).
2. ``hpa-cells`` through the gateway: one batch of jobs of the 4-channel fields
   (``method=classical``) through Redis, the gateway and ``--workers`` worker processes
   with the environment ``labsight up`` gives them (``labsight.runtime.cpus.size_stack``: job
   slots, glibc malloc settings), the segmentation and the classifier service (own processes);
   the client submits the jobs in parts of PART_JOBS (SubmitBatch calls under one batch id, as
   `labsight submit` sends a folder: each part is queued while the next is sent), then reads
   the results as the jobs end (one GetBatchResults stream with ``follow``; until 2026-12-06
   it sent one SubmitBatch, waited for the batch to end, then fetched every result, the
   services idle during the upload and the fetch).
   In-process: classical ``segment_cells``, ``measure_cells`` (the cells table) and
   ``classify_cells`` per field on the pool.
   Started after part 1, so its gateway and workers cost part 1 nothing. Then the transport
   floor (since 2026-12-07): each job's bytes moved along the served path with no LabSight code,
   from one thread: the job as submitted into a raw gRPC
   bytes sink, SET into the bench's Redis and read back, the SegmentCells and ClassifyCells
   requests as the worker writes them into sinks that answer as many bytes as the real services
   answered them (each asked once beforehand, untimed), and the job's stored result SET into
   Redis, read back and answered by a sink, on an emptied Redis whose AOF was just rewritten
   (else a rewrite during the floor writes the served rounds' results again on its account);
   its CPU per cell (this process, the sinks, Redis), and the most the ratio could reach on
   these cores: in-process / (in-process + floor).
3. Explanations per cell on one thread: Grad-CAM (captum, torch) and LIME (1000
   perturbations through ONNX Runtime, as ExplainCells runs it); target ≤ 5 s per cell.

Parts 1 and 2 run both sides once per round in rotating order (bench/_paired.py) and print
each round's cells/s and ratio, min/median/max of the ratios, and CPU milliseconds per cell
of each process (this process is the client; Redis too unless REDIS_URL is set) with the ratio in-process
CPU / served CPU, which a busy shared machine moves less than the rates. The load average is
printed beside each round.
"""

from __future__ import annotations

import argparse
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from multiprocessing.process import BaseProcess
from pathlib import Path

import grpc
import numpy as np
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._cpu import process_cpu_seconds  # noqa: E402
from bench._paired import load_text, paired_rounds, round_ratios, spread  # noqa: E402
from bench._shares import ProcessShares  # noqa: E402
from bench.bytes_sink import ANSWER_BYTES, PUT, SIZED  # noqa: E402
from bench.service_process import start_process, start_service, stop_process  # noqa: E402
from labsight.batch_submit import PART_JOBS  # noqa: E402
from labsight.catalog import SEGMENTATION  # noqa: E402
from labsight.client import LabSightClient, build_request  # noqa: E402
from labsight.config import address_env_var  # noqa: E402
from labsight.images import image_from_array  # noqa: E402
from labsight.models import Engine, build_engine, load_torch_model  # noqa: E402
from labsight.redis_server import start_redis, stop_redis  # noqa: E402
from labsight.runtime.cpus import PROCESS_MALLOC, StackSizing, size_stack  # noqa: E402
from labsight.runtime.encoded_channel import EncodedRequestChannel  # noqa: E402
from labsight.stored_results import unpack_result  # noqa: E402
from labsight.tensor_wire import EncodedMessage, serialize_with_arrays  # noqa: E402
from labsight.tensors import from_tensor, narrow_labels  # noqa: E402
from labsight.up import replica_name, service_target  # noqa: E402
from labsight.v1 import classifier_pb2, classifier_pb2_grpc, segmentation_pb2  # noqa: E402
from labsight.v1 import gateway_pb2 as pb  # noqa: E402
from services.classifier.cells import classify_cells  # noqa: E402
from services.classifier.explain import cam_layer, grad_cam, lime_explanation  # noqa: E402
from services.classifier.generated_cells import CellField, generate_cell_field  # noqa: E402
from services.classifier.repository import DEFAULT_MODEL, classifier_repository, load_thresholds  # noqa: E402
from services.classifier.servicer import serving_config  # noqa: E402
from services.gateway.keys import RedisKeys  # noqa: E402
from services.segmentation.cells import segment_cells  # noqa: E402
from services.segmentation.measure import measure_cells  # noqa: E402

PIXEL_SIZE_UM = 0.3
"""Pixel size at which the generated cells (radius 24-36 px) have HPA cells' size."""

SEGMENT_CELLS = "/labsight.v1.SegmentationService/SegmentCells"
CLASSIFY_CELLS = "/labsight.v1.ClassifierService/ClassifyCells"
"""Method paths of the two services' calls, for the transport floor's raw-bytes calls."""

SEED = 4711

SEGMENTATION_MALLOC = PROCESS_MALLOC[SEGMENTATION.name]
"""The glibc malloc variables `labsight up` gives the segmentation service."""

ADDED_MALLOC_ENV = "LABSIGHT_BENCH_ADDED_MALLOC"
"""Names of the glibc variables :func:`allocate_as_segmentation` added to this process's
environment (comma-separated), which the processes it starts do not inherit."""

QUIET_ENV = {**{name: value for name, value in os.environ.items()
                if name not in os.environ.get(ADDED_MALLOC_ENV, "").split(",")},
             "LABSIGHT_LOG_LEVEL": "WARNING"}
"""Environment of the services this bench starts (with what the user set, not what was added)."""


def allocate_as_segmentation() -> None:
    """Re-run this bench with the glibc malloc variables `labsight up` gives the segmentation
    service (PROCESS_MALLOC) where the environment does not set them: glibc reads them
    when a process starts, and the in-process side, which segments in this process, should
    allocate as the service it is compared with does (without them it took ~900 page faults and
    1-2 ms more CPU per field)."""
    missing = {name: value for name, value in SEGMENTATION_MALLOC.items() if name not in os.environ}
    if missing:
        os.execve(sys.executable, [sys.executable, *sys.argv],
                  {**os.environ, **missing, ADDED_MALLOC_ENV: ",".join(missing)})


class EnginePool:
    """Runs work on ``len(engines)`` threads, each thread with an ONNX Runtime session of its own."""

    def __init__(self, engines: list[Engine]) -> None:
        free: queue.SimpleQueue[Engine] = queue.SimpleQueue()
        for engine in engines:
            free.put(engine)
        self._local = threading.local()
        self.pool = ThreadPoolExecutor(len(engines), initializer=lambda: setattr(
            self._local, "engine", free.get()))

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """The model's probabilities on the calling pool thread's session."""
        return self._local.engine.outputs(batch)["probabilities"]

    def total(self, work: Callable[[CellField], int], fields: list[CellField]) -> int:
        """``work`` over the fields on the pool; the sum of what it returns."""
        return sum(self.pool.map(work, fields))


class CpuClock:
    """User + system CPU seconds of this process (``client``) and of named child processes."""

    def __init__(self, processes: Mapping[str, subprocess.Popen[bytes] | BaseProcess]) -> None:
        self.processes = processes

    def read(self) -> dict[str, float]:
        """CPU seconds used so far by each process."""
        used = {"client": time.process_time()}
        for name, process in self.processes.items():
            used[name] = process_cpu_seconds(process.pid)
        return used


def start_replicas(service: str, sizing: StackSizing
                   ) -> tuple[str, dict[str, subprocess.Popen[bytes]]]:
    """Model service ``service`` (catalog name) in as many processes as `labsight up` runs, with
    the environment it gives them; (gRPC target of them all, processes by child name)."""
    started = {replica_name(service, index): start_service(
        f"services.{service}", {**sizing.service_environment(service), **QUIET_ENV})
        for index in range(sizing.replicas_of(service))}
    return (service_target([address for _, address in started.values()]),
            {name: process for name, (process, _) in started.items()})


def fields_of(count: int) -> list[CellField]:
    """The bench's generated fields (the same in every process that makes them)."""
    return [generate_cell_field(np.random.default_rng((SEED, i)), size=512, cells=14)
            for i in range(count)]


def classifier_share(fields: int, share: int, shares: int) -> Callable[[str], int]:
    """The in-process side's work in one of ``shares`` processes (:class:`ProcessShares`): its own
    session, warmed, on every ``shares``-th field from ``share``; given a work name ("classify"
    or "hpa-cells"), the cells it classified."""
    manifest = classifier_repository().get(DEFAULT_MODEL)
    serving = serving_config()
    _, threads = serving.engine_layout(on_cuda=False)
    engine = build_engine(manifest, "", "cpu", serving.cache_dir, threads=threads, spin=False,
                          run_rows=serving.run_rows * threads)
    thresholds = load_thresholds(manifest)
    mine = fields_of(fields)[share::shares]

    def predict(batch: np.ndarray) -> np.ndarray:
        return engine.outputs(batch)["probabilities"]

    def classify(field: CellField, labels: np.ndarray) -> int:
        return len(classify_cells(field.image, labels, predict, thresholds=thresholds,
                                  batch_size=serving.max_batch_size).cell_ids)

    def hpa_cells(field: CellField) -> int:
        return classify(field, segmented(field))

    work = {"classify": lambda field: classify(field, field.cell_labels), "hpa-cells": hpa_cells}
    for field in mine[:2]:  # untimed: the session warm
        work["classify"](field)
    return lambda name: sum(work[name](field) for field in mine)


def segmented(field: CellField) -> np.ndarray:
    """The cell labels of the classical segmentation of ``field`` (its table measured too, as
    the hpa-cells pipeline does)."""
    nuclei, labels = segment_cells(field.image[..., 0], field.image[..., 3], field.image[..., 2],
                                   pixel_size_um=PIXEL_SIZE_UM, method="classical")
    measure_cells(nuclei, labels, field.image, pixel_size_um=PIXEL_SIZE_UM)
    return labels


def measured(work: Callable[[], int], clock: CpuClock, rates: list[float],
             cpu: list[dict[str, float]], loads: list[float]) -> Callable[[], float]:
    """A round's run of ``work`` (returning cells): records cells/s, CPU s per cell and the load."""

    def run() -> float:
        before, start = clock.read(), time.perf_counter()
        cells = work()
        seconds, after = time.perf_counter() - start, clock.read()
        rates.append(cells / seconds)
        cpu.append({name: (after[name] - before[name]) / cells for name in after})
        loads.append(os.getloadavg()[0])
        return rates[-1]

    return run


LABEL_DTYPES = ("narrow", "uint8", "uint16", "int32")
"""How ClassifyCells clients may send the cell labels: ``narrow`` (the narrowest dtype that
holds them, :func:`labsight.tensors.narrow_labels`) or one dtype."""


def concurrent_classify(address: str, fields: list[CellField], clients: int,
                        label_dtype: str = "narrow") -> int:
    """ClassifyCells of every field from ``clients`` threads, the cell labels sent as
    ``label_dtype`` (one of LABEL_DTYPES); returns the cells classified.

    Each thread encodes its next request just before sending it, as a client streaming
    its fields does, the pixels and labels copied once into the request's bytes
    (:func:`labsight.tensor_wire.serialize_with_arrays`, as the worker sends them). Until
    2026-12-06 every request was built before the first call, in this thread (two copies
    each, ~0.2 s a round), while the services waited for work."""
    channel = EncodedRequestChannel(
        grpc.insecure_channel(address, options=[("grpc.lb_policy_name", "round_robin")]))
    stub = classifier_pb2_grpc.ClassifierServiceStub(channel)  # calls spread over its processes

    def classify(field: CellField) -> int:
        request = EncodedMessage(classify_request_bytes(field, label_dtype))
        return len(stub.ClassifyCells(request, timeout=300).cell_ids)

    try:
        return from_client_threads(classify, fields, clients)
    finally:
        channel.close()


def classify_request_bytes(field: CellField, label_dtype: str) -> bytes:
    """A ClassifyCellsRequest of ``field`` as bytes, its labels as ``label_dtype`` (LABEL_DTYPES)."""
    labels = (narrow_labels(field.cell_labels) if label_dtype == "narrow"
              else field.cell_labels.astype(label_dtype, copy=False))
    return serialize_with_arrays(classifier_pb2.ClassifyCellsRequest(),
                                 {"image.tensor": field.image, "cell_labels": labels})


def from_client_threads(call: Callable[[CellField], int], fields: list[CellField],
                        clients: int) -> int:
    """``call`` on every field from ``clients`` threads started together, each on every
    ``clients``-th field; the sum of what it returned."""
    counts = [0] * clients
    barrier = threading.Barrier(clients)

    def client(index: int) -> None:
        barrier.wait()
        for field in fields[index::clients]:
            counts[index] += call(field)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts)


def to_bytes_sinks(address: str, fields: list[CellField], clients: int, label_dtype: str,
                   cells: Mapping[int, int]) -> int:
    """The requests :func:`concurrent_classify` sends, encoded alike by as many threads, sent to
    raw gRPC bytes sinks (``bench/bytes_sink.py``: no protobuf, nothing done with the bytes);
    returns the cells they carried (``cells``: by ``id`` of a field). What moving the requests
    costs with no service behind them."""
    channel = grpc.insecure_channel(address, options=[("grpc.lb_policy_name", "round_robin")])
    put = channel.unary_unary(PUT)  # bytes in, bytes out: no (de)serializers

    def send(field: CellField) -> int:
        put(classify_request_bytes(field, label_dtype), timeout=300)
        return cells[id(field)]

    try:
        return from_client_threads(send, fields, clients)
    finally:
        channel.close()


def transport_floor(sinks: Mapping[str, subprocess.Popen[bytes]], address: str,
                    fields: list[CellField], clients: int, label_dtype: str, rounds: int,
                    in_process_ms: float) -> None:
    """Print the CPU per cell of the client and the bytes sinks over ``rounds`` passes, and the
    most a served ClassifyCells could reach on these cores if the service cost nothing beyond
    receiving its requests: in-process CPU / (in-process + transport) (the rounds are CPU-bound,
    so rates follow CPU per cell)."""
    clock = CpuClock(sinks)
    counts = {id(field): int(field.cell_labels.max()) for field in fields}  # labels 1..n
    to_bytes_sinks(address, fields[:2], 2, label_dtype, counts)  # untimed: connections
    per_cell: list[float] = []
    for _ in range(rounds):
        before = clock.read()
        cells = to_bytes_sinks(address, fields, clients, label_dtype, counts)
        after = clock.read()
        per_cell.append(1000 * sum(after[name] - before[name] for name in after) / cells)
    ceilings = [in_process_ms / (in_process_ms + ms) for ms in per_cell]
    print(f"   transport floor: the same requests from {clients} client threads to {len(sinks)} "
          f"raw gRPC bytes sink(s), CPU ms per cell (client + sinks) {spread(per_cell, '.3f')}; "
          f"with the in-process {in_process_ms:.2f}, the most a served ratio can reach on these "
          f"cores: {spread(ceilings)}")


@dataclass(frozen=True)
class HpaCellsBytes:
    """What one field's hpa-cells job moves, as the stack moves it: the job as submitted, the
    SegmentCells and ClassifyCells requests as the worker writes them with the sizes of their
    real answers, the job's result as the worker kept it in Redis (packed: labsight.stored_results)
    and the size of the plain result the gateway answers."""

    job: bytes
    segment_request: bytes
    segment_answer_bytes: int
    classify_request: bytes
    classify_answer_bytes: int
    result: bytes
    result_answer_bytes: int
    cells: int


def hpa_cells_bytes(fields: list[CellField], requests: list[pb.SubmitJobRequest],
                    segmentation_address: str, classifier_address: str,
                    results: list[bytes]) -> list[HpaCellsBytes]:
    """Each field's :class:`HpaCellsBytes`: the real services answer each request once (untimed)
    so the floor moves answers of their sizes; ``results`` are the stored results in field order."""
    channels = [grpc.insecure_channel(address, options=[("grpc.lb_policy_name", "round_robin")])
                for address in (segmentation_address, classifier_address)]
    segment = channels[0].unary_unary(SEGMENT_CELLS)  # bytes in, bytes out
    classify = channels[1].unary_unary(CLASSIFY_CELLS)
    moved = []
    try:
        for field, request, result in zip(fields, requests, results, strict=True):
            segment_request = serialize_with_arrays(
                segmentation_pb2.SegmentCellsRequest(method="classical", pixel_size_um=PIXEL_SIZE_UM),
                {"image.tensor": field.image})
            segment_answer = segment(segment_request, timeout=300)
            labels = from_tensor(segmentation_pb2.SegmentCellsResponse.FromString(
                segment_answer).cell_labels, "cell_labels")
            classify_request = serialize_with_arrays(  # the labels as SegmentCells answered them
                classifier_pb2.ClassifyCellsRequest(return_crops=True),
                {"image.tensor": field.image, "cell_labels": labels})
            classify_answer = classify(classify_request, timeout=300)
            cells = len(classifier_pb2.ClassifyCellsResponse.FromString(classify_answer).cell_ids)
            moved.append(HpaCellsBytes(request.SerializeToString(), segment_request,
                                       len(segment_answer), classify_request, len(classify_answer),
                                       result, len(unpack_result(result)), cells))
    finally:
        for channel in channels:
            channel.close()
    return moved


def along_the_hpa_path(sink_address: str, redis_url: str, moved: list[HpaCellsBytes]) -> int:
    """Every hpa-cells job's bytes moved along the served path with no LabSight code on it,
    from one thread (four threads of one process, as many as the worker's job slots, cost
    0.06 ms per cell more in this process, its GIL handed over): the job into a raw gRPC bytes sink (client
    to gateway), SET into Redis and read back (gateway to Redis to worker), the SegmentCells and
    ClassifyCells requests into sinks that answer as many bytes as the services did, the result
    as kept SET into Redis and read back (worker to Redis to gateway), then answered by a sink as
    the plain result (gateway to client); the cells the jobs carried. No record, check, queue,
    segmentation or model: a floor."""
    channel = grpc.insecure_channel(sink_address, options=[("grpc.lb_policy_name", "round_robin")])
    put, sized = channel.unary_unary(PUT), channel.unary_unary(SIZED)  # no (de)serializers
    client = redis.Redis.from_url(redis_url)
    key = f"labsight-bench-floor-{uuid.uuid4().hex}"

    def move(job: HpaCellsBytes) -> int:
        put(job.job, timeout=300)
        client.set(f"{key}:input", job.job)
        client.get(f"{key}:input")
        sized(job.segment_request, metadata=((ANSWER_BYTES, str(job.segment_answer_bytes)),),
              timeout=300)
        sized(job.classify_request, metadata=((ANSWER_BYTES, str(job.classify_answer_bytes)),),
              timeout=300)
        client.set(f"{key}:result", job.result)
        client.get(f"{key}:result")
        sized(b"", metadata=((ANSWER_BYTES, str(job.result_answer_bytes)),), timeout=300)
        client.delete(f"{key}:input", f"{key}:result")
        return job.cells

    try:
        return sum(move(job) for job in moved)
    finally:
        client.close()
        channel.close()


def hpa_transport_floor(sinks: Mapping[str, subprocess.Popen[bytes]], sink_address: str,
                        redis_url: str, redis_process: subprocess.Popen[bytes] | None,
                        moved: list[HpaCellsBytes], rounds: int, in_process_ms: float) -> None:
    """Print the CPU per cell of :func:`along_the_hpa_path` over ``rounds`` passes (this process,
    the sinks and, when the bench started it, Redis) and the most a served hpa-cells could reach
    on these cores if LabSight cost nothing beyond moving its bytes: in-process / (in-process +
    floor)."""
    clock = CpuClock({**sinks, **({"redis": redis_process} if redis_process is not None else {})})
    along_the_hpa_path(sink_address, redis_url, moved[:2])  # untimed: connections
    per_cell: list[float] = []
    parts: list[dict[str, float]] = []
    for _ in range(rounds):
        before = clock.read()
        cells = along_the_hpa_path(sink_address, redis_url, moved)
        after = clock.read()
        parts.append({name: 1000 * (after[name] - before[name]) / cells for name in after})
        per_cell.append(sum(parts[-1].values()))
    ceilings = [in_process_ms / (in_process_ms + ms) for ms in per_cell]
    shares = ", ".join(f"{name} {statistics.median(part[name] for part in parts):.2f}"
                       for name in parts[0])
    counted = "" if redis_process is not None else " (Redis not counted: REDIS_URL was set)"
    print(f"   transport floor: each job's bytes along the served path from one thread (job "
          f"into a raw gRPC bytes sink, SET into Redis and read back, the SegmentCells and "
          f"ClassifyCells requests into sinks answering as many bytes as the services, the result "
          f"SET into Redis, read back and answered by a sink; {len(sinks)} sink processes), CPU ms "
          f"per cell {spread(per_cell, '.3f')} ({shares}){counted}; with the in-process "
          f"{in_process_ms:.2f}, the most a served ratio can reach on these cores: {spread(ceilings)}")


def delete_prefixed(redis_url: str, prefix: str) -> None:
    """Delete every key under ``prefix:`` (the stack's jobs, inputs and results)."""
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=5000))
        for offset in range(0, len(keys), 1000):
            client.delete(*keys[offset : offset + 1000])
    finally:
        client.close()


def compact_aof(redis_url: str, timeout_s: float = 120.0) -> None:
    """Rewrite the bench's Redis's append-only file now and wait until it is done (after any
    rewrite Redis had started by itself)."""
    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout_s

    def wait_for_rewrite() -> None:
        while True:
            info = client.info("persistence")
            if not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]:
                return
            if time.monotonic() > deadline:
                raise RuntimeError("the bench's Redis did not finish rewriting its AOF")
            time.sleep(0.1)

    try:
        wait_for_rewrite()
        client.bgrewriteaof()
        wait_for_rewrite()
    finally:
        client.close()


def compare(title: str, sides: dict[str, Callable[[], int]], clocks: dict[str, CpuClock],
            rounds: int) -> float:
    """Paired rounds of the served side and the in-process variants (every side but "served");
    print rates, ratios to each round's fastest variant, and CPU per cell; returns the cheaper
    in-process variant's median CPU ms per cell."""
    rates: dict[str, list[float]] = {name: [] for name in sides}
    cpu: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
    loads: dict[str, list[float]] = {name: [] for name in sides}
    paired_rounds({name: measured(work, clocks[name], rates[name], cpu[name], loads[name])
                   for name, work in sides.items()}, rounds)
    print(title)
    variants = [name for name in sides if name != "served"]
    best = [max(variants, key=lambda name: rates[name][index]) for index in range(rounds)]
    baseline = [rates[name][index] for index, name in enumerate(best)]
    ratios = round_ratios(rates["served"], baseline)
    for index, ratio in enumerate(ratios):
        print(f"   round {index + 1}: served {rates['served'][index]:7.1f} cells/s, " + ", ".join(
            f"{name} {rates[name][index]:7.1f}" for name in variants
        ) + f"; ratio to the faster {ratio:.3f} (load {loads['served'][index]:.1f})")
    for name in variants:
        print(f"   {name}: {spread(rates[name], '.1f')} cells/s, the faster in "
              f"{best.count(name)} of {rounds} rounds")
    print(f"   ratio served/in-process (min / median / max): {spread(ratios)} (target >= 0.8)")
    served_ms = {name: 1000 * statistics.median(row[name] for row in cpu["served"])
                 for name in cpu["served"][0]}
    local_ms = {name: 1000 * statistics.median(sum(row.values()) for row in cpu[name])
                for name in variants}
    cpu_ratios = [sum(cpu[name][index].values()) / sum(cpu["served"][index].values())
                  for index, name in enumerate(best)]
    print("   CPU ms per cell (median): " + ", ".join(
        f"{name} {ms:.2f}" for name, ms in local_ms.items()) + "; served "
          + ", ".join(f"{name} {ms:.2f}" for name, ms in served_ms.items())
          + f" (total {sum(served_ms.values()):.2f})")
    print(f"   CPU ratio in-process/served, the faster variant's (min / median / max): {spread(cpu_ratios)}")
    return min(local_ms.values())


def main() -> None:
    """Run the three parts and print their numbers."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--fields", type=int, default=96,
                        help="generated fields (~14 cells each); 96 makes part 1's rounds about a "
                             "second long: with 24 (0.2-0.3 s) the in-process side varied by a quarter "
                             "from round to round")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=0,
                        help="worker processes of part 2 (0: as labsight up sizes them)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--lime-cells", type=int, default=5)
    parser.add_argument("--parts", default="1,2,3", help="parts to run, e.g. 1,3")
    parser.add_argument("--label-dtype", default="narrow", choices=LABEL_DTYPES,
                        help="dtype of the cell labels ClassifyCells clients send (part 1); narrow: "
                             "the narrowest that holds them (uint16 here), as labsight.tensors."
                             "narrow_labels and the hpa-cells pipeline send them")
    args = parser.parse_args()
    allocate_as_segmentation()
    parts = {int(part) for part in args.parts.split(",")}
    import torch

    torch.set_num_threads(1)
    fields = fields_of(args.fields)
    cells = sum(int(f.cell_labels.max()) for f in fields)
    manifest = classifier_repository().get(DEFAULT_MODEL)
    serving = serving_config()  # the service's: its layout and its runs of a few rows
    instances, threads = serving.engine_layout(on_cuda=False)
    engines = [build_engine(manifest, "", "cpu", serving.cache_dir, threads=threads, spin=False,
                            run_rows=serving.run_rows * threads)
               for _ in range(instances)]
    local = EnginePool(engines)
    thresholds = load_thresholds(manifest)

    def classify(field: CellField, labels: np.ndarray | None = None) -> int:
        return len(classify_cells(field.image, field.cell_labels if labels is None else labels,
                                  local.predict, thresholds=thresholds,
                                  batch_size=serving.max_batch_size).cell_ids)

    def hpa_cells(field: CellField) -> int:
        return classify(field, segmented(field))

    private: tuple[subprocess.Popen[bytes], str] | None = None
    redis_url = os.environ.get("REDIS_URL", "")
    if not redis_url:  # a Redis as `labsight up` runs it (AOF), its CPU counted
        private = start_redis(Path(tempfile.mkdtemp(prefix="labsight-bench-redis-")))
        redis_url = private[1]
    prefix = f"labsight-bench-{uuid.uuid4().hex[:8]}"
    sizing = size_stack(workers=args.workers or None)
    served = {service: start_replicas(service, sizing) for service in ("classifier", "segmentation")}
    classifier_address, classifier_processes = served["classifier"]
    segmentation_address, segmentation_processes = served["segmentation"]
    stack_env = {**QUIET_ENV, "REDIS_URL": redis_url, "LABSIGHT_KEY_PREFIX": prefix,
                 "LABSIGHT_ALLOW_ANONYMOUS": "1", "LABSIGHT_WEB_PORT": "-1",
                 address_env_var("features"): "127.0.0.1:1",
                 address_env_var("segmentation"): segmentation_address,
                 address_env_var("classifier"): classifier_address}
    requests = [build_request("hpa-cells", image_from_array(f.image),
                              {"pixel_size_um": str(PIXEL_SIZE_UM), "method": "classical"}) for f in fields]
    stack: dict[str, subprocess.Popen[bytes]] = {}
    gateway_address = ""
    processes: ProcessShares | None = None

    last_job_ids: list[str] = []

    def through_gateway() -> int:
        with LabSightClient(gateway_address, token="", timeout_s=600) as lab:
            batch_id = uuid.uuid4().hex
            job_ids = [job_id for start in range(0, len(requests), PART_JOBS)  # queued part by part
                       for job_id in lab.submit_batch(requests[start:start + PART_JOBS],
                                                      batch_id=batch_id).job_ids]
            last_job_ids[:] = job_ids
            # one GetBatchResults stream, each job's result read as it ends
            fetched = list(lab.batch_results(batch_id, follow=True))
            failed = [job.error for job, result in fetched if result is None]
            if failed or [job.job_id for job, _ in fetched] != list(job_ids):
                raise RuntimeError(f"{len(failed)} jobs failed, e.g. {failed[:1]}")
            return sum(len(result.tables["classes"].row_ids) for _, result in fetched)

    try:
        print(f"model {manifest.name} {manifest.version}; {args.fields} generated 512x512 fields, {cells} "
              f"cells; ONNX Runtime: {instances} sessions x {threads} thread(s) on both sides, max batch "
              f"{serving.max_batch_size}, queue delay {serving.max_queue_delay_ms:g} ms; {load_text()}")
        print("services and stack with the environment labsight up gives them; glibc malloc of the "
              "in-process side (and the client): "
              + " ".join(f"{name}={os.environ[name]}" for name in SEGMENTATION_MALLOC))
        local.total(classify, fields[:2])  # untimed: sessions warm
        concurrent_classify(classifier_address, fields[:2], 2)  # untimed: load, export, connect
        in_process = CpuClock({})
        # One process per session, each on its share of the fields (inheriting this process's
        # malloc environment): no GIL shared between the sessions' Python work.
        processes = ProcessShares([partial(classifier_share, args.fields, share, instances)
                                   for share in range(instances)])
        processes_clock = CpuClock({f"pool-{index}": process
                                    for index, process in enumerate(processes.processes)})
        threads_side = f"in-process {instances} threads"
        processes_side = f"in-process {instances} processes"
        if 1 in parts:
            in_process_ms = compare(
                    f"1) ClassifyCells, {args.clients} concurrent clients ({args.label_dtype} labels) on one "
                    f"round_robin channel to {len(classifier_processes)} classifier process(es), "
                    f"against classify_cells in-process on a pool of {instances} threads or of "
                    f"{instances} processes, whichever was faster in the round:",
                    {threads_side: lambda: local.total(classify, fields),
                     processes_side: lambda: sum(processes.run("classify")[2]),
                     "served": lambda: concurrent_classify(classifier_address, fields, args.clients,
                                                           args.label_dtype)},
                    {threads_side: in_process, processes_side: processes_clock,
                     "served": CpuClock(classifier_processes)}, args.rounds)
            sinks = {f"sink-{index + 1}": start_service("bench.bytes_sink", {
                **sizing.service_environment("classifier"), **QUIET_ENV})
                for index in range(len(classifier_processes))}
            try:
                transport_floor({name: process for name, (process, _) in sinks.items()},
                                service_target([address for _, address in sinks.values()]),
                                fields, args.clients, args.label_dtype, args.rounds, in_process_ms)
            finally:
                for process, _ in sinks.values():
                    stop_process(process)
        if 2 in parts:
            stack["gateway"], gateway_address = start_service(
                "services.gateway", {**sizing.gateway_environment(), **stack_env})
            for index in range(sizing.workers):
                stack[f"worker-{index + 1}"] = start_process(
                    "services.gateway.worker", {**sizing.worker_environment(), **stack_env})
            through_gateway()  # untimed
            in_process_ms = compare(
                    f"2) hpa-cells jobs through the gateway, {sizing.describe()}, segmentation and "
                    "classifier services, against segment_cells + measure_cells + classify_cells "
                    f"in-process on a pool of {instances} threads or of {instances} processes, "
                    "whichever was faster in the round:",
                    {threads_side: lambda: local.total(hpa_cells, fields),
                     processes_side: lambda: sum(processes.run("hpa-cells")[2]), "served": through_gateway},
                    {threads_side: in_process, processes_side: processes_clock,
                     "served": CpuClock({**segmentation_processes, **classifier_processes,
                                         **stack, **({"redis": private[0]} if private else {})})},
                    args.rounds)
            store = redis.Redis.from_url(redis_url)
            results = [store.get(RedisKeys(prefix).job_result(job_id)) for job_id in last_job_ids]
            store.close()
            if None in results:
                raise RuntimeError("an hpa-cells result expired before the transport floor")
            # The floor starts on an empty dataset and a compact AOF: the results the served
            # rounds left would otherwise be written again by any AOF rewrite during the floor
            # and counted as its Redis cost.
            delete_prefixed(redis_url, prefix)
            if private is not None:
                compact_aof(redis_url)
            moved = hpa_cells_bytes(fields, requests, segmentation_address, classifier_address,
                                    [result for result in results if result is not None])
            sinks = {f"sink-{index + 1}": start_service("bench.bytes_sink", {
                **sizing.service_environment("segmentation"), **QUIET_ENV})
                for index in range(len(segmentation_processes))}
            try:
                hpa_transport_floor({name: process for name, (process, _) in sinks.items()},
                                    service_target([address for _, address in sinks.values()]),
                                    redis_url, private[0] if private else None, moved,
                                    args.rounds, in_process_ms)
            finally:
                for process, _ in sinks.values():
                    stop_process(process)
        print(f"after: {load_text()}")
    finally:
        for process in (*stack.values(), *classifier_processes.values(),
                        *segmentation_processes.values()):
            stop_process(process)
        delete_prefixed(redis_url, prefix)
        if private is not None:
            stop_redis(*private)
        local.pool.shutdown()
        if processes is not None:
            processes.close()
    if 3 in parts:
        explanations(fields[0], manifest, engines[0], args.lime_cells)


def explanations(field: CellField, manifest: object, engine: Engine, count: int) -> None:
    """Grad-CAM and LIME seconds per cell on one thread (part 3)."""
    from labsight.cell_crops import cell_crops

    crops = cell_crops(field.image, field.cell_labels, manifest.input_size[0]).pixels[:count]  # type: ignore[attr-defined]

    def predict(batch: np.ndarray) -> np.ndarray:
        return engine.outputs(batch)["probabilities"]

    top = predict(crops).argmax(axis=1)
    network = load_torch_model(manifest)  # type: ignore[arg-type]
    layer = cam_layer(network, manifest.module_path("features"))  # type: ignore[attr-defined]
    start = time.perf_counter()
    grad_cam(network, crops, top, layer=layer)
    cam_seconds = (time.perf_counter() - start) / len(crops)
    lime_seconds = []
    for crop, target in zip(crops, top, strict=True):
        start = time.perf_counter()
        lime_explanation(crop, predict, int(target))
        lime_seconds.append(time.perf_counter() - start)
    print(f"3) explanations per cell, one thread: Grad-CAM {cam_seconds * 1000:.1f} ms; LIME "
          f"(1000 samples) min / median / max {spread(lime_seconds, '.2f', 's')} over "
          f"{len(lime_seconds)} cells (target <= 5 s); {load_text()}")


if __name__ == "__main__":
    main()
