"""The worker loop: claim a job, run its pipeline against the model services, store, ack."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial

import grpc
import redis
from prometheus_client import Counter, Histogram

import labsight
from labsight.blobs import opened_blob
from labsight.catalog import WORKER
from labsight.config import Settings
from labsight.errors import NotFound, status_code_for
from labsight.redis_server import hide_password
from labsight.runtime.logs import configure_logging
from labsight.runtime.server import start_metrics, stop_on_signals
from labsight.v1 import gateway_pb2 as pb
from labsight.v1 import tensor_pb2
from services.gateway.jobs import CANCELLED, DEAD, DONE, FAILED, QUEUED, RUNNING, JobRecord, now
from services.gateway.pipelines import get_pipeline
from services.gateway.pipelines.base import JobCancelled, RunContext
from services.gateway.progress import ProgressClock
from services.gateway.queue import Delivery, JobQueue, build_queue
from services.gateway.services import ServiceClients

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


@contextlib.contextmanager
def _every(interval_s: float, task: Callable[[], None], name: str) -> Iterator[None]:
    """Run ``task`` every ``interval_s`` seconds in a thread while the block runs."""
    done = threading.Event()

    def loop() -> None:
        while not done.wait(interval_s):
            task()

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


class Worker:
    """Runs jobs from the queue until stopped; safe to run many side by side."""

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
        self._high_streak = 0
        self._stop = threading.Event()

    def run(
        self, stop: threading.Event, block_ms: int = 1000,
        redis_moved: Callable[[], bool] | None = None,
    ) -> None:
        """Process jobs until ``stop`` is set; the job in hand is finished first
        (unless it waits for a model service to come back: then it is retried later).

        While Redis does not answer, the worker retries every second; it returns
        early if ``redis_moved()`` says Redis is now elsewhere (see ``main``).
        """
        self._stop = stop
        next_housekeeping = 0.0
        while not stop.is_set():
            try:
                if time.monotonic() >= next_housekeeping:
                    self.queue.ensure_groups()
                    self.queue.announce_worker(self.consumer)
                    self.queue.release_due_retries()
                    for delivery in self.queue.reclaim_stale(self.consumer, self.claim_idle_ms):
                        self.process(delivery)
                    next_housekeeping = time.monotonic() + min(1.0, self.claim_idle_ms / 4000)
                delivery = self.queue.claim(
                    self.consumer, block_ms=block_ms,
                    prefer_normal=self._high_streak >= self.high_burst,
                )
                if delivery is not None:
                    self._high_streak = self._high_streak + 1 if delivery.priority == "high" else 0
                    self.process(delivery)
            except redis.ConnectionError as error:
                if redis_moved is not None and redis_moved():
                    log.warning("redis moved; reconnecting", extra={"error": str(error)})
                    return
                log.warning("redis unavailable, retrying", extra={"error": str(error)})
                stop.wait(1.0)
            except Exception:  # noqa: BLE001 - a worker outlives any single bad step
                log.exception("worker loop error; continuing")
                stop.wait(1.0)

    def process(self, delivery: Delivery) -> None:
        """Run one delivered job to an outcome (or schedule its retry)."""
        try:
            job = self.store.load(delivery.job_id)
        except NotFound:
            self.queue.ack(delivery)
            return
        if job.is_terminal:
            self.queue.ack(delivery)
            return
        attempts = self.store.count_attempt(job.job_id)
        if attempts > self.max_attempts:
            self.handle_job_dead(delivery, job, job.error or "no attempts left")
            return
        if not self.store.transition(job, (QUEUED, RUNNING), RUNNING, started_at=now()):
            self.queue.ack(delivery)
            return
        job.status = RUNNING
        started = time.perf_counter()
        try:
            with self._heartbeat(delivery), self._cancel_watch(job):
                result = self.run_when_services_ready(job)
        except JobCancelled:
            self.queue.ack(delivery)
            JOBS_FINISHED.labels(job.pipeline, CANCELLED).inc()
            return
        except Exception as error:  # noqa: BLE001 - every failure is recorded on the job
            self.handle_job_failure(delivery, job, attempts, error)
            return
        finally:
            JOB_SECONDS.labels(job.pipeline).observe(time.perf_counter() - started)
        self.handle_job_success(delivery, job, result)

    def _heartbeat(self, delivery: Delivery) -> contextlib.AbstractContextManager[None]:
        """Keep the entry's idle time low while the job runs, so no other worker takes it over."""

        def beat() -> None:
            with contextlib.suppress(redis.RedisError):
                self.queue.touch(delivery, self.consumer)

        return _every(self.claim_idle_ms / 3000, beat, "heartbeat")

    def _cancel_watch(self, job: JobRecord) -> contextlib.AbstractContextManager[None]:
        """Cancel the job's service calls in flight once the job is cancelled, so the services
        stop its work (they notice between steps) and the worker is free within a second or two."""
        cancelled = False

        def watch() -> None:
            nonlocal cancelled
            with contextlib.suppress(redis.RedisError):
                cancelled = cancelled or self.store.status(job.job_id) == CANCELLED
            if cancelled:  # again each time: the pipeline may start calls until its next step
                self.services.cancel_calls()

        return _every(CANCEL_POLL_S, watch, "cancel-watch")

    def run_when_services_ready(self, job: JobRecord) -> pb.JobResult:
        """Run the job's pipeline within one attempt, however often a model service restarts.

        A call that a service refuses (UNAVAILABLE) while it is starting, stopping
        or unreachable is no fault of the job: the worker waits, holding the job's
        claim, until the service reports SERVING again and runs the pipeline
        again. Only a wait beyond ``service_wait_s`` (or a second refusal by a
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
                return self.run_pipeline(job)
            except grpc.FutureCancelledError:
                raise JobCancelled(job.job_id) from None  # only _cancel_watch cancels calls
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.CANCELLED and cancelled():
                    raise JobCancelled(job.job_id) from None
                refused = self.services.refusals()
                if error.code() != grpc.StatusCode.UNAVAILABLE or not refused:
                    raise
                if not retried_while_serving and all(self.services.is_serving(n) for n in refused):
                    retried_while_serving = True
                    continue
                log.warning("model service not ready; waiting for it",
                            extra={"job_id": job.job_id, "services": sorted(refused)})
                if not self.services.wait_for_restart(
                    refused, deadline, lambda: self._stop.is_set() or cancelled()
                ):
                    if cancelled():
                        raise JobCancelled(job.job_id) from None
                    raise
            finally:
                # A run that ended (a job cancelled at a step, a failed call) leaves no call
                # working for nobody; only this run's refusals count.
                self.services.cancel_calls()
                self.services.forget_calls()

    def run_pipeline(self, job: JobRecord) -> pb.JobResult:
        """Load the job's input and run its pipeline."""
        raw_input = self.queue.client.get(self.queue.keys.job_input(job.job_id))
        if raw_input is None:
            raise ValueError("the job's input is missing from the queue store")
        job_input = pb.JobInput.FromString(raw_input)
        pipeline = get_pipeline(job.pipeline)
        if job_input.image.blob and not pipeline.keeps_blob_reference(job_input, job.params):
            self.inline_blob(job_input.image)
        context = RunContext(
            job_id=job.job_id,
            params=job.params,
            job_input=job_input,
            services=self.services,
            report_progress=partial(self.report_progress, job, ProgressClock()),
        )
        warnings, reading = pipeline.read_input(job_input, job.params)
        result = pipeline.run(context)
        result.job_id = job.job_id
        result.input_name = job.input_name
        result.labels.update(job.labels)
        result.provenance.update(reading)
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
        JobCancelled if the job was cancelled meanwhile."""
        if self.store.status(job.job_id) == CANCELLED:
            raise JobCancelled(job.job_id)
        rate, eta_seconds = clock.update(fraction, step, done)
        message = f"{step}: {done}/{total} {unit}" if total else step
        self.store.set_progress(job.job_id, fraction, message, rate, unit, eta_seconds)

    def handle_job_success(self, delivery: Delivery, job: JobRecord, result: pb.JobResult) -> None:
        """Write the result once (a second run keeps the first), mark done, ack."""
        self.queue.client.set(
            self.queue.keys.job_result(job.job_id),
            result.SerializeToString(),
            nx=True,
            ex=self.result_ttl_s,
        )
        if not self.store.transition(job, (RUNNING,), DONE, finished_at=now(), progress=1.0, error="",
                                     warnings=json.dumps(list(result.warnings))):
            log.info("job ended meanwhile; result kept only if it was done",
                     extra={"job_id": job.job_id})
            if self.store.status(job.job_id) == CANCELLED:
                self.queue.client.delete(self.queue.keys.job_result(job.job_id))
        self.queue.ack(delivery)
        JOBS_FINISHED.labels(job.pipeline, DONE).inc()
        log.info("job done", extra={"job_id": job.job_id, "pipeline": job.pipeline})

    def handle_job_failure(
        self, delivery: Delivery, job: JobRecord, attempts: int, error: Exception
    ) -> None:
        """Fail at once for bad input; otherwise retry after an exponential backoff."""
        message = describe_error(error)
        if is_permanent(error):
            self.store.transition(job, (RUNNING,), FAILED, finished_at=now(), error=message)
            self.queue.ack(delivery)
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
        self.queue.bury(delivery, message)
        JOBS_FINISHED.labels(job.pipeline, DEAD).inc()
        log.error("job dead", extra={"job_id": job.job_id, "error": message})


def consumer_name() -> str:
    """This process's name in the consumer group (host and pid)."""
    return f"{socket.gethostname()}-{os.getpid()}"


def build_worker(settings: Settings, consumer: str | None = None) -> Worker:
    """A worker wired to the Redis and model services named in ``settings``."""
    services = ServiceClients(
        settings.service_addresses, settings.grpc_options(), service_token=settings.service_token
    )
    return Worker(
        build_queue(settings),
        services,
        consumer or consumer_name(),
        max_attempts=settings.max_attempts,
        claim_idle_ms=settings.claim_idle_ms,
        result_ttl_s=settings.result_ttl_s,
        retry_base_s=settings.retry_base_s,
        retry_max_s=settings.retry_max_s,
        service_wait_s=settings.service_wait_s,
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
