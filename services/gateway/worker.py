"""The worker loop: claim jobs, run their pipelines against the model services, store, ack."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import grpc
import redis
from prometheus_client import Counter, Histogram

import labsight
from labsight.blobs import opened_blob
from labsight.catalog import WORKER
from labsight.config import Settings, env_int
from labsight.errors import status_code_for
from labsight.redis_server import hide_password
from labsight.runtime.cpus import SMALL_JOB_GROUP_SIZE, WORKER_CONCURRENCY_VARIABLE
from labsight.runtime.idle_trim import process_trimmer
from labsight.runtime.logs import configure_logging
from labsight.runtime.server import start_metrics, stop_on_signals
from labsight.stored_results import pack_result
from labsight.v1 import gateway_pb2 as pb
from labsight.v1 import tensor_pb2
from services.gateway.jobs import CANCELLED, DEAD, DONE, FAILED, QUEUED, RUNNING, JobRecord, now
from services.gateway.pipelines import get_pipeline
from services.gateway.pipelines.base import JobCancelled, Pipeline, RunContext
from services.gateway.progress import ProgressClock
from services.gateway.queue import Delivery, JobQueue, build_queue
from services.gateway.services import REFUSAL_CODES, ServiceClients

log = logging.getLogger(__name__)

JOBS_FINISHED = Counter(
    "labsight_worker_jobs_total", "Jobs a worker finished, by outcome", ["pipeline", "outcome"]
)
JOB_SECONDS = Histogram(
    "labsight_worker_job_seconds",
    "Time a worker spent running one job",
    ["pipeline"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
)

CANCEL_POLL_S = 0.5
"""How often a worker looks whether its running job was cancelled, to cancel the service calls
it is waiting on (a long call would otherwise run to its end for nobody)."""

PERMANENT_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.PERMISSION_DENIED,
    }
)
"""Service answers that retrying cannot change: the job fails at once."""

DEFAULT_CONCURRENCY = 4
"""Jobs a worker runs at once by default: while one job's service call computes, the others'
inputs are read, their results written and their next calls sent (a 64² fractal job spends
about a third of its time outside the features service)."""


def is_permanent(error: Exception) -> bool:
    """True if running the job again would fail the same way."""
    if isinstance(error, grpc.RpcError) and hasattr(error, "code"):
        return error.code() in PERMANENT_CODES
    return isinstance(error, ValueError)


def describe_error(error: Exception) -> str:
    """A one-line description of a failed attempt for the job record, led by its status code
    whether a service answered it or the worker found it (a bug keeps its class name)."""
    if isinstance(error, grpc.RpcError) and hasattr(error, "code"):
        return f"{error.code().name}: {error.details()}"
    code = status_code_for(error)
    if code == grpc.StatusCode.INTERNAL:
        return f"INTERNAL: {type(error).__name__}: {error}"
    return f"{code.name}: {error}"


@dataclass
class Started:
    """A claimed job that is now RUNNING in this worker, with what its run needs."""

    delivery: Delivery
    job: JobRecord
    raw_input: bytes | None
    attempts: int


Loaded = tuple[JobRecord | None, bytes | None]
"""A claimed job's record and serialized input as read from Redis (None where gone)."""


class Slots:
    """The jobs a worker runs at once: one set of service clients per job in flight, so a
    cancelled job's calls are cancelled (and a refused call is traced) without touching the others'."""

    def __init__(self, clients: list[ServiceClients]) -> None:
        self._free = list(clients)
        self._changed = threading.Condition()

    def wait_free(self, stop: threading.Event, timeout_s: float, poll_s: float = 0.1) -> int:
        """How many are free, once one is; 0 if none is within ``timeout_s`` or once
        ``stop`` is set."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not self._free and not stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    return 0
                self._changed.wait(min(poll_s, left))
            return 0 if stop.is_set() else len(self._free)

    def take(self) -> ServiceClients:
        """A free slot's clients, waiting for one if need be."""
        with self._changed:
            while not self._free:
                self._changed.wait()
            return self._free.pop()

    def give_back(self, clients: ServiceClients) -> None:
        """Free the slot of a job that ended."""
        with self._changed:
            self._free.append(clients)
            self._changed.notify_all()


class Worker:
    """Runs jobs from the queue until stopped, up to ``concurrency`` at once; safe to run many
    side by side.

    One dispatcher thread claims jobs in batches (as many as slots are free) and
    starts them in two pipelined round trips; each job then runs its pipeline in
    a slot of a thread pool and writes its result, status and acknowledgement in
    one transaction. Small jobs of one kind (``Pipeline.group_key``) run up to
    ``group_size`` to a slot: while the last claim was all such jobs, a free slot
    claims ``group_size`` entries; a group's calls go out together and its jobs
    finish in one transaction; a group that fails in any way runs each of its
    jobs alone. Entries claimed beyond the free slots wait in a backlog (still
    this worker's, kept alive, started before new claims; released to the
    stream when the worker stops). One watcher thread keeps every running or
    waiting job's claim alive and cancels the service calls of jobs cancelled meanwhile.

    ``services`` are the first slot's service clients; ``new_services`` makes
    those of each further slot (without it the worker runs one job at a time).
    """

    def __init__(
        self,
        queue: JobQueue,
        services: ServiceClients,
        consumer: str,
        max_attempts: int = 5,
        claim_idle_ms: int = 30_000,
        result_ttl_s: int = 7 * 24 * 3600,
        retry_base_s: float = 1.0,
        retry_max_s: float = 60.0,
        high_burst: int = 4,
        service_wait_s: float = 180.0,
        concurrency: int = 1,
        new_services: Callable[[], ServiceClients] | None = None,
        group_size: int = SMALL_JOB_GROUP_SIZE,
    ) -> None:
        self.queue = queue
        self.store = queue.store
        self.services = services
        self.consumer = consumer
        self.max_attempts = max_attempts
        self.claim_idle_ms = claim_idle_ms
        self.result_ttl_s = result_ttl_s
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.high_burst = high_burst
        self.service_wait_s = service_wait_s
        self.concurrency = concurrency if new_services is not None else 1
        self.new_services = new_services
        self.group_size = max(1, group_size)
        self._high_streak = 0
        self._grouping = False
        """True while the last claim was all small jobs of groups: claims are then larger."""
        self._stop = threading.Event()
        self._running: dict[str, tuple[Delivery, ServiceClients]] = {}
        self._backlog: list[Delivery] = []
        """Entries claimed beyond the free slots, not started yet (guarded by _running_lock)."""
        self._running_lock = threading.Lock()
        self._trimmer = process_trimmer()
        """Gives the freed heap back once no job has run for a while (labsight.runtime.idle_trim)."""

    def run(
        self, stop: threading.Event, block_ms: int = 1000,
        redis_moved: Callable[[], bool] | None = None,
    ) -> None:
        """Process jobs until ``stop`` is set; the jobs in hand are finished first
        (unless one waits for a model service to come back: then it is retried later).

        While Redis does not answer, the worker retries every second; it returns
        early if ``redis_moved()`` says Redis is now elsewhere (see ``main``).
        """
        self._stop = stop
        extra = [self.new_services() for _ in range(self.concurrency - 1)] if self.new_services else []
        slots = Slots([self.services, *extra])
        done = threading.Event()
        watcher = threading.Thread(target=self._watch, args=(done,), name="watcher", daemon=True)
        watcher.start()
        try:
            with ThreadPoolExecutor(1 + len(extra), thread_name_prefix="job") as pool:
                self._dispatch(stop, block_ms, redis_moved, slots, pool)
        finally:
            done.set()
            watcher.join()
            self._release_backlog()
            for clients in extra:
                clients.close()

    def _dispatch(
        self, stop: threading.Event, block_ms: int, redis_moved: Callable[[], bool] | None,
        slots: Slots, pool: ThreadPoolExecutor,
    ) -> None:
        """Claim and start jobs into free slots until ``stop`` (or Redis moved).

        Housekeeping (heartbeat, due retries) runs about every second even while every
        slot is busy; stale entries are taken over only when a slot is free, and no more
        than are free: an entry taken and left waiting would go stale again, untouched,
        and a second worker would run the job beside this one.
        """
        housekeeping_s = min(1.0, self.claim_idle_ms / 4000)
        next_housekeeping = 0.0
        reclaim_due = False
        while not stop.is_set():
            try:
                if time.monotonic() >= next_housekeeping:
                    self.queue.ensure_groups()
                    self.queue.announce_worker(self.consumer)
                    self.queue.release_due_retries()
                    reclaim_due = True
                    next_housekeeping = time.monotonic() + housekeeping_s
                free = slots.wait_free(stop, max(0.0, next_housekeeping - time.monotonic()))
                if not free:
                    continue
                deliveries: list[Delivery] = []
                if reclaim_due:  # taken over one to a slot: no more than the slots free
                    deliveries = self.take_over_stale(free)
                    reclaim_due = False
                grouped = not deliveries
                if not deliveries:
                    with self._running_lock:
                        deliveries, self._backlog = self._backlog, []
                if not deliveries:
                    deliveries = self.claim(free * (self.group_size if self._grouping else 1), block_ms)
                for unit in self.start_units(deliveries, free, grouped):
                    clients = slots.take()
                    with self._running_lock:
                        for started in unit:
                            self._running[started.job.job_id] = (started.delivery, clients)
                    pool.submit(self._run_in_slot, unit, clients, slots)
            except redis.ConnectionError as error:
                if redis_moved is not None and redis_moved():
                    log.warning("redis moved; reconnecting", extra={"error": str(error)})
                    return
                log.warning("redis unavailable, retrying", extra={"error": str(error)})
                stop.wait(1.0)
            except Exception:  # noqa: BLE001 - a worker outlives any single bad step
                log.exception("worker loop error; continuing")
                stop.wait(1.0)

    def _release_backlog(self) -> None:
        """Give the entries still waiting in the backlog back to the stream (on the way out)."""
        with self._running_lock:
            waiting, self._backlog = self._backlog, []
        try:
            self.queue.release(waiting)
        except redis.RedisError as error:  # they stay pending here: reclaimed once idle
            log.warning("could not release waiting jobs", extra={"error": str(error)})

    def take_over_stale(self, free: int) -> list[Delivery]:
        """Up to ``free`` entries left idle past ``claim_idle_ms`` (their worker died or
        stalled), now this worker's; one of its own running jobs whose claim went idle
        (its watcher was starved) stays with the run it has."""
        taken = self.queue.reclaim_stale(self.consumer, self.claim_idle_ms, free)
        with self._running_lock:
            waiting = {delivery.job_id for delivery in self._backlog}
            taken = [delivery for delivery in taken
                     if delivery.job_id not in self._running and delivery.job_id not in waiting]
        if taken:
            log.warning("took over jobs idle past the claim time",
                        extra={"job_ids": [d.job_id for d in taken],
                               "claim_idle_ms": self.claim_idle_ms})
        return taken

    def claim(self, free: int, block_ms: int) -> list[Delivery]:
        """Up to ``free`` new jobs, high priority first but never more than ``high_burst`` high
        ones in a row while normal ones wait; waits up to ``block_ms`` when there is none."""
        taken: list[Delivery] = []
        while len(taken) < free:
            wanted = free - len(taken)
            if self._high_streak >= self.high_burst:
                order = (("normal", 1), ("high", wanted))
            else:
                order = (("high", min(wanted, self.high_burst - self._high_streak)),
                         ("normal", wanted))
            got: list[Delivery] = []
            for priority, count in order:
                got = self.queue.claim(self.consumer, priority, count)
                if got:
                    break
            if not got:
                break
            for delivery in got:
                self._high_streak = self._high_streak + 1 if delivery.priority == "high" else 0
            taken += got
            if len(got) < count:
                break  # that stream is drained for now
        if not taken:
            taken = self.queue.wait_for_job(self.consumer, block_ms)
            for delivery in taken:
                self._high_streak = self._high_streak + 1 if delivery.priority == "high" else 0
        return taken

    def start_units(
        self, deliveries: list[Delivery], free: int, grouped: bool = True
    ) -> list[list[Started]]:
        """Start as many of ``deliveries`` as ``free`` slots take, in units for one slot each:
        a job alone, or (if ``grouped``) up to ``group_size`` small jobs of one group key (see
        ``plan``). The entries left over wait in the backlog. Three round trips for them all."""
        if not deliveries:
            return []
        loaded = self.store.load_with_inputs([d.job_id for d in deliveries])
        units = self.plan(deliveries, loaded) if grouped else [[i] for i in range(len(deliveries))]
        for unit in units[free:]:
            with self._running_lock:
                self._backlog += [deliveries[index] for index in unit]
        taken = [index for unit in units[:free] for index in unit]
        started = {s.job.job_id: s for s in self.start([deliveries[i] for i in taken],
                                                       [loaded[i] for i in taken])}
        return [unit for unit in (
            [started[deliveries[i].job_id] for i in indices if deliveries[i].job_id in started]
            for indices in units[:free]
        ) if unit]

    def plan(self, deliveries: list[Delivery], loaded: list[Loaded]) -> list[list[int]]:
        """Units of ``deliveries`` (their indices) in claim order: jobs of one non-empty
        ``group_key`` together, up to ``group_size`` to a unit; every other job alone.
        Sets whether the next claim is large (every live job here was in a group)."""
        units: list[list[int]] = []
        open_groups: dict[str, list[int]] = {}
        grouped = alone = 0
        for index, (job, raw_input) in enumerate(loaded):
            key = self._group_key(job, raw_input)
            if not key:
                units.append([index])
                alone += job is not None and not job.is_terminal
                continue
            grouped += 1
            group = open_groups.get(key)
            if group is None or len(group) >= self.group_size:
                group = open_groups[key] = []
                units.append(group)
            group.append(index)
        self._grouping = self.group_size > 1 and grouped > 0 and alone == 0
        return units

    def _group_key(self, job: JobRecord | None, raw_input: bytes | None) -> str:
        """The job's group key ("" : it runs alone, as does a job gone, ended or unreadable)."""
        if self.group_size < 2 or job is None or job.is_terminal or raw_input is None:
            return ""
        try:
            pipeline = get_pipeline(job.pipeline)
            if not pipeline.runs_in_groups:
                return ""
            return pipeline.group_key(job.params, pb.JobInput.FromString(raw_input))
        except Exception:  # noqa: BLE001 - a job its pipeline cannot judge fails alone, as usual
            return ""

    def start(self, deliveries: list[Delivery], loaded: list[Loaded] | None = None) -> list[Started]:
        """Count an attempt of each delivered job and mark it RUNNING, in two round trips for
        them all (one with ``loaded``, their records and inputs already read); jobs gone,
        ended, taken by another worker or out of attempts are settled here."""
        if not deliveries:
            return []
        if loaded is None:
            loaded = self.store.load_with_inputs([d.job_id for d in deliveries])
        live: list[tuple[Delivery, JobRecord, bytes | None]] = []
        for delivery, (job, raw_input) in zip(deliveries, loaded, strict=True):
            if job is None or job.is_terminal:
                self.queue.ack(delivery, job.input_blob if job else "")
            else:
                live.append((delivery, job, raw_input))
        announced = last_of_each_batch([job for _, job, _ in live])
        with self.queue.client.pipeline(transaction=False) as pipe:
            for index, (_, job, _) in enumerate(live):
                self.store.count_attempt(job.job_id, pipe)
                if job.attempts < self.max_attempts:  # this attempt is allowed
                    self.store.transition(job, (QUEUED, RUNNING), RUNNING, pipe,
                                          announce_batch=index in announced, started_at=now())
            replies = iter(pipe.execute())
        started: list[Started] = []
        for delivery, job, raw_input in live:
            attempts = int(next(replies))
            applied = next(replies) == 1 if job.attempts < self.max_attempts else False
            if attempts > self.max_attempts:
                self.handle_job_dead(delivery, job, job.error or "no attempts left")
            elif applied:
                job.status, job.attempts = RUNNING, attempts
                started.append(Started(delivery, job, raw_input, attempts))
            else:
                self.queue.ack(delivery, job.input_blob)
        return started

    def _run_in_slot(self, unit: list[Started], clients: ServiceClients, slots: Slots) -> None:
        """Run a started job, or a group of them, in a slot of the pool, then free the slot."""
        job_ids = [started.job.job_id for started in unit]
        if self._trimmer is not None:
            self._trimmer.call_started()
        try:
            if len(unit) == 1:
                self.process(unit[0], clients)
            else:
                self.process_group(unit, clients)
        except redis.ConnectionError as error:  # its claim stays pending: it is reclaimed later
            log.warning("redis unavailable while running a job",
                        extra={"job_ids": job_ids, "error": str(error)})
        except Exception:  # noqa: BLE001 - a slot outlives any single bad job
            log.exception("job run error", extra={"job_ids": job_ids})
        finally:
            with self._running_lock:
                for job_id in job_ids:
                    self._running.pop(job_id, None)
            slots.give_back(clients)
            if self._trimmer is not None:
                self._trimmer.call_ended()

    def process_group(self, unit: list[Started], services: ServiceClients) -> None:
        """Run a group of small jobs of one pipeline (see ``plan``) and finish them together;
        if anything fails, each job not cancelled meanwhile runs again alone, to its own outcome."""
        begun = time.perf_counter()
        try:
            prepared = [self.prepare(s.job, s.raw_input, services, keep_pixels=True) for s in unit]
            pipeline = prepared[0][0]
            results = pipeline.run_many([context for _, context, _ in prepared])
            results = [self.completed(started.job, result, reading)
                       for started, result, (_, _, reading) in zip(unit, results, prepared, strict=True)]
        except Exception as error:  # noqa: BLE001 - every job gets its own run and outcome
            log.info("a group of jobs failed; running each alone",
                     extra={"job_ids": [s.job.job_id for s in unit], "error": describe_error(error)})
            services.cancel_calls()
            services.forget_calls()
            statuses = self.store.statuses([s.job.job_id for s in unit])
            for started, status in zip(unit, statuses, strict=True):
                if status == CANCELLED:
                    self.queue.ack(started.delivery, started.job.input_blob)
                    JOBS_FINISHED.labels(started.job.pipeline, CANCELLED).inc()
                else:
                    self.process(started, services)
            return
        finally:
            services.forget_calls()
        seconds = time.perf_counter() - begun
        for started in unit:
            JOB_SECONDS.labels(started.job.pipeline).observe(seconds)
        self.finish([(s.delivery, s.job, result) for s, result in zip(unit, results, strict=True)])

    def process(self, started: Started, services: ServiceClients) -> None:
        """Run one started job to an outcome (or schedule its retry)."""
        delivery, job = started.delivery, started.job
        begun = time.perf_counter()
        try:
            result = self.run_when_services_ready(job, started.raw_input, services)
        except JobCancelled:
            self.queue.ack(delivery, job.input_blob)
            JOBS_FINISHED.labels(job.pipeline, CANCELLED).inc()
            return
        except Exception as error:  # noqa: BLE001 - every failure is recorded on the job
            self.handle_job_failure(delivery, job, started.attempts, error)
            return
        finally:
            JOB_SECONDS.labels(job.pipeline).observe(time.perf_counter() - begun)
        self.handle_job_success(delivery, job, result)

    def _watch(self, done: threading.Event) -> None:
        """Until ``done``: every CANCEL_POLL_S cancel the service calls of running jobs that were
        cancelled meanwhile (the services stop their work, the slot is free within a second or
        two); every third of ``claim_idle_ms`` reset the idle time of the entry of every job
        running or waiting in the backlog, so no other worker takes it over. One pipelined
        round trip each, for all of them."""
        beat_s = self.claim_idle_ms / 3000
        next_beat = time.monotonic() + beat_s
        while not done.wait(min(CANCEL_POLL_S, beat_s)):
            with self._running_lock:
                running = list(self._running.items())
                waiting = list(self._backlog)
            if not running and not waiting:
                next_beat = time.monotonic() + beat_s
                continue
            with contextlib.suppress(redis.RedisError):
                statuses = self.store.statuses([job_id for job_id, _ in running]) if running else []
                cancelled = [job_id for (job_id, _), status in zip(running, statuses, strict=True)
                             if status == CANCELLED]
                with self._running_lock:  # a slot that ended meanwhile may run another job now
                    for job_id in cancelled:  # again each time: a run may start calls until its next step
                        if job_id in self._running:
                            self._running[job_id][1].cancel_calls()
                if time.monotonic() >= next_beat:
                    self.queue.touch([delivery for _, (delivery, _) in running] + waiting,
                                     self.consumer)
                    next_beat = time.monotonic() + beat_s

    def run_when_services_ready(
        self, job: JobRecord, raw_input: bytes | None, services: ServiceClients
    ) -> pb.JobResult:
        """Run the job's pipeline within one attempt, however often a model service restarts.

        A call that a service refuses (UNAVAILABLE, or CANCELLED by a server shutting
        down) while it is starting, stopping or unreachable is no fault of the job:
        the worker waits, holding the job's claim, until the service reports SERVING
        again and runs the pipeline again. Only a wait beyond ``service_wait_s`` (or a second refusal by a
        service that reports SERVING) ends the attempt: the first such refusal is
        retried at once, since a restart breaks the connection a call was made on
        while the new process may already answer health checks.
        """
        deadline = time.monotonic() + self.service_wait_s
        retried_while_serving = False

        def cancelled() -> bool:
            return self.store.status(job.job_id) == CANCELLED

        while True:
            try:
                return self.run_pipeline(job, raw_input, services)
            except grpc.FutureCancelledError:
                raise JobCancelled(job.job_id) from None  # only the watcher cancels calls
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.CANCELLED and cancelled():
                    raise JobCancelled(job.job_id) from None
                refused = services.refusals()
                if error.code() not in REFUSAL_CODES or not refused:
                    raise
                if not retried_while_serving and all(services.is_serving(n) for n in refused):
                    retried_while_serving = True
                    continue
                log.warning("model service not ready; waiting for it",
                            extra={"job_id": job.job_id, "services": sorted(refused)})
                if not services.wait_for_restart(
                    refused, deadline, lambda: self._stop.is_set() or cancelled()
                ):
                    if cancelled():
                        raise JobCancelled(job.job_id) from None
                    raise
            finally:
                # A run that ended (a job cancelled at a step, a failed call) leaves no call
                # working for nobody; only this run's refusals count.
                services.cancel_calls()
                services.forget_calls()

    def run_pipeline(
        self, job: JobRecord, raw_input: bytes | None, services: ServiceClients
    ) -> pb.JobResult:
        """Run the job's pipeline on its input (as loaded when the job started)."""
        pipeline, context, reading = self.prepare(job, raw_input, services)
        return self.completed(job, pipeline.run(context), reading)

    def prepare(
        self, job: JobRecord, raw_input: bytes | None, services: ServiceClients,
        keep_pixels: bool = False,
    ) -> tuple[Pipeline, RunContext, tuple[list[str], dict[str, str]]]:
        """The job's pipeline, its run's context and the warnings and provenance of reading
        its input (as loaded when the job started); ``keep_pixels`` (a job run in a group), or
        a pipeline that ``sends_read_pixels``, keeps the main image as read in the context's
        ``image_pixels``."""
        if raw_input is None:
            raise ValueError("the job's input is missing from the queue store")
        job_input = pb.JobInput.FromString(raw_input)
        pipeline = get_pipeline(job.pipeline)
        if job_input.image.blob and not pipeline.keeps_blob_reference(job_input, job.params):
            self.inline_blob(job_input.image)
        reading = pipeline.read_input(job_input, job.params)
        context = RunContext(
            job_id=job.job_id,
            params=job.params,
            job_input=job_input,
            services=services,
            report_progress=partial(self.report_progress, job, ProgressClock()),
            image_pixels=reading.pixels if keep_pixels or pipeline.sends_read_pixels(job_input) else None,
            image_pixel_size=reading.pixel_size,
        )
        return pipeline, context, (reading.warnings, reading.provenance)

    @staticmethod
    def completed(
        job: JobRecord, result: pb.JobResult, reading: tuple[list[str], dict[str, str]]
    ) -> pb.JobResult:
        """``result`` with the job's id, name, labels, reading warnings and provenance."""
        warnings, provenance = reading
        result.job_id = job.job_id
        result.input_name = job.input_name
        result.labels.update(job.labels)
        result.provenance.update(provenance)
        result.provenance["labsight_version"] = labsight.__version__
        result.warnings.extend(warnings)
        return result

    def inline_blob(self, image: tensor_pb2.Image) -> None:
        """Replace the blob reference of an image a pipeline sends whole by the file's bytes
        (the gateway checked at submit that they fit a message)."""
        with opened_blob(self.queue.blobs, image.blob, "input.image.blob") as stream:
            image.encoded.data = stream.read()

    def report_progress(
        self, job: JobRecord, clock: ProgressClock, fraction: float, step: str,
        done: int = 0, total: int = 0, unit: str = "",
    ) -> None:
        """Record progress with its rate and time left (see ProgressReporter); raise
        JobCancelled if the job was cancelled meanwhile (checked and written in one step)."""
        rate, eta_seconds = clock.update(fraction, step, done)
        message = f"{step}: {done}/{total} {unit}" if total else step
        if self.store.set_progress(job.job_id, fraction, message, rate, unit, eta_seconds) == CANCELLED:
            raise JobCancelled(job.job_id)

    def handle_job_success(self, delivery: Delivery, job: JobRecord, result: pb.JobResult) -> None:
        """Write the result once (a second run keeps the first), mark done and ack, in one
        transaction."""
        self.finish([(delivery, job, result)])

    def finish(self, done: list[tuple[Delivery, JobRecord, pb.JobResult]]) -> None:
        """Write each job's result once (a second run keeps the first; packed as
        labsight.stored_results keeps it), mark it done and ack it, all in one transaction."""
        ended_at = now()
        announced = last_of_each_batch([job for _, job, _ in done])
        with self.queue.client.pipeline(transaction=True) as pipe:
            transitions = []
            for index, (delivery, job, result) in enumerate(done):
                pipe.set(self.queue.keys.job_result(job.job_id),
                         pack_result(result.SerializeToString()), nx=True, ex=self.result_ttl_s)
                transitions.append(len(pipe))
                self.store.transition(job, (RUNNING,), DONE, pipe, announce_batch=index in announced,
                                      finished_at=ended_at, progress=1.0, error="",
                                      warnings=json.dumps(list(result.warnings)))
                self.queue.ack(delivery, job.input_blob, pipe)
            replies = pipe.execute()
        for (_, job, _), index in zip(done, transitions, strict=True):
            self.queue.delete_blob(job.input_blob)
            if replies[index] != 1:
                log.info("job ended meanwhile; result kept only if it was done",
                         extra={"job_id": job.job_id})
                if self.store.status(job.job_id) == CANCELLED:
                    self.queue.client.delete(self.queue.keys.job_result(job.job_id))
            JOBS_FINISHED.labels(job.pipeline, DONE).inc()
            log.debug("job done", extra={"job_id": job.job_id, "pipeline": job.pipeline})

    def handle_job_failure(
        self, delivery: Delivery, job: JobRecord, attempts: int, error: Exception
    ) -> None:
        """Fail at once for bad input; otherwise retry after an exponential backoff."""
        message = describe_error(error)
        if is_permanent(error):
            self.store.transition(job, (RUNNING,), FAILED, finished_at=now(), error=message)
            self.queue.ack(delivery, job.input_blob)
            JOBS_FINISHED.labels(job.pipeline, FAILED).inc()
            log.info("job failed", extra={"job_id": job.job_id, "error": message})
            return
        if attempts >= self.max_attempts:
            self.handle_job_dead(delivery, job, message)
            return
        delay_s = min(self.retry_base_s * 2 ** (attempts - 1), self.retry_max_s)
        self.store.transition(job, (RUNNING,), QUEUED, error=message)
        self.queue.schedule_retry(delivery, delay_s)
        JOBS_FINISHED.labels(job.pipeline, "retried").inc()
        log.warning(
            "job attempt failed; retrying",
            extra={"job_id": job.job_id, "attempt": attempts, "delay_s": delay_s, "error": message},
        )

    def handle_job_dead(self, delivery: Delivery, job: JobRecord, message: str) -> None:
        """Mark the job dead with its last error and move it to the dead-letter stream."""
        self.store.transition(job, (QUEUED, RUNNING), DEAD, finished_at=now(), error=message)
        self.queue.bury(delivery, message, job.input_blob)
        JOBS_FINISHED.labels(job.pipeline, DEAD).inc()
        log.error("job dead", extra={"job_id": job.job_id, "error": message})


def last_of_each_batch(jobs: list[JobRecord]) -> set[int]:
    """Indices of the last job of each batch in ``jobs``: changing them all in one pipeline,
    only those announce it on their batch's channel (after every count of the batch changed)."""
    return set({job.batch_id: index for index, job in enumerate(jobs)}.values())


def consumer_name() -> str:
    """This process's name in the consumer group (host and pid)."""
    return f"{socket.gethostname()}-{os.getpid()}"


def build_worker(settings: Settings, consumer: str | None = None) -> Worker:
    """A worker wired to the Redis and model services named in ``settings``."""
    concurrency = env_int(WORKER_CONCURRENCY_VARIABLE, DEFAULT_CONCURRENCY)
    if concurrency < 1:
        raise ValueError(
            f"environment variable {WORKER_CONCURRENCY_VARIABLE} must be at least 1, got {concurrency}"
        )

    def new_services() -> ServiceClients:
        return ServiceClients(
            settings.service_addresses, settings.grpc_options(), service_token=settings.service_token
        )

    return Worker(
        build_queue(settings, threads=concurrency + 2),
        new_services(),
        consumer or consumer_name(),
        max_attempts=settings.max_attempts,
        claim_idle_ms=settings.claim_idle_ms,
        result_ttl_s=settings.result_ttl_s,
        retry_base_s=settings.retry_base_s,
        retry_max_s=settings.retry_max_s,
        service_wait_s=settings.service_wait_s,
        concurrency=concurrency,
        new_services=new_services,
    )


def main(redis_moved: Callable[[], bool] | None = None) -> None:
    """Entry point of ``labsight worker`` and ``python -m services.gateway.worker``.

    ``redis_moved`` (given by ``labsight worker``) re-reads where Redis and the
    model services are when Redis stops answering and returns True if they
    moved, with the environment updated: the worker then starts over on the
    new ones, keeping its consumer name, so it reclaims its own unfinished jobs.
    """
    stop = stop_on_signals()
    settings = Settings.from_env(WORKER)
    configure_logging(settings.log_level, WORKER.name)
    start_metrics(settings)
    consumer = consumer_name()
    while not stop.is_set():
        worker = build_worker(settings, consumer)
        log.info("worker started", extra={"consumer": consumer,
                                          "redis": hide_password(settings.redis_url)})
        worker.run(stop, redis_moved=redis_moved)
        worker.services.close()
        settings = Settings.from_env(WORKER)
    log.info("worker stopped")


if __name__ == "__main__":
    main()
