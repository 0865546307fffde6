"""Vessel-content benchmarks: quality of the classical default, and the pipeline's throughput.

Run from the repository root:

    python bench/vessel.py quality [--count 200] [--seed 2026]
    python bench/vessel.py throughput [--photos 20] [--scale 2] [--workers 1] [--concurrency 4]
                                       [--rounds 6]

``quality``: generated vessels (``services/segmentation/generated_vessels.py``;
the default seed was not used to choose the method's settings) segmented by
``segment_vessel_content``; printed as JSON: mean matched instance IoU (Hungarian
on IoU, unmatched true phases count 0), the share of phases at IoU ≥ 0.8,
fill-level errors per phase and of the total (shares of the vessel's height),
panoptic quality at IoU 0.5, seconds per photo. Targets: IoU ≥ 0.8, fill
level within 0.03 of the height.

``throughput``: ``--photos`` generated photos enlarged ``--scale`` times, each a
JPEG photo (quality 95, as cameras write them) and a PNG mask, go as
``vessel-content`` jobs through a real ``labsight up`` (its own home, Redis,
gateway, segmentation service and ``--workers`` worker processes running
``--concurrency`` jobs each at once, LABSIGHT_WORKER_CONCURRENCY, default the
worker's own; all as `up` starts them); a round's time runs from the submission to the last result
fetched (GetJobResult, not only DONE). The baseline is what a lab system would
write without LabSight: the same JPEG and PNG bytes decoded with OpenCV and
``segment_vessel_content`` called, in two variants: one process running as many
threads as the stack has jobs in flight (workers × concurrency), and, since
2026-12-06, one process per CPU (``usable_cpus()``), each on its share of the
photos (``pairs[i::n]``) with its share of those threads, timed from this process
until the last of them finished, its CPU the sum of theirs (the stack's work runs
in two interpreters, the segmentation service and the worker, which share no
GIL; until then the one-process variant was the only baseline). In every round
the faster variant is the baseline; both variants' figures are printed, and how
often each was the faster. Every baseline process is a child in a session of its
own, as every child of `labsight up` is: where the kernel groups processes by
session for scheduling (autogroup), a service in its own session gets a whole
session's share of a busy machine, and a baseline in the benchmark's session
would be measured at a disadvantage. Both variants' processes start with the
glibc malloc variables `up` gives the segmentation service
(``PROCESS_MALLOC["segmentation"]``, MALLOC_ARENA_MAX=2 among them; glibc reads
them at process start; since 2026-12-06). Thread pools are alike on both sides:
OpenMP and numba sized as the services do (``limit_thread_pools``; in the per-CPU
processes their share of the CPUs, as `up` sizes a service of several
processes), OpenCV at its default, the same environment otherwise. Every
process is started and warm before the rounds, untimed (each baseline process
has segmented its first photos, the pipeline one batch of a few; the one-process
variant is timed inside its process, around its thread pool). ``--rounds``
rounds (default 6, an even number) run the pipeline and the two variants, paired
(``bench/_paired.py``): the core first in odd rounds, the pipeline in even ones,
the variants' order swapped every two rounds; each round
checks that the pipeline found the same instances as each variant. Printed: per
round the order, the photos/s of each, the ratio to the faster variant and the
1-minute load average before and after; min/median/max of the ratios (target
≥ 0.8) and of each variant's photos/s; where the CPU time goes (median over the
rounds of CPU seconds per photo of the core, the round's faster variant and each
variant, and of each process of the stack and this client while the pipeline
runs) and their ratio, the faster variant's CPU over the pipeline's total: a
measure the machine's load barely moves, and the throughput ratio where CPU is
what runs out. On an oversubscribed machine the photos/s ratio flatters the
pipeline (its job path runs in processes, and sessions, of its own, on time
slices the one-process baseline does not get): read it with the load. One JSON
line.
"""

from __future__ import annotations

from labsight.runtime.cpus import limit_thread_pools

limit_thread_pools()  # before numpy and OpenCV load, as the services do

import argparse  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable, Iterator, Mapping, Sequence  # noqa: E402
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor  # noqa: E402
from contextlib import AbstractContextManager, contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._cpu import process_cpu_seconds  # noqa: E402
from bench._paired import paired_rounds, round_ratios, spread  # noqa: E402
from bench._shares import Loader, ProcessShares, environment, interleaved, process_shares  # noqa: E402
from labsight.catalog import SEGMENTATION  # noqa: E402
from labsight.client import LabSightClient, build_request  # noqa: E402
from labsight.home import Endpoints, read_endpoints  # noqa: E402
from labsight.images import encode_png  # noqa: E402
from labsight.redis_server import port_is_free  # noqa: E402
from labsight.result import Result  # noqa: E402
from labsight.runtime.cpus import (  # noqa: E402
    PROCESS_MALLOC,
    THREAD_POOL_VARIABLES,
    WORKER_CONCURRENCY_VARIABLE,
    usable_cpus,
)
from labsight.up import StackLayout  # noqa: E402
from labsight.v1 import gateway_pb2 as pb  # noqa: E402
from labsight.v1 import tensor_pb2  # noqa: E402
from services.gateway.worker import DEFAULT_CONCURRENCY  # noqa: E402
from services.segmentation.generated_vessels import generate_vessels  # noqa: E402
from services.segmentation.vessel_metrics import LayerScores, PanopticCounts  # noqa: E402
from services.segmentation.vessels import VesselContent, segment_vessel_content  # noqa: E402


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


def encoded_photos(count: int, scale: float, seed: int = 11) -> list[tuple[bytes, bytes]]:
    """Generated vessels enlarged ``scale`` times: (JPEG photo, PNG mask) bytes."""
    pairs = []
    for vessel in generate_vessels(count, seed):
        size = (round(vessel.photo.shape[1] * scale), round(vessel.photo.shape[0] * scale))
        photo = cv2.resize(vessel.photo, size, interpolation=cv2.INTER_LINEAR)
        mask = cv2.resize(vessel.vessel_mask, size, interpolation=cv2.INTER_NEAREST) * 255
        ok, jpeg = cv2.imencode(".jpg", photo[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        assert ok
        pairs.append((jpeg.tobytes(), encode_png(mask)))
    return pairs


def segment_encoded(photo: bytes, mask: bytes) -> VesselContent:
    """The baseline's work for one vessel: decode both files, call the core."""
    bgr = cv2.imdecode(np.frombuffer(photo, np.uint8), cv2.IMREAD_COLOR)
    vessel = cv2.imdecode(np.frombuffer(mask, np.uint8), cv2.IMREAD_GRAYSCALE)
    return segment_vessel_content(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), vessel)


def direct(pairs: list[tuple[bytes, bytes]], threads: int) -> tuple[float, float, list[np.ndarray]]:
    """Photos per second of the core called by ``threads`` threads, its CPU seconds per photo
    (this process's), and its instance masks."""
    cpu = time.process_time()
    with ThreadPoolExecutor(threads) as pool:
        start = time.perf_counter()
        contents = list(pool.map(lambda pair: segment_encoded(*pair), pairs))
        rate = len(pairs) / (time.perf_counter() - start)
    return rate, (time.process_time() - cpu) / len(pairs), [c.instance_masks for c in contents]


def vessel_share(pairs: list[tuple[bytes, bytes]], threads: int) -> Callable[[], list[np.ndarray]]:
    """The work of one process of the per-CPU variant, warmed on its first photos: the core
    called on ``pairs`` by ``threads`` threads; the work returns the instance masks."""
    pool = ThreadPoolExecutor(threads)

    def segmented(batch: list[tuple[bytes, bytes]]) -> list[np.ndarray]:
        return [content.instance_masks for content in pool.map(lambda pair: segment_encoded(*pair), batch)]

    segmented(pairs[: 2 * threads])
    return functools.partial(segmented, pairs)


SEGMENTATION_MALLOC = PROCESS_MALLOC[SEGMENTATION.name]
"""The glibc malloc variables `labsight up` gives the segmentation service; glibc reads them when
a process starts, so the baseline processes are started with them."""

THREADS, PROCESSES = "threads", "processes"
VARIANTS = (THREADS, PROCESSES)
"""The baseline's variants: one process of many threads, and one process per CPU."""


def baseline_environment(processes: int = 1) -> dict[str, str]:
    """Variables of a baseline process, one of ``processes``: the segmentation service's glibc
    malloc settings (:data:`SEGMENTATION_MALLOC`; a value this environment sets wins, as in
    `labsight up`), and with several processes each one's share of the CPUs, as `up` gives each
    of several processes of a model service: numba and OpenMP threads, and one ONNX Runtime
    session of as many threads where LABSIGHT_MODEL_INSTANCES and LABSIGHT_ORT_THREADS are unset."""
    variables = {name: os.environ.get(name, value) for name, value in SEGMENTATION_MALLOC.items()}
    if processes > 1:
        threads = str(max(1, usable_cpus() // processes))
        variables.update(dict.fromkeys(THREAD_POOL_VARIABLES, threads))
        sessions = {"LABSIGHT_MODEL_INSTANCES": "1", "LABSIGHT_ORT_THREADS": threads}
        variables.update({name: os.environ.get(name, value) for name, value in sessions.items()})
    return variables


@contextmanager
def baseline_process() -> Iterator[ProcessPoolExecutor]:
    """One process, in a session of its own and with :func:`baseline_environment`, to run
    :func:`direct` in; started before the block."""
    with environment(baseline_environment()):
        pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=os.setsid)
        pool.submit(os.getpid).result()  # the process starts now, with these variables
    with pool:
        yield pool


def baseline_shares(loaders: Sequence[Loader]) -> AbstractContextManager[ProcessShares]:
    """The per-CPU variant: a process per loader, each in a session of its own and with
    :func:`baseline_environment` of their count; started and warm before the block."""
    return process_shares(loaders, baseline_environment(len(loaders)), own_session=True)


def share_count(items: int) -> int:
    """Processes of the per-CPU variant: one per usable CPU, no more than there are inputs."""
    return max(1, min(usable_cpus(), items))


def threads_of(threads: int, share: int, shares: int) -> int:
    """Share ``share`` of ``shares`` of ``threads`` threads (at least one)."""
    return max(1, len(range(share, threads, shares)))


def baseline_rounds(variants: Mapping[str, Callable[[], float]], pipeline: Callable[[], float],
                    rounds: int
                    ) -> tuple[dict[str, list[float]], list[tuple[float, float]], list[list[str]]]:
    """:func:`paired_rounds` of the baseline and the pipeline (the baseline first in even rounds
    from 0, the pipeline in odd ones, so an even count puts each first equally often); the
    baseline runs every variant, their order reversed every other pair of rounds. Returns each
    side's figures by round (the pipeline's under "pipeline"), each round's 1-minute load
    average before its first side and after its last, and the order its sides ran in."""
    calls: list[tuple[str, float, float, float]] = []
    baselines: list[None] = []

    def run(name: str, side: Callable[[], float]) -> float:
        before = os.getloadavg()[0]
        figure = side()
        calls.append((name, figure, before, os.getloadavg()[0]))
        return figure

    def baseline() -> float:
        names = list(variants)[:: -1 if len(baselines) // 2 % 2 else 1]
        baselines.append(None)
        return max([run(name, variants[name]) for name in names])

    paired_rounds({"baseline": baseline, "pipeline": lambda: run("pipeline", pipeline)}, rounds)
    figures = {name: [figure for called, figure, _, _ in calls if called == name]
               for name in [*variants, "pipeline"]}
    size = len(variants) + 1
    per_round = [calls[start:start + size] for start in range(0, len(calls), size)]
    return (figures, [(done[0][2], done[-1][3]) for done in per_round],
            [[name for name, _, _, _ in done] for done in per_round])


def faster_variants(figures: Mapping[str, Sequence[float]]) -> list[str]:
    """Per round, the baseline variant (:data:`THREADS` or :data:`PROCESSES`) of the higher rate."""
    return [max(VARIANTS, key=lambda variant: figures[variant][index])
            for index in range(len(figures[THREADS]))]


def served(lab: LabSightClient, pairs: list[tuple[bytes, bytes]], run: str
           ) -> tuple[float, list[Result]]:
    """Photos per second of ``vessel-content`` jobs from submission to the last result fetched."""
    requests = [build_request("vessel-content", _encoded(photo, "jpeg"),
                              images={"vessel_mask": _encoded(mask, "png")}, name=f"{run}-{index}")
                for index, (photo, mask) in enumerate(pairs)]
    start = time.perf_counter()
    job_ids = lab.submit_batch(requests).job_ids
    results = []
    for job_id in job_ids:
        job = lab.wait(job_id, timeout_s=600)
        if job.status != pb.JOB_STATUS_DONE:
            raise RuntimeError(f"job {job_id} ended {pb.JobStatus.Name(job.status)}: {job.error}")
        results.append(lab.result(job_id))
    return len(pairs) / (time.perf_counter() - start), results


def _encoded(data: bytes, fmt: str) -> tensor_pb2.Image:
    return tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=data, format=fmt))


def agreement(core_masks: list[np.ndarray], results: list[Result]) -> float:
    """Share of vessels where the pipeline found as many instances as the core, with the same
    masks to within 1 % of their pixels (the two decode the JPEG with different libraries)."""
    same = 0
    for expected, result in zip(core_masks, results, strict=True):
        masks = result.tensor("instance_masks")
        if masks.shape == expected.shape:
            filled = max(int(expected.any(axis=0).sum()), 1)
            same += int((masks != expected).sum() <= 0.01 * filled * len(masks))
    return same / len(core_masks)


@contextmanager
def labsight_up(workers: int, concurrency: int) -> Iterator[Endpoints]:
    """A ``labsight up`` with ``workers`` workers of ``concurrency`` jobs each in a fresh home (its
    own Redis) until the block ends; the home is removed after."""
    home = Path(tempfile.mkdtemp(prefix="labsight-bench-vessel-"))
    base = _free_base_port(workers)
    env = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
    env.update(LABSIGHT_HOME=str(home), LABSIGHT_LOG_LEVEL="WARNING",
               **{WORKER_CONCURRENCY_VARIABLE: str(concurrency)})
    log = open(home / "up.out", "wb")  # noqa: SIM115 - closed below
    up = subprocess.Popen([sys.executable, "-m", "labsight.cli", "up", "--base-port", str(base),
                           "--workers", str(workers)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while (endpoints := read_endpoints(home)) is None:
            if up.poll() is not None or time.monotonic() > deadline:
                log.flush()
                tail = (home / "up.out").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"labsight up did not serve:\n{tail}")
            time.sleep(0.5)
        yield endpoints
    finally:
        up.terminate()
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()
        log.close()
        shutil.rmtree(home, ignore_errors=True)


def _free_base_port(workers: int) -> int:
    """A base port whose whole `up` layout is free."""
    for _ in range(50):
        base = random.randrange(30000, 50000, 200)
        if all(port_is_free(port) for port in StackLayout.from_base_port(base, workers).ports()):
            return base
    raise RuntimeError("no free port range for labsight up")


def _served_with_cpu(lab: LabSightClient, pairs: list[tuple[bytes, bytes]], run: str,
                     pids: dict[str, int]) -> tuple[float, list[Result], dict[str, float]]:
    """:func:`served`, and the CPU seconds per photo each process spent meanwhile."""
    before = cpu_seconds(pids)
    rate, results = served(lab, pairs, run)
    after = cpu_seconds(pids)
    return rate, results, {key: (after[key] - before[key]) / len(pairs) for key in after}


def stack_processes(up_pid: int) -> dict[str, int]:
    """The processes of a ``labsight up`` by name (``up``, ``redis``, ``gateway``, ``worker-1``,
    ...; a model service's further processes ``classifier-2``, ...)."""
    processes: dict[str, int] = {"up": up_pid}
    seen: Counter[str] = Counter()
    for task in Path(f"/proc/{up_pid}/task").iterdir():
        for pid in map(int, (task / "children").read_text().split()):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            module = argv[argv.index(b"-m") + 1].decode() if b"-m" in argv else "redis"
            name = "worker" if module.endswith(".worker") else module.removeprefix("services.")
            seen[name] += 1
            if name == "worker":
                processes[f"worker-{seen[name]}"] = pid
            else:
                processes[name if seen[name] == 1 else f"{name}-{seen[name]}"] = pid
    return processes


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User + system CPU seconds each process has used; ``client`` is this process."""
    used = {"client": time.process_time()}
    for name, pid in pids.items():
        used[name] = process_cpu_seconds(pid)
    return used


def thread_settings() -> dict[str, str]:
    """The thread pools both sides run with."""
    return {"usable_cpus": str(usable_cpus()), "opencv_threads": str(cv2.getNumThreads()),
            **{name: os.environ.get(name, "") for name in THREAD_POOL_VARIABLES}}


def throughput(count: int, scale: float, workers: int, concurrency: int, rounds: int
               ) -> dict[str, object]:
    """Rates of the pipeline through `labsight up` and of the core in two variants, paired by
    round: one process of as many threads as jobs in flight, and one process per CPU with its
    share of the photos and of the threads; each round's faster variant is its baseline."""
    pairs = encoded_photos(count, scale)
    threads = workers * concurrency
    shares = share_count(count)
    share_threads = [threads_of(threads, share, shares) for share in range(shares)]
    loaders = [functools.partial(vessel_share, pairs[share::shares], share_threads[share])
               for share in range(shares)]
    pipeline_runs: list[tuple[list[Result], dict[str, float]]] = []
    core_runs: dict[str, list[tuple[float, list[np.ndarray]]]] = {THREADS: [], PROCESSES: []}
    with labsight_up(workers, concurrency) as endpoints, baseline_process() as baseline, \
            baseline_shares(loaders) as processes, \
            LabSightClient(endpoints.gateway, token=endpoints.token, timeout_s=600) as lab:
        pids = stack_processes(endpoints.pid)
        served(lab, pairs[: 2 * threads], "warm")
        baseline.submit(direct, pairs[: 2 * threads], threads).result()

        def pipeline() -> float:
            rate, results, used = _served_with_cpu(lab, pairs, f"round{len(pipeline_runs)}", pids)
            pipeline_runs.append((results, used))
            return rate

        def core_threads() -> float:
            rate, cpu, masks = baseline.submit(direct, pairs, threads).result()
            core_runs[THREADS].append((cpu, masks))
            return rate

        def core_processes() -> float:
            seconds, cpu, parts = processes.run()
            core_runs[PROCESSES].append((cpu / len(pairs), interleaved(parts)))  # type: ignore[arg-type]
            return len(pairs) / seconds

        figures, loads, orders = baseline_rounds({THREADS: core_threads, PROCESSES: core_processes},
                                                 pipeline, rounds)
    height, width = cv2.imdecode(np.frombuffer(pairs[0][0], np.uint8), cv2.IMREAD_COLOR).shape[:2]
    return {"photos": count, "first_photo": [height, width], "workers": workers,
            "concurrency": concurrency, "baseline_threads": threads, "baseline_processes": shares,
            "threads_per_process": share_threads, "threads": thread_settings(),
            "baseline_environment": {THREADS: baseline_environment(),
                                     PROCESSES: baseline_environment(shares)},
            **summary(figures, loads, orders, pipeline_runs, core_runs)}


def summary(figures: dict[str, list[float]], loads: list[tuple[float, float]], orders: list[list[str]],
            pipeline_runs: list[tuple[list[Result], dict[str, float]]],
            core_runs: dict[str, list[tuple[float, list[np.ndarray]]]]) -> dict[str, object]:
    """The rounds (each one's faster core variant its baseline), min/median/max of the ratios,
    how often each variant was the faster, and CPU seconds per photo (medians over the rounds)."""
    faster = faster_variants(figures)
    baseline_rates = [figures[variant][index] for index, variant in enumerate(faster)]
    ratios = round_ratios(figures["pipeline"], baseline_rates)
    rows: list[dict[str, float | str]] = []
    cpu: list[dict[str, float]] = []
    for index, variant in enumerate(faster):
        results, used = pipeline_runs[index]
        rows.append({"pipeline_photos_per_s": figures["pipeline"][index],
                     "core_threads_photos_per_s": figures[THREADS][index],
                     "core_processes_photos_per_s": figures[PROCESSES][index],
                     "core_photos_per_s": baseline_rates[index], "baseline": variant,
                     "ratio": ratios[index], "order": " -> ".join(orders[index]),
                     "agreement": min(agreement(core_runs[name][index][1], results) for name in VARIANTS),
                     "load_before": loads[index][0], "load_after": loads[index][1]})
        cpu.append({"core": core_runs[variant][index][0], **used})
    return {"rounds": rows, "ratio_min": min(ratios), "ratio_median": statistics.median(ratios),
            "ratio_max": max(ratios), "faster_rounds": {name: faster.count(name) for name in VARIANTS},
            "core_photos_per_s": {name: figures[name] for name in VARIANTS},
            "cpu_s_per_photo": {key: statistics.median(row[key] for row in cpu) for key in cpu[0]},
            "core_cpu_s_per_photo": {name: statistics.median(seconds for seconds, _ in core_runs[name])
                                     for name in VARIANTS},
            "cpu_ratio": statistics.median(row["core"] / (sum(row.values()) - row["core"])
                                           for row in cpu)}


def main() -> None:
    """Run the chosen benchmark and print its numbers."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(dest="bench", required=True)
    quality_parser = sub.add_parser("quality")
    quality_parser.add_argument("--count", type=int, default=200)
    quality_parser.add_argument("--seed", type=int, default=2026)
    speed = sub.add_parser("throughput")
    speed.add_argument("--photos", type=int, default=20)
    speed.add_argument("--scale", type=float, default=2.0)
    speed.add_argument("--workers", type=int, default=1)
    speed.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY,
                       help="jobs each worker runs at once (default: the worker's)")
    speed.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    if args.bench == "quality":
        print(json.dumps(quality(args.count, args.seed)))
        return
    report = throughput(args.photos, args.scale, args.workers, args.concurrency, args.rounds)
    print_throughput(report, args.photos, args.workers, args.concurrency)


def print_throughput(report: dict[str, object], photos: int, workers: int, concurrency: int) -> None:
    """The lines of :func:`throughput`'s report for people, then the report as one JSON line."""
    height, width = report["first_photo"]  # type: ignore[misc]
    print(f"{photos} vessels (first {height}x{width}), labsight up with {workers} "
          f"worker(s) of {concurrency} job(s) at once against the core in one process of "
          f"{report['baseline_threads']} thread(s) and in {report['baseline_processes']} processes "
          f"(one per CPU) of {report['threads_per_process']} thread(s), each round's faster the "
          f"baseline; thread pools {report['threads']}; baseline environments "
          f"{report['baseline_environment']}")
    rounds: list[dict] = report["rounds"]  # type: ignore[assignment]
    for index, row in enumerate(rounds):
        print(f"   round {index + 1} ({row['order']}): pipeline {row['pipeline_photos_per_s']:6.2f} "
              f"photos/s, core threads {row['core_threads_photos_per_s']:6.2f}, core processes "
              f"{row['core_processes_photos_per_s']:6.2f} photos/s, ratio to the faster "
              f"({row['baseline']}) {row['ratio']:.3f}, same instances {row['agreement']:.0%}, "
              f"load {row['load_before']:.1f} -> {row['load_after']:.1f}")
    print(f"   ratio pipeline/core (each round's faster variant): min {report['ratio_min']:.3f}, median "
          f"{report['ratio_median']:.3f}, max {report['ratio_max']:.3f} (target >= 0.8)")
    rates: dict[str, list[float]] = report["core_photos_per_s"]  # type: ignore[assignment]
    faster: dict[str, int] = report["faster_rounds"]  # type: ignore[assignment]
    print(f"   core photos/s min / median / max: threads {spread(rates[THREADS])}, processes "
          f"{spread(rates[PROCESSES])}; the faster: threads in {faster[THREADS]} of {len(rounds)} "
          f"rounds, processes in {faster[PROCESSES]}")
    cpu: dict[str, float] = report["cpu_s_per_photo"]  # type: ignore[assignment]
    variants: dict[str, float] = report["core_cpu_s_per_photo"]  # type: ignore[assignment]
    print(f"   CPU ms per photo (median of rounds): core {1000 * cpu['core']:.1f} (the faster variant; "
          f"threads {1000 * variants[THREADS]:.1f}, processes {1000 * variants[PROCESSES]:.1f}); "
          "pipeline " + ", ".join(f"{name} {1000 * seconds:.1f}" for name, seconds in cpu.items()
                                  if name != "core"))
    print(f"   CPU ratio core/pipeline (median of rounds): {report['cpu_ratio']:.3f}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
