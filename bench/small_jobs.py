"""Small-jobs benchmark: 64×64 RGB fractal jobs through a `labsight up` stack vs direct calls.

Run from the repository root (no Redis needed: the stack starts its own):

    python bench/small_jobs.py [--jobs 1000] [--rounds 5] [--param probabilities=false]
                               [--part-jobs 16] [--tiles-per-job 64 | --png]

One side submits ``--jobs`` fractal jobs (random RGB 64², default sides 3-41)
to a stack started by ``labsight.up`` (its own Redis, the four services and its
workers, sized by ``labsight up``'s rules) in SubmitBatch calls of up to ``--part-jobs``
under one batch id, parted as `labsight submit` parts a folder (``request_parts``: 16 MiB at
most, the first part 1 MiB; until 2026-12-06 ~23:20 UTC ``--part-jobs`` each whatever their size, 48 MB
calls with stacks of 256 tiles; each part is queued while the next is sent), then reads
every result as its job ends (one GetBatchResults
stream with ``follow``, as ``LabSightClient.batch_results(batch_id, follow=True)``
reads it; until 2026-12-06 one SubmitBatch, then a WatchBatch until the batch
ended, then the fetch, the services idle while the jobs went up and the results
came back). The other side calls
``gliding_box`` on the same images in processes of their own on the same cores:
one process per CPU, each with one numba thread on its share of the images (what a
multiprocessing pool does; until 2026-12-06 this variant was missing and the
strongest baseline was one process using one CPU, which flattered the stack about
twofold); one process with every CPU's thread, OMP_WAIT_POLICY=PASSIVE (as the
stack's services get them); the same with OpenMP's default wait, which spins
(``--no-spinning-baseline`` leaves it out: a loaded machine slows it tenfold).
With ``--tiles-per-job`` two more: ``gliding_box_stack`` on stacks of as many images, in
one process per CPU and in one process with every CPU's thread (since 2026-12-06, when the
stack function arrived and the features service began computing tile stacks with it: a
good engineer with stacks of tiles calls it too, so leaving it out would flatter the stack).
With ``--png`` every job carries its image as PNG bytes, as `labsight submit` sends files, and
every direct variant decodes the same bytes (PIL) before its ``gliding_box``.
The fastest of them in each round is the baseline. Rounds are
paired, their order rotating; each
round prints the load average (os.getloadavg) beside its figures, the CPU
seconds each stack process spent per job, and the Redis commands per job and
the busiest ones' time (INFO commandstats). The fractal dimensions of the fetched results are
checked against the direct ones.
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import redis
from PIL import Image as PILImage

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._cpu import process_cpu_seconds  # noqa: E402
from bench._shares import ProcessShares, interleaved  # noqa: E402
from labsight.batch_submit import PART_JOBS, request_parts  # noqa: E402
from labsight.client import LabSightClient, build_request  # noqa: E402
from labsight.images import encode_png  # noqa: E402
from labsight.runtime.cpus import usable_cpus  # noqa: E402
from labsight.tables import table_values  # noqa: E402
from labsight.up import Stack, StackLayout  # noqa: E402
from labsight.v1 import gateway_pb2 as pb  # noqa: E402
from labsight.v1 import tensor_pb2  # noqa: E402
from tests.up_support import free_base_port  # noqa: E402

SIDE = 64


def images(jobs: int, seed: int = 0) -> list[np.ndarray]:
    """The benchmark's inputs: ``jobs`` random RGB images of SIDE², the same on both sides."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8) for _ in range(jobs)]


def direct_share(jobs: int, share: int, shares: int, stack: int = 0,
                 png: bool = False) -> Callable[[int], list[float]]:
    """A direct process's work on images ``share::shares`` of the benchmark's, compiled (or
    loaded from the cache) before any round: ``gliding_box`` of each (``png``: decoded from
    its PNG bytes first, with PIL), or (``stack`` > 0) ``gliding_box_stack`` of each ``stack``
    of them in turn, with the given numba thread count; their fractal dimensions."""
    import numba

    from services.features.fractal import gliding_box
    from services.features.fractal_stack import gliding_box_stack

    pictures = images(jobs)[share::shares]
    gliding_box(pictures[0])
    gliding_box_stack(np.stack(pictures[:2]))
    stacks = [np.stack(pictures[start:start + stack]) for start in range(0, len(pictures) if stack else 0,
                                                                          stack or 1)]

    encoded = [encode_png(picture) for picture in pictures] if png else []

    def work(threads: int) -> list[float]:
        numba.set_num_threads(threads)
        if stack:
            return [value for tiles in stacks for value in gliding_box_stack(tiles).fractal_dimension]
        if png:
            return [gliding_box(np.asarray(PILImage.open(io.BytesIO(data)))).fractal_dimension.value
                    for data in encoded]
        return [gliding_box(picture).fractal_dimension.value for picture in pictures]

    return work


def stack_cpu(stack: Stack) -> dict[str, float]:
    """CPU seconds of every child of the stack and of this process (the client)."""
    seconds = {name: process_cpu_seconds(child.process.pid)
               for name, child in stack.supervisor.children.items()}
    seconds["client"] = time.process_time()
    return seconds


def redis_commands(client: redis.Redis) -> dict[str, tuple[int, int]]:
    """(calls, microseconds) per command so far (INFO commandstats; a script's commands count
    both on their own and in its EVAL's time)."""
    return {name.removeprefix("cmdstat_"): (stats["calls"], stats["usec"])
            for name, stats in client.info("commandstats").items()}


def through_stack(lab: LabSightClient, requests: list[pb.SubmitJobRequest], batch_id: str,
                  part_jobs: int) -> tuple[list[float], list[float]]:
    """Seconds to submit every job (in SubmitBatch calls under one batch id, parted as
    `labsight submit` parts a folder, ``request_parts``, with at most ``part_jobs`` jobs each;
    each part queued while the next is sent), then to read every result as its job ends (one
    GetBatchResults stream with ``follow``); the results' fractal dimensions."""
    marks = [time.perf_counter()]
    job_ids = [job_id for part in request_parts(requests, part_jobs)
               for job_id in lab.submit_batch(part, batch_id=batch_id).job_ids]
    marks.append(time.perf_counter())
    fetched = list(lab.batch_results(batch_id, follow=True))
    marks.append(time.perf_counter())
    if [job.job_id for job, _ in fetched] != job_ids or any(r is None for _, r in fetched):
        raise RuntimeError(f"batch {batch_id}: not every job came back done, in order")
    phases = [end - begin for begin, end in itertools.pairwise(marks)]
    return phases, [value for _, result in fetched for value in dimensions(result)]


def dimensions(result: pb.JobResult) -> list[float]:
    """The fractal dimension of a job's image, or of each of its tiles."""
    if "tiles" not in result.scalars:
        return [result.scalars["fractal_dimension"]]
    table = result.tables["fractal"]
    return table_values(table)[:, list(table.columns).index("FractalDimension")].tolist()


def stack_requests(pictures: list[np.ndarray], params: dict[str, str], tiles_per_job: int,
                   png: bool = False) -> list[pb.SubmitJobRequest]:
    """A fractal job per picture (``png``: as PNG bytes, as `labsight submit` sends files), or
    (``tiles_per_job`` > 0) per stack of that many pictures."""
    if not tiles_per_job:
        return [build_request("fractal", tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(
                    data=encode_png(picture), format="png")) if png else picture, params)
                for picture in pictures]
    return [build_request("fractal", None, params,
                          tensors={"tiles": np.stack(pictures[start:start + tiles_per_job])})
            for start in range(0, len(pictures), tiles_per_job)]


def spread(values: list[float]) -> str:
    """min / median / max."""
    return f"{min(values):.3f} / {statistics.median(values):.3f} / {max(values):.3f}"


@dataclass
class Direct:
    """``gliding_box`` called directly in processes of their own (:class:`ProcessShares`), each on
    its share of the images with ``threads`` numba threads, their OpenMP threads waiting as
    ``wait_policy`` says ("" : OpenMP's default, spinning a while)."""

    name: str
    threads: int
    wait_policy: str
    shares: ProcessShares

    @classmethod
    def start(cls, name: str, threads: int, wait_policy: str, jobs: int,
              processes: int = 1, stack: int = 0, png: bool = False) -> Direct:
        """Spawn the processes and wait until they are warm; with ``stack``, each calls
        ``gliding_box_stack`` on that many of its images at a time; with ``png`` it decodes
        each image's PNG bytes first."""
        loaders = [partial(direct_share, jobs, share, processes, stack, png)
                   for share in range(processes)]
        shares = ProcessShares(loaders, {"OMP_WAIT_POLICY": wait_policy or None})
        return cls(name, threads, wait_policy, shares)

    def run(self) -> tuple[float, float, list[float]]:
        """(seconds, CPU seconds, fractal dimensions in image order) of one pass over every
        image, the processes working at once."""
        seconds, cpu, parts = self.shares.run(self.threads)
        return seconds, cpu, interleaved(parts)

    def stop(self) -> None:
        """End the processes."""
        self.shares.close()


def run_rounds(
    rounds: int, jobs: int, stack_side: Callable[[int], tuple[float, float]], directs: list[Direct],
) -> list[dict[str, float]]:
    """Paired rounds in rotating order; jobs/s of the stack and of each direct variant, and
    "cpu": the least CPU per job of a direct variant over the stack's (all its processes)."""
    rates = []
    sides = ["stack", *(direct.name for direct in directs)]
    by_name = {direct.name: direct for direct in directs}
    for index in range(rounds):
        figures: dict[str, float] = {}
        cpu_ms: dict[str, float] = {}
        load = os.getloadavg()[0]
        order = sides[index % len(sides):] + sides[: index % len(sides)]
        for side in order:
            if side == "stack":
                seconds, cpu_ms[side] = stack_side(index)
                figures[side] = jobs / seconds
            else:
                seconds, cpu, _ = by_name[side].run()
                figures[side] = jobs / seconds
                cpu_ms[side] = cpu / jobs * 1e3
        baseline = max(figures[direct.name] for direct in directs)
        print(f"round {index + 1} ({' -> '.join(order)}), load {load:.2f} -> "
              f"{os.getloadavg()[0]:.2f}: stack {figures['stack']:.1f} jobs/s; " + "; ".join(
                  f"{name} {figures[name]:.1f} ({cpu_ms[name]:.2f} CPU ms/job)"
                  for name in cpu_ms if name != "stack"
              ) + f"; ratio to the best direct {figures['stack'] / baseline:.3f}", flush=True)
        figures["cpu"] = min(cpu_ms[d.name] for d in directs) / cpu_ms["stack"]
        rates.append(figures)
    return rates


def main() -> None:
    """Start the stack and the direct process, run the paired rounds, print the summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--part-jobs", type=int, default=PART_JOBS,
                        help="jobs per SubmitBatch call (default: as `labsight submit` sends a "
                             "folder)")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes (default: `labsight up`'s for these CPUs)")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="a fractal parameter of every job, e.g. probabilities=false (results "
                             "without the probability matrix); repeatable")
    parser.add_argument("--tiles-per-job", type=int, default=0,
                        help="send the images as fractal tile stacks of this many per job "
                             "(tensor 'tiles'); 0 (default): one job per image, as the target "
                             "counts them. Rates are images per second either way")
    parser.add_argument("--png", action="store_true",
                        help="send each image as PNG bytes, as `labsight submit` sends files (one "
                             "job per image only); the direct side then decodes the same bytes")
    parser.add_argument("--no-spinning-baseline", action="store_true",
                        help="leave out the direct variant with OpenMP's default (spinning) wait, "
                             "which a loaded machine slows tenfold")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the stack on the way out
    cpus = usable_cpus()
    params = dict(item.split("=", 1) for item in args.param)
    if args.png and args.tiles_per_job:
        parser.error("--png sends one job per image; leave out --tiles-per-job")
    requests = stack_requests(images(args.jobs), params, args.tiles_per_job, args.png)
    warm_up = requests[:max(4, 100 // max(args.tiles_per_job, 1))]  # every job slot, with stacks too
    variants = [(f"direct {cpus} processes x 1 thread", 1, "PASSIVE", cpus, 0),
                (f"direct {cpus} threads passive", cpus, "PASSIVE", 1, 0)]
    if not args.no_spinning_baseline:
        variants.append((f"direct {cpus} threads spinning", cpus, "", 1, 0))
    if args.tiles_per_job:  # what a good engineer calls on stacks: the library's stack function
        variants += [(f"direct stacks {cpus} processes x 1 thread", 1, "PASSIVE", cpus, args.tiles_per_job),
                     (f"direct stacks {cpus} threads passive", cpus, "PASSIVE", 1, args.tiles_per_job)]
    directs = [Direct.start(name, threads, policy, args.jobs, processes, stack, args.png)
               for name, threads, policy, processes, stack in variants]
    with tempfile.TemporaryDirectory(prefix="labsight-small-jobs-") as home:
        stack = Stack(Path(home), StackLayout.from_base_port(free_base_port(), args.workers))
        try:
            stack.start(None, timeout_s=300)
            print(f"stack: {stack.sizing.describe()}; baselines: "
                  + ", ".join(direct.name for direct in directs), flush=True)
            endpoints = stack.endpoints()
            store = redis.Redis.from_url(stack.redis_url)
            with LabSightClient(endpoints.gateway, token=stack.token) as lab:
                expected = dict(enumerate(directs[0].run()[2]))
                through_stack(lab, warm_up, "warm-up", args.part_jobs)  # compile, warm channels

                def stack_side(index: int) -> tuple[float, float]:
                    cpu, commands = stack_cpu(stack), redis_commands(store)
                    phases, got = through_stack(lab, requests, f"round-{index}", args.part_jobs)
                    seconds = sum(phases)
                    wrong = [i for i, value in enumerate(got)
                             if not np.isclose(value, expected[i], equal_nan=True)]
                    assert not wrong, f"results differ from the direct calls at jobs {wrong[:5]}"
                    used = {name: (value - cpu[name]) / args.jobs * 1e3
                            for name, value in stack_cpu(stack).items()}
                    now = redis_commands(store)
                    calls = {name: (value[0] - commands.get(name, (0, 0))[0]) / args.jobs
                             for name, value in now.items()}
                    usec = {name: (value[1] - commands.get(name, (0, 0))[1]) / args.jobs
                            for name, value in now.items()}
                    print("  seconds: submit {:.2f}, run and fetch {:.2f}".format(*phases),
                          flush=True)
                    print("  CPU ms per job: " + ", ".join(
                        f"{name} {value:.2f}" for name, value in used.items()
                    ) + f"; total {sum(used.values()):.2f}", flush=True)
                    print("  Redis commands per job: " + ", ".join(
                        f"{name} {value:.2f}" for name, value in sorted(calls.items()) if value >= 0.01
                    ) + f"; total {sum(calls.values()):.2f}", flush=True)
                    print("  Redis µs per job, busiest commands: " + ", ".join(
                        f"{name} {value:.1f}" for name, value in sorted(
                            usec.items(), key=lambda item: -item[1])[:6]
                    ), flush=True)
                    return seconds, sum(used.values())

                rates = run_rounds(args.rounds, args.jobs, stack_side, directs)
        finally:
            for direct in directs:
                direct.stop()
            stack.stop()
    sent = (f"in jobs of {args.tiles_per_job} tiles (figures per image)" if args.tiles_per_job
            else "one job each")
    print(f"images per round: {args.jobs} ({SIDE}² RGB, sides 3-41, parameters {params or 'default'}), "
          f"{sent}; CPUs: {cpus}; images/s min/median/max:")
    for name in rates[0]:
        if name != "cpu":
            print(f"  {name:<32} {spread([figures[name] for figures in rates])}")
    print("CPU per job, least direct / stack (what a quiet machine's ratio tends to): "
          f"{spread([figures['cpu'] for figures in rates])}")
    ratios = [figures["stack"] / max(figures[d.name] for d in directs) for figures in rates]
    print(f"ratio stack / best direct of its round: {spread(ratios)} (target >= 0.8)")


if __name__ == "__main__":
    main()
