"""How many CPUs this process may use (its affinity mask, capped by a container's CPU limit), and
how `labsight up` shares them among its processes."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from labsight.catalog import CLASSIFIER, GATEWAY, MODEL_SERVICES, SEGMENTATION, WORKER

CGROUP_ROOT = Path("/sys/fs/cgroup")


def usable_cpus(cgroup_root: Path = CGROUP_ROOT) -> int:
    """CPUs to size thread pools by: the affinity mask, capped by the cgroup CPU quota if any.

    A Kubernetes CPU limit (or ``docker run --cpus``) sets a quota, not an
    affinity mask, so the mask alone would count every CPU of the node.
    """
    count = len(os.sched_getaffinity(0))
    quota = cgroup_cpu_quota(cgroup_root)
    return count if quota is None else max(1, min(count, math.ceil(quota)))


def cgroup_cpu_quota(cgroup_root: Path = CGROUP_ROOT) -> float | None:
    """The CPU quota in CPUs (cgroup v2 ``cpu.max`` or v1 CFS quota / period); None when unlimited."""
    v2 = cgroup_root / "cpu.max"
    if v2.is_file():
        quota, _, period = v2.read_text().strip().partition(" ")
        return None if quota == "max" else _ratio(quota, period or "100000")
    for folder in ("cpu", "cpu,cpuacct"):
        v1 = cgroup_root / folder
        if (v1 / "cpu.cfs_quota_us").is_file() and (v1 / "cpu.cfs_period_us").is_file():
            quota = (v1 / "cpu.cfs_quota_us").read_text().strip()
            period = (v1 / "cpu.cfs_period_us").read_text().strip()
            return None if quota.startswith("-") else _ratio(quota, period)
    return None


def _ratio(quota: str, period: str) -> float | None:
    """quota / period, or None when either is not a positive number."""
    try:
        value, length = int(quota), int(period)
    except ValueError:
        return None
    return value / length if value > 0 and length > 0 else None


THREAD_POOL_VARIABLES = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS")
"""Environment variables that size numba's and OpenMP's (torch's) thread pools when they load."""


def limit_thread_pools() -> None:
    """Default the thread-pool variables to ``usable_cpus()``; call before numba or torch load.

    Values already set are kept, so an operator can still choose.
    """
    count = str(usable_cpus())
    for name in THREAD_POOL_VARIABLES:
        os.environ.setdefault(name, count)


WORKER_CONCURRENCY_VARIABLE = "LABSIGHT_WORKER_CONCURRENCY"
"""Jobs each worker runs at once (read by services/gateway/worker.py)."""

SMALL_JOB_GROUP_SIZE = 32
"""Most small jobs of one kind (a pipeline's ``group_key``) a worker's slot runs as one group:
claimed, started, sent to their service and finished together, so that the Redis round trips
and the thread hand-offs of a job are shared by up to this many (a 64² fractal job computes
in ~0.5 ms), and their images go to the features service as one stack. Measured
(bench/small_jobs.py, 64² RGB one job each, 2026-12-06, alternating, 3 rounds each): groups of
8 ran 786 and 836 jobs/s (CPU 2.0-2.6 ms per job), of 16 712-1,090, of 32 1,106-1,216
(1.5-1.9 ms), of 64 943-1,298; 32 keeps a failed group's reruns and a slot's claim smaller
than 64 does. At most BATCH_MAX_IMAGES (64): one group is one features-service call."""


BULK_BUFFER_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(128 << 20),
                      "MALLOC_ARENA_MAX": "2"}
"""glibc malloc variables of the gateway and the workers, which pass megabytes of image and
tensor bytes per job: buffers under 32 MiB come from the heap and are reused, not mapped
fresh (and zeroed, and faulted in page by page) for each job, and the heap's free top is given
back only past 128 MiB; 2 arenas, so the threads share what is kept. glibc's default mmap
threshold, raised only by what was freed, kept mapping new pages. Measured with
bench/deep_features.py (2026-12-06, 2 CPUs, runs alternating): worker 0.53-0.64 -> 0.31-0.39
ms CPU per 224² patch, gateway 0.36-0.39 -> 0.29-0.33. What is kept goes back once the process
is idle (labsight.runtime.idle_trim). Not for the model services: with them the features
service grew by up to 514 MiB in one fuzz step (they get :data:`MODEL_SERVICE_MALLOC`)."""

MODEL_SERVICE_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(8 << 20),
                        "MALLOC_TRIM_THRESHOLD_": str(64 << 20), "MALLOC_ARENA_MAX": "2"}
"""glibc malloc variables of the model services (segmentation, features, classifier): buffers
under 8 MiB come from the heap and are reused, where glibc's defaults mapped them fresh, or
trimmed them off the heap, and faulted them in page by page on each call.

- Request buffers: gRPC's receive of a request (a 1.5 MB ClassifyCells field, a 4.8 MB
  ExtractDeepFeatures batch) took 0.8-1.2 ms CPU per MB in a raw bytes sink with
  MALLOC_ARENA_MAX=2 alone, 0.44-0.56 with these (2026-12-07, Zen 4, 4 concurrent callers,
  runs alternating); ``bench/classifier.py`` part 1: classifier processes 1.26-1.34 -> 1.23-1.27
  ms CPU per cell. The features service's memory after a 3,000-call fuzz with them: -233 MiB
  (peak +713), as before.
- The segmentation service's classical method allocates dozens of image-sized temporaries per
  call (a 512² float64 plane is 2 MiB): 400-2,400 page faults per 512² HPA field with 4 calls at
  once, about none with these; 1-10 ms less CPU per field of 51-75 (2026-12-06, 2 CPUs, runs
  alternating; ~20 MiB more resident).

ONNX Runtime's arena regions (tens of MiB for the flow networks) stay above the threshold,
mapped and given back as before: with BULK_BUFFER_MALLOC's 32 MiB the fuzz's segmentation
service kept +257 MiB."""

PROCESS_MALLOC = {GATEWAY.name: BULK_BUFFER_MALLOC, WORKER.name: BULK_BUFFER_MALLOC,
                  **{service.name: MODEL_SERVICE_MALLOC for service in MODEL_SERVICES}}
"""glibc malloc variables of each process (catalog name), as `labsight up`, compose and the
Kubernetes manifests run them."""


REPLICAS_VARIABLE = "LABSIGHT_REPLICAS"
"""Processes of each model service `labsight up` runs, e.g. ``classifier=2,segmentation=1``
(services not named keep `up`'s choice)."""

REPLICATED_ON_CPU = (SEGMENTATION.name, CLASSIFIER.name)
"""Model services that `labsight up` runs as two processes on a machine with 2 CPUs or more and
no GPU, each with one of the two ONNX Runtime sessions the one process ran before and half the
numba/OpenMP threads. Their per-image Python work (crops and resizing; the classical vessel
method's thousands of small numpy calls, which take turns in a process) holds the GIL, so
one process cannot use two CPUs for it. Measured 2026-12-06 on 2 CPUs: ClassifyCells 1,219 ->
1,376 cells/s (8 clients, 6 alternating rounds); vessel-content jobs 9.8 -> 15.2 photos/s
(bench/vessel.py); hpa-cells unchanged; +480 MiB resident for the second segmentation
process, +330 MiB for the classifier's. The features service stays one process: deep
features, nearly all ONNX Runtime (which releases the GIL), gained nothing from two (0.857
against 0.859 of raw ONNX Runtime), 64² fractal jobs about 15%, and each process would hold
its own loaded models."""


def gpu_visible() -> bool:
    """Whether a model service would run on a GPU: LABSIGHT_DEVICE=cuda, or ``auto`` (the
    default) on a machine with an NVIDIA device node. Cheap: torch is not imported."""
    device = os.environ.get("LABSIGHT_DEVICE", "auto").strip().lower() or "auto"
    if device != "auto":
        return device == "cuda"
    return Path("/dev/nvidiactl").exists() or Path("/dev/nvidia0").exists()


def parse_replicas(text: str) -> dict[str, int]:
    """``name=count,...`` (REPLICAS_VARIABLE) as a dict.

    Raises
    ------
    ValueError
        Naming the entry that is not ``model-service=positive-integer``.
    """
    names = {spec.name for spec in MODEL_SERVICES}
    replicas: dict[str, int] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        name, _, count = entry.partition("=")
        name = name.strip()
        if name not in names or not count.strip().isdigit() or int(count) < 1:
            raise ValueError(f"{REPLICAS_VARIABLE}: {entry!r} is not model-service=count with a "
                             f"service of {sorted(names)} and a count >= 1")
        replicas[name] = int(count)
    return replicas


@dataclass(frozen=True)
class StackSizing:
    """How one machine's CPUs are shared by a `labsight up` stack.

    Attributes
    ----------
    cpus : int
        CPUs the stack may use (``usable_cpus``).
    workers : int
        Worker processes: one per 8 CPUs. A worker with several jobs in flight
        keeps the services busy while spending a fraction of a core itself.
    worker_concurrency : int
        Jobs each worker runs at once: two per CPU its share of the machine
        has, at least 4, at most 16, so that while the services compute some
        jobs the worker reads, writes and sends the others.
    compute_threads : int
        numba and OpenMP threads of each model service: every CPU, since one
        service computes at a time in the common case (one pipeline's calls).
    replicas : dict
        Processes of each model service (catalog name; 1 where not listed). A
        service of several processes gives each one ONNX Runtime session and its
        share of the CPUs' threads, and the workers spread their calls over them
        (round_robin).
    """

    cpus: int
    workers: int
    worker_concurrency: int
    compute_threads: int
    replicas: dict[str, int] = field(default_factory=dict)

    def replicas_of(self, service: str) -> int:
        """Processes of model service ``service``."""
        return self.replicas.get(service, 1)

    def service_environment(self, service: str = "") -> dict[str, str]:
        """Thread-pool and allocator variables of model service ``service`` (its catalog name;
        empty: any model service). Idle OpenMP threads sleep
        (PASSIVE) instead of spinning on the cores the gateway, workers and Redis need
        meanwhile; glibc keeps 2 malloc arenas (MALLOC_ARENA_MAX), not 8 per core, so memory
        freed by one of the many gRPC and batcher threads is reused by the others instead of
        staying resident (a fuzz run: features +339 MiB after 300 calls with the default, +23
        with 2), and what :data:`PROCESS_MALLOC` gives ``service``."""
        replicas = self.replicas_of(service)
        threads = str(max(1, self.compute_threads // replicas))
        one_session = ({"LABSIGHT_MODEL_INSTANCES": "1", "LABSIGHT_ORT_THREADS": threads}
                       if replicas > 1 else {})
        return {"NUMBA_NUM_THREADS": threads, "OMP_NUM_THREADS": threads, "OMP_WAIT_POLICY": "PASSIVE",
                "MALLOC_ARENA_MAX": "2", **one_session,
                **PROCESS_MALLOC.get(service, {})}

    def gateway_environment(self) -> dict[str, str]:
        """Variables of the gateway process (:data:`BULK_BUFFER_MALLOC`)."""
        return dict(PROCESS_MALLOC[GATEWAY.name])

    def worker_environment(self) -> dict[str, str]:
        """Variables of a worker process: its job slots and :data:`BULK_BUFFER_MALLOC`."""
        return {WORKER_CONCURRENCY_VARIABLE: str(self.worker_concurrency), **PROCESS_MALLOC[WORKER.name]}

    def describe(self) -> str:
        """One line for people: what each process gets."""
        replicated = "".join(f", {name} x {count} processes"
                             for name, count in sorted(self.replicas.items()) if count > 1)
        return (f"{self.cpus} CPUs: {self.workers} worker(s) x {self.worker_concurrency} job slots "
                f"(small jobs of one kind: up to {SMALL_JOB_GROUP_SIZE} per slot), "
                f"{self.compute_threads} numba/OpenMP threads per model service{replicated}")


def size_stack(cpus: int | None = None, workers: int | None = None,
               gpu: bool | None = None) -> StackSizing:
    """The sizing of a stack on ``cpus`` CPUs (default ``usable_cpus()``), with ``workers``
    worker processes if given; ``gpu`` (default ``gpu_visible()``) keeps every model service
    in one process (one CUDA context each); REPLICAS_VARIABLE overrides the processes.

    Raises
    ------
    ValueError
        If REPLICAS_VARIABLE is malformed.
    """
    cpus = usable_cpus() if cpus is None else max(1, cpus)
    workers = max(1, cpus // 8) if workers is None else max(1, workers)
    concurrency = min(16, max(4, 2 * cpus // workers))
    on_gpu = gpu_visible() if gpu is None else gpu
    replicas = {} if on_gpu or cpus < 2 else dict.fromkeys(REPLICATED_ON_CPU, 2)
    replicas.update(parse_replicas(os.environ.get(REPLICAS_VARIABLE, "")))
    return StackSizing(cpus, workers, concurrency, cpus, replicas)
