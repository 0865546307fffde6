"""Small-jobs benchmark: 64×64 RGB fractal jobs through a `labsight up` stack vs direct calls.

Run from the repository root (no Redis needed: the stack starts its own):

    python bench/small_jobs.py [--jobs 1000] [--rounds 5]

One side submits ``--jobs`` fractal jobs (random RGB 64², default sides 3-41)
in one SubmitBatch to a stack started by ``labsight.up`` (its own Redis, the
four services and its workers, sized by ``labsight up``'s rules), follows the
batch until every job ended and fetches every result. The other side calls
``gliding_box`` on the same images in a separate process on the same cores,
once with one numba thread and once with all of them; the faster of the two
in each round is the baseline. Rounds are paired, their order rotating; each
round prints the load average (os.getloadavg) beside its figures, the CPU
seconds each stack process spent per job, and the Redis commands per job
(INFO commandstats). The fractal dimensions of the fetched results are
checked against the direct ones.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from labsight.client import LabSightClient, build_request  # noqa: E402
from labsight.redis_server import port_is_free  # noqa: E402
from labsight.runtime.cpus import usable_cpus  # noqa: E402
from labsight.up import Stack, StackLayout  # noqa: E402
from labsight.v1 import gateway_pb2 as pb  # noqa: E402

SIDE = 64
ENDED = ("done", "failed", "dead", "cancelled")
FETCH_THREADS = 4
"""Client threads fetching results (GetJobResult) once the batch ended."""


def images(jobs: int, seed: int = 0) -> list[np.ndarray]:
    """The benchmark's inputs: ``jobs`` random RGB images of SIDE², the same on both sides."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8) for _ in range(jobs)]


def direct_process(conn: Connection, jobs: int) -> None:
    """Serve timing requests for direct ``gliding_box`` calls: receives a thread count,
    answers (seconds, fractal dimensions) for all images."""
    import numba

    from services.features.fractal import gliding_box

    pictures = images(jobs)
    gliding_box(pictures[0])  # compile (or load the cache) before any round
    conn.send(numba.get_num_threads())
    while (threads := conn.recv()) is not None:
        numba.set_num_threads(threads)
        start = time.perf_counter()
        dimensions = [gliding_box(picture).fractal_dimension.value for picture in pictures]
        conn.send((time.perf_counter() - start, dimensions))


def free_base_port() -> int:
    """A base port whose gRPC (base..+3) and metrics (base+99..+110) blocks are free."""
    for base in range(31000 + os.getpid() % 300 * 20, 60000, 20):
        if all(port_is_free(p) for p in [*range(base, base + 4), *range(base + 99, base + 111)]):
            return base
    raise RuntimeError("no free port block")


def process_seconds(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` used so far, its threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stack_cpu(stack: Stack) -> dict[str, float]:
    """CPU seconds of every child of the stack and of this process (the client)."""
    seconds = {name: process_seconds(child.process.pid)
               for name, child in stack.supervisor.children.items()}
    seconds["client"] = time.process_time()
    return seconds


def redis_commands(client: redis.Redis) -> dict[str, int]:
    """Calls per command so far (INFO commandstats)."""
    return {name.removeprefix("cmdstat_"): stats["calls"]
            for name, stats in client.info("commandstats").items()}


def through_stack(lab: LabSightClient, requests: list[pb.SubmitJobRequest], batch_id: str
                  ) -> tuple[float, list[float]]:
    """Seconds to submit every job, follow the batch to its end and fetch every result;
    the results' fractal dimensions."""
    start = time.perf_counter()
    reply = lab.submit_batch(requests, batch_id=batch_id)
    for batch in lab.watch_batch(batch_id):
        if sum(batch.counts.get(status, 0) for status in ENDED) >= len(requests):
            break
    with ThreadPoolExecutor(FETCH_THREADS) as pool:
        results = list(pool.map(lab.result, reply.job_ids))
    elapsed = time.perf_counter() - start
    return elapsed, [result.scalars["fractal_dimension"] for result in results]


def spread(values: list[float]) -> str:
    """min / median / max."""
    return f"{min(values):.3f} / {statistics.median(values):.3f} / {max(values):.3f}"


def run_rounds(
    rounds: int, jobs: int, stack_side: Callable[[int], float], direct: Connection, cpus: int,
) -> list[tuple[float, float, float]]:
    """Paired rounds in rotating order; (stack jobs/s, 1-thread jobs/s, all-threads jobs/s)."""
    rates = []
    for index in range(rounds):
        figures: dict[str, float] = {}
        load = os.getloadavg()[0]
        sides = ["stack", "direct-1", f"direct-{cpus}"]
        order = sides[index % 3:] + sides[: index % 3]
        for side in order:
            if side == "stack":
                figures[side] = jobs / stack_side(index)
            else:
                direct.send(int(side.split("-")[1]))
                seconds, _ = direct.recv()
                figures[side] = jobs / seconds
        baseline = max(figures["direct-1"], figures[f"direct-{cpus}"])
        print(f"round {index + 1} ({' -> '.join(order)}), load {load:.2f} -> "
              f"{os.getloadavg()[0]:.2f}: stack {figures['stack']:.1f} jobs/s, direct 1 thread "
              f"{figures['direct-1']:.1f}, {cpus} threads {figures[f'direct-{cpus}']:.1f}; "
              f"ratio {figures['stack'] / baseline:.3f}", flush=True)
        rates.append((figures["stack"], figures["direct-1"], figures[f"direct-{cpus}"]))
    return rates


def main() -> None:
    """Start the stack and the direct process, run the paired rounds, print the summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes (default: `labsight up`'s for these CPUs)")
    args = parser.parse_args()
    cpus = usable_cpus()
    requests = [build_request("fractal", picture, {}) for picture in images(args.jobs)]
    parent, child = mp.get_context("spawn").Pipe()
    direct = mp.get_context("spawn").Process(target=direct_process, args=(child, args.jobs))
    direct.start()
    with tempfile.TemporaryDirectory(prefix="labsight-small-jobs-") as home:
        stack = Stack(Path(home), StackLayout.from_base_port(free_base_port(), args.workers))
        try:
            stack.start(None, timeout_s=300)
            print(f"direct process: numba {parent.recv()} threads by default; "
                  f"stack: {stack.layout.workers} worker(s), {stack.sizing.describe()}", flush=True)
            endpoints = stack.endpoints()
            store = redis.Redis.from_url(stack.redis_url)
            with LabSightClient(endpoints.gateway, token=stack.token) as lab:
                parent.send(1)
                _, dimensions = parent.recv()
                expected = dict(enumerate(dimensions))
                through_stack(lab, requests[:100], "warm-up")  # compile the kernels, warm the channels

                def stack_side(index: int) -> float:
                    cpu, commands = stack_cpu(stack), redis_commands(store)
                    seconds, got = through_stack(lab, requests, f"round-{index}")
                    wrong = [i for i, value in enumerate(got)
                             if not np.isclose(value, expected[i], equal_nan=True)]
                    assert not wrong, f"results differ from the direct calls at jobs {wrong[:5]}"
                    used = {name: (value - cpu[name]) / args.jobs * 1e3
                            for name, value in stack_cpu(stack).items()}
                    calls = {name: (value - commands.get(name, 0)) / args.jobs
                             for name, value in redis_commands(store).items()}
                    print("  CPU ms per job: " + ", ".join(
                        f"{name} {value:.2f}" for name, value in used.items()
                    ) + f"; total {sum(used.values()):.2f}", flush=True)
                    print("  Redis commands per job: " + ", ".join(
                        f"{name} {value:.2f}" for name, value in sorted(calls.items()) if value >= 0.01
                    ) + f"; total {sum(calls.values()):.2f}", flush=True)
                    return seconds

                rates = run_rounds(args.rounds, args.jobs, stack_side, parent, cpus)
        finally:
            parent.send(None)
            direct.join(timeout=30)
            stack.stop()
    ratios = [stack_rate / max(one, many) for stack_rate, one, many in rates]
    print(f"jobs per round: {args.jobs} ({SIDE}² RGB, sides 3-41); CPUs: {cpus}")
    print(f"stack jobs/s          min/median/max: {spread([r[0] for r in rates])}")
    print(f"direct 1 thread       min/median/max: {spread([r[1] for r in rates])}")
    print(f"direct {cpus} threads      min/median/max: {spread([r[2] for r in rates])}")
    print(f"ratio stack / best direct min/median/max: {spread(ratios)} (target >= 0.8)")


if __name__ == "__main__":
    main()
