"""Intake benchmark: jobs accepted per second through SubmitBatch against pipelined XADD, paired.

Run from the repository root with Redis on 127.0.0.1:6379 (or REDIS_URL):

    python bench/intake.py [--rounds 5] [--jobs-small 2000] [--jobs-medium 200] [--jobs-large 12]

Three realistic inputs, each a ``fractal`` job with default parameters: a 64x64 RGB array (as
a tensor), a 512x512 RGB PNG file and a 2048x2048 RGB PNG file, both of a generated
fluorescence field of cells (LabSight's classifier generator), so they compress like
micrographs. The gateway runs as its own process (``python -m services.gateway``, as
``labsight up`` runs it); this process is the client, calling SubmitBatch once per round.

The baseline is the floor of any Redis-backed intake: the same jobs, already serialized, one
XADD each into a stream, pipelined 256 jobs (or 64 MiB) at a time, with no gRPC, no validation,
no image header read and no job record; each payload goes to redis-py as a memoryview, which it
sends as it is (bytes would be copied into the command first, as the gateway's own writes avoid
too). It runs in two variants: one Python thread on one connection in this process, and one
process per CPU (``usable_cpus()``; spawned, warm and holding their share of the payloads before
the rounds), each pipelining its share on its own connection, timed from this process until the
last of them finished. Each round's faster variant is that round's baseline; both are printed,
with how often each was the faster. Until 2026-12-06 the baseline was the single thread only,
while the served side used the client process, the gateway process and Redis; and the gateway
inherited the caller's LABSIGHT_BLOB_URL, so with one set large PNGs went to disk on the served
side while the baseline put them in Redis: the gateway now runs with LABSIGHT_BLOB_URL empty,
every payload in Redis on both sides. A ratio of 1 would mean the
gateway accepts jobs as fast as Redis takes their bytes. Each round runs every side in
rotating order, and the keys they wrote are deleted between runs (untimed); figures are
min / median / max over rounds. Beside the rates: CPU milliseconds per job of this process while
it streams SubmitBatch (the client: packing and serializing requests, gRPC), of the gateway
process, and of Redis (INFO cpu; it may serve others on a shared machine), medians over rounds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._paired import load_text, paired_rounds, process_cpu_s, round_ratios, spread  # noqa: E402
from bench._shares import ProcessShares  # noqa: E402
from bench.service_process import start_service, stop_process  # noqa: E402
from labsight.client import LabSightClient, build_request  # noqa: E402
from labsight.images import encode_png  # noqa: E402
from labsight.runtime.cpus import usable_cpus  # noqa: E402
from labsight.v1 import gateway_pb2 as pb  # noqa: E402
from services.classifier.generated_cells import generate_cell_field  # noqa: E402

PIPELINE_CHUNK_JOBS = 256
PIPELINE_CHUNK_BYTES = 64 << 20


def cell_picture(size: int, seed: int) -> np.ndarray:
    """RGB planes of a generated field of cells, size x size uint8."""
    field = generate_cell_field(seed, size=size, cells=max(4, (size // 90) ** 2))
    return np.ascontiguousarray(field.image[..., :3])


def baseline_xadd(client: redis.Redis, stream: str, payloads: list[bytes]) -> float:
    """Seconds to XADD every payload, pipelined in chunks of 256 jobs or 64 MiB."""
    start = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    queued = size = 0
    for payload in payloads:
        pipe.xadd(stream, {"job": memoryview(payload)})
        queued, size = queued + 1, size + len(payload)
        if queued >= PIPELINE_CHUNK_JOBS or size >= PIPELINE_CHUNK_BYTES:
            pipe.execute()
            queued = size = 0
    if queued:
        pipe.execute()
    return time.perf_counter() - start


def xadd_share(redis_url: str, share: int, shares: int) -> Callable[..., float]:
    """One process's part of the parallel XADD floor (:class:`ProcessShares`), on its own
    connection, made before any round: ``("load", stream, payloads)`` keeps payloads
    ``share::shares`` (untimed), ``("run",)`` answers the seconds of one pipelined pass of them."""
    client = redis.Redis.from_url(redis_url)
    client.ping()
    kept: dict[str, Any] = {"stream": "", "payloads": []}

    def work(step: str, stream: str = "", payloads: Sequence[bytes] = ()) -> float:
        if step == "load":
            kept.update(stream=stream, payloads=list(payloads[share::shares]))
            return 0.0
        return baseline_xadd(client, kept["stream"], kept["payloads"])

    return work


def redis_cpu_s(client: redis.Redis) -> float:
    """CPU seconds Redis has used (user + system) since it started."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def gateway_batch(lab: LabSightClient, requests: list[pb.SubmitJobRequest], client: redis.Redis,
                  gateway: psutil.Process, cpu: dict[str, list[float]] | None = None) -> float:
    """Seconds to submit every request through one SubmitBatch stream; with ``cpu``, appends the
    CPU seconds per job of the client (this process), the gateway and Redis to its lists."""
    me = psutil.Process()
    before = (process_cpu_s(me), process_cpu_s(gateway), redis_cpu_s(client))
    start = time.perf_counter()
    reply = lab.submit_batch(requests)
    elapsed = time.perf_counter() - start
    after = (process_cpu_s(me), process_cpu_s(gateway), redis_cpu_s(client))
    if len(reply.job_ids) != len(requests):
        raise RuntimeError(f"SubmitBatch queued {len(reply.job_ids)} of {len(requests)} jobs")
    if cpu is not None:
        for name, used, start_used in zip(("client", "gateway", "redis"), after, before, strict=True):
            cpu[name].append((used - start_used) / len(requests))
    return elapsed


def delete_keys(client: redis.Redis, prefix: str) -> None:
    """Remove every key under ``prefix``."""
    keys = list(client.scan_iter(match=f"{prefix}:*", count=5000))
    for offset in range(0, len(keys), 1000):
        client.delete(*keys[offset : offset + 1000])


def then_clean(run: Callable[[], float], client: redis.Redis, prefix: str) -> Callable[[], float]:
    """``run``, then (untimed) the deletion of what it wrote, so every run starts from empty."""

    def call() -> float:
        seconds = run()
        delete_keys(client, prefix)
        return seconds

    return call


def inputs(folder: Path, jobs: dict[str, int]) -> dict[str, list[pb.SubmitJobRequest]]:
    """The requests of each input kind; PNGs are written to ``folder`` and sent as files."""
    small = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    requests = {"64x64 RGB array": [build_request("fractal", small) for _ in range(jobs["small"])]}
    for label, size, count in (("512x512 RGB PNG", 512, jobs["medium"]),
                               ("2048x2048 RGB PNG", 2048, jobs["large"])):
        path = folder / f"cells-{size}.png"
        path.write_bytes(encode_png(cell_picture(size, seed=size)))
        requests[label] = [build_request("fractal", path) for _ in range(count)]
    return requests


def bench_input(label: str, batch: list[pb.SubmitJobRequest], lab: LabSightClient, client: redis.Redis,
                gateway: psutil.Process, parallel: ProcessShares, prefix: str, rounds: int) -> None:
    """Paired rounds of one input kind through the gateway and both XADD variants; print them."""
    payloads = [request.SerializeToString() for request in batch]
    parallel.run("load", f"{prefix}:baseline", payloads)  # each process keeps its share
    gateway_batch(lab, batch[: max(1, len(batch) // 10)], client, gateway)  # untimed warm-up
    cpu: dict[str, list[float]] = {"client": [], "gateway": [], "redis": []}
    delete_keys(client, prefix)
    before = load_text()
    one, many = "XADD 1 thread", f"XADD {len(parallel.processes)} processes"
    seconds = paired_rounds({
        one: then_clean(lambda: baseline_xadd(client, f"{prefix}:baseline", payloads), client, prefix),
        many: then_clean(lambda: parallel.run("run")[0], client, prefix),
        "gateway": then_clean(lambda: gateway_batch(lab, batch, client, gateway, cpu), client, prefix),
    }, rounds)
    rates = {name: [len(batch) / s for s in values] for name, values in seconds.items()}
    faster = [max((one, many), key=lambda name, r=r: rates[name][r]) for r in range(rounds)]
    baseline_rates = [rates[name][r] for r, name in enumerate(faster)]
    mib = sum(len(p) for p in payloads) / len(payloads) / 2**20
    print(f"{label}: {len(batch)} jobs of {mib:.3f} MiB each, jobs/s min / median / max")
    print(f"  gateway SubmitBatch       : {spread(rates['gateway'], '.0f')}")
    for name in (one, many):
        print(f"  pipelined {name:<16}: {spread(rates[name], '.0f')} "
              f"(faster in {faster.count(name)} of {rounds} rounds)")
    print(f"  pipelined XADD, best      : {spread(baseline_rates, '.0f')}")
    print(f"  ratio gateway/best XADD   : {spread(round_ratios(rates['gateway'], baseline_rates))}")
    print("  CPU ms per job in SubmitBatch (median): " + ", ".join(
        f"{name} {statistics.median(used) * 1e3:.2f}" for name, used in cpu.items()))
    print(f"  before: {before}; after: {load_text()}")


def main() -> None:
    """Run the paired rounds of every input kind; print rates, ratios and the load."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jobs-small", type=int, default=2000, help="64x64 jobs per run (default 2000)")
    parser.add_argument("--jobs-medium", type=int, default=200, help="512x512 PNG jobs per run (default 200)")
    parser.add_argument("--jobs-large", type=int, default=12, help="2048x2048 PNG jobs per run (default 12)")
    args = parser.parse_args()
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = f"labsight-bench-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(redis_url)
    env = {**os.environ, "REDIS_URL": redis_url, "LABSIGHT_KEY_PREFIX": prefix,
           "LABSIGHT_ALLOW_ANONYMOUS": "1", "LABSIGHT_LOG_LEVEL": "WARNING",
           "LABSIGHT_BLOB_URL": ""}  # every payload in Redis, as the baseline's
    jobs = {"small": args.jobs_small, "medium": args.jobs_medium, "large": args.jobs_large}
    cpus = usable_cpus()
    print(f"{load_text()}; gateway: its own process (default gRPC threads), LABSIGHT_BLOB_URL empty; "
          f"client: this process; XADD baselines: this process on 1 thread, and {cpus} processes "
          f"(one per CPU) on a connection each; {args.rounds} paired rounds per input")
    parallel = ProcessShares([partial(xadd_share, redis_url, share, cpus) for share in range(cpus)])
    with tempfile.TemporaryDirectory(prefix="labsight-bench-intake-") as folder:
        requests = inputs(Path(folder), jobs)
        gateway, address = start_service("services.gateway", env)
        try:
            with LabSightClient(address, token="", timeout_s=600) as lab:
                for label, batch in requests.items():
                    bench_input(label, batch, lab, client, psutil.Process(gateway.pid), parallel,
                                prefix, args.rounds)
        finally:
            stop_process(gateway)
            parallel.close()
            delete_keys(client, prefix)


if __name__ == "__main__":
    main()
