"""Vessel-content benchmarks: quality of the classical default, and the pipeline's throughput.

Run from the repository root:

    python bench/vessel.py quality [--count 200] [--seed 2026]
    python bench/vessel.py throughput [--photos 20] [--scale 2] [--workers 1] [--concurrency 4] [--rounds 6]

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
``segment_vessel_content`` called in one process by as many threads as the
stack has jobs in flight (workers × concurrency). That
process is a child in a session of its own, as every child of `labsight up`
is: where the kernel groups processes by session for scheduling (autogroup),
a service in its own session gets a whole session's share of a busy machine,
and a baseline in the benchmark's session would be measured at a disadvantage.
Thread pools are alike on both sides: OpenMP and numba sized as the services
do (``limit_thread_pools``), OpenCV at its default, the same environment.
After one untimed pass of each, ``--rounds`` rounds run the two back to
back, the order alternating (odd rounds the pipeline first); each round
checks that the pipeline found the same instances as the core. Printed: per
round the photos/s of each, their ratio and the 1-minute load average before
and after; min/median/max of the ratios (target ≥ 0.8); where the CPU time
goes (median over the rounds of CPU seconds per photo of the core, and of
each process of the stack and this client while the pipeline runs) and their
ratio, core CPU over the pipeline's total: a measure the machine's load barely
moves, and the throughput ratio where CPU is what runs out. On an
oversubscribed machine the photos/s ratio flatters the pipeline (its job path
runs in processes, and sessions, of its own, on time slices the baseline
does not get): read it with the load. One JSON line.
"""

from __future__ import annotations

from labsight.runtime.cpus import limit_thread_pools

limit_thread_pools()  # before numpy and OpenCV load, as the services do

import argparse  # noqa: E402
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
from collections.abc import Iterator  # noqa: E402
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from labsight.client import LabSightClient, build_request  # noqa: E402
from labsight.home import Endpoints, read_endpoints  # noqa: E402
from labsight.images import encode_png  # noqa: E402
from labsight.redis_server import port_is_free  # noqa: E402
from labsight.result import Result  # noqa: E402
from labsight.runtime.cpus import THREAD_POOL_VARIABLES, WORKER_CONCURRENCY_VARIABLE, usable_cpus  # noqa: E402
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


@contextmanager
def baseline_process() -> Iterator[ProcessPoolExecutor]:
    """One process, in a session of its own, to run :func:`direct` in."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                             initializer=os.setsid) as pool:
        yield pool


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
    """The processes of a ``labsight up`` by name (``up``, ``redis``, ``gateway``, ``worker-1``, ...)."""
    processes, workers = {"up": up_pid}, 0
    for task in Path(f"/proc/{up_pid}/task").iterdir():
        for pid in map(int, (task / "children").read_text().split()):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            module = argv[argv.index(b"-m") + 1].decode() if b"-m" in argv else "redis"
            if module.endswith(".worker"):
                workers += 1
                module = f"worker-{workers}"
            processes[module.removeprefix("services.")] = pid
    return processes


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User + system CPU seconds each process has used; ``client`` is this process."""
    tick = os.sysconf("SC_CLK_TCK")
    used = {"client": time.process_time()}
    for name, pid in pids.items():
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        used[name] = (int(fields[11]) + int(fields[12])) / tick
    return used


def thread_settings() -> dict[str, str]:
    """The thread pools both sides run with."""
    return {"usable_cpus": str(usable_cpus()), "opencv_threads": str(cv2.getNumThreads()),
            **{name: os.environ.get(name, "") for name in THREAD_POOL_VARIABLES}}


def throughput(count: int, scale: float, workers: int, concurrency: int, rounds: int
               ) -> dict[str, object]:
    """Rates of the pipeline through `labsight up` and of the core on as many threads as jobs in
    flight, paired by round."""
    pairs = encoded_photos(count, scale)
    threads = workers * concurrency
    rows: list[dict[str, float]] = []
    cpu: list[dict[str, float]] = []
    with labsight_up(workers, concurrency) as endpoints, baseline_process() as baseline, \
            LabSightClient(endpoints.gateway, token=endpoints.token, timeout_s=600) as lab:
        pids = stack_processes(endpoints.pid)
        served(lab, pairs[: 2 * threads], "warm")
        baseline.submit(direct, pairs[: 2 * threads], threads).result()
        for index in range(rounds):
            load_before = os.getloadavg()[0]
            if index % 2:
                served_rate, results, used = _served_with_cpu(lab, pairs, f"round{index}", pids)
                direct_rate, core_cpu, core_masks = baseline.submit(direct, pairs, threads).result()
            else:
                direct_rate, core_cpu, core_masks = baseline.submit(direct, pairs, threads).result()
                served_rate, results, used = _served_with_cpu(lab, pairs, f"round{index}", pids)
            rows.append({"pipeline_photos_per_s": served_rate, "core_photos_per_s": direct_rate,
                         "ratio": served_rate / direct_rate, "pipeline_first": float(index % 2),
                         "agreement": agreement(core_masks, results),
                         "load_before": load_before, "load_after": os.getloadavg()[0]})
            cpu.append({"core": core_cpu, **used})
    ratios = [row["ratio"] for row in rows]
    height, width = cv2.imdecode(np.frombuffer(pairs[0][0], np.uint8), cv2.IMREAD_COLOR).shape[:2]
    return {"photos": count, "first_photo": [height, width], "workers": workers,
            "concurrency": concurrency, "baseline_threads": threads,
            "threads": thread_settings(), "rounds": rows, "ratio_min": min(ratios),
            "ratio_median": statistics.median(ratios), "ratio_max": max(ratios),
            "cpu_s_per_photo": {key: statistics.median(row[key] for row in cpu) for key in cpu[0]},
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
    height, width = report["first_photo"]  # type: ignore[misc]
    print(f"{args.photos} vessels (first {height}x{width}), labsight up with {args.workers} "
          f"worker(s) of {args.concurrency} job(s) at once against the core on "
          f"{report['baseline_threads']} thread(s); thread pools {report['threads']}")
    for index, row in enumerate(report["rounds"]):  # type: ignore[arg-type]
        order = "pipeline first" if row["pipeline_first"] else "core first"
        print(f"   round {index + 1} ({order}): pipeline {row['pipeline_photos_per_s']:6.2f} photos/s, "
              f"core {row['core_photos_per_s']:6.2f} photos/s, ratio {row['ratio']:.3f}, "
              f"same instances {row['agreement']:.0%}, load {row['load_before']:.1f} -> "
              f"{row['load_after']:.1f}")
    print(f"   ratio pipeline/core: min {report['ratio_min']:.3f}, median "
          f"{report['ratio_median']:.3f}, max {report['ratio_max']:.3f} (target >= 0.8)")
    cpu = report["cpu_s_per_photo"]
    print(f"   CPU ms per photo (median of rounds): core {1000 * cpu['core']:.1f}; "  # type: ignore[index]
          "pipeline " + ", ".join(f"{name} {1000 * seconds:.1f}" for name, seconds in cpu.items()  # type: ignore[attr-defined]
                                  if name != "core"))
    print(f"   CPU ratio core/pipeline (median of rounds): {report['cpu_ratio']:.3f}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
