"""The worker loop: claim a job, run its pipeline against the model services, store, ack."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

import grpc
import redis
from prometheus_client import Counter, Histogram

from labsight.catalog import WORKER
from labsight.config import Settings
from labsight.errors import NotFound
from labsight.runtime.logs import configure_logging
from labsight.runtime.server import start_metrics
from labsight.v1 import gateway_pb2 as pb
from services.gateway.jobs import CANCELLED, DEAD, DONE, FAILED, QUEUED, RUNNING, JobRecord, now
from services.gateway.keys import RedisKeys
from services.gateway.pipelines import get_pipeline
from services.gateway.pipelines.base import JobCancelled, RunContext
from services.gateway.queue import Delivery, JobQueue
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
    """A one-line description of a failed attempt for the job record."""
    if isinstance(error, grpc.RpcError) and hasattr(error, "code"):
        return f"{error.code().name}: {error.details()}"
    return f"{type(error).__name__}: {error}"


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
    ) -> None:
        self.queue = queue
        self.store = queue.store
        self.services = services
        self.consumer = consumer
        self.max_attempts = max_attempts
        self.claim_idle_ms = claim_idle_ms
        self.result_ttl_s = result_ttl_s

    def run(self, stop: threading.Event, block_ms: int = 1000) -> None:
        """Process jobs until ``stop`` is set; the job in hand is finished first."""
        self.queue.ensure_groups()
        next_reclaim = 0.0
        while not stop.is_set():
            try:
                if time.monotonic() >= next_reclaim:
                    for delivery in self.queue.reclaim_stale(self.consumer, self.claim_idle_ms):
                        self.process(delivery)
                    next_reclaim = time.monotonic() + self.claim_idle_ms / 4000
                delivery = self.queue.claim(self.consumer, block_ms=block_ms)
                if delivery is not None:
                    self.process(delivery)
            except redis.ConnectionError as error:
                log.warning("redis unavailable, retrying", extra={"error": str(error)})
                stop.wait(1.0)

    def process(self, delivery: Delivery) -> None:
        """Run one delivered job to an outcome (or leave it pending for a retry)."""
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
            result = self.run_pipeline(job)
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

    def run_pipeline(self, job: JobRecord) -> pb.JobResult:
        """Load the job's input and run its pipeline."""
        raw_input = self.queue.client.get(self.queue.keys.job_input(job.job_id))
        if raw_input is None:
            raise ValueError("the job's input is missing from the queue store")
        job_input = pb.JobInput.FromString(raw_input)
        context = RunContext(
            job_id=job.job_id,
            params=job.params,
            job_input=job_input,
            services=self.services,
            report_progress=lambda fraction, step: self.report_progress(job, fraction, step),
        )
        result = get_pipeline(job.pipeline).run(context)
        result.job_id = job.job_id
        result.input_name = job.input_name
        return result

    def report_progress(self, job: JobRecord, fraction: float, step: str) -> None:
        """Record progress; raise JobCancelled if the job was cancelled meanwhile."""
        if self.store.status(job.job_id) == CANCELLED:
            raise JobCancelled(job.job_id)
        self.store.set_progress(job.job_id, fraction, step)

    def handle_job_success(self, delivery: Delivery, job: JobRecord, result: pb.JobResult) -> None:
        """Write the result once (a second run keeps the first), mark done, ack."""
        self.queue.client.set(
            self.queue.keys.job_result(job.job_id),
            result.SerializeToString(),
            nx=True,
            ex=self.result_ttl_s,
        )
        self.store.transition(
            job, (RUNNING,), DONE, finished_at=now(), progress=1.0, error=""
        )
        self.queue.ack(delivery)
        JOBS_FINISHED.labels(job.pipeline, DONE).inc()
        log.info("job done", extra={"job_id": job.job_id, "pipeline": job.pipeline})

    def handle_job_failure(
        self, delivery: Delivery, job: JobRecord, attempts: int, error: Exception
    ) -> None:
        """Fail at once for bad input; otherwise leave the entry pending to be retried."""
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
        self.store.transition(job, (RUNNING,), QUEUED, error=message)
        log.warning(
            "job attempt failed; will be retried",
            extra={"job_id": job.job_id, "attempt": attempts, "error": message},
        )

    def handle_job_dead(self, delivery: Delivery, job: JobRecord, message: str) -> None:
        """Mark the job dead with its last error and move it to the dead-letter stream."""
        self.store.transition(job, (QUEUED, RUNNING), DEAD, finished_at=now(), error=message)
        self.queue.bury(delivery, message)
        JOBS_FINISHED.labels(job.pipeline, DEAD).inc()
        log.error("job dead", extra={"job_id": job.job_id, "error": message})


def build_worker(settings: Settings, consumer: str | None = None) -> Worker:
    """A worker wired to the Redis and model services named in ``settings``."""
    client = redis.Redis.from_url(settings.redis_url)
    queue = JobQueue(client, RedisKeys(settings.key_prefix), max_depth=settings.max_queue_depth)
    services = ServiceClients(settings.service_addresses, settings.grpc_options())
    return Worker(
        queue,
        services,
        consumer or f"{socket.gethostname()}-{os.getpid()}",
        max_attempts=settings.max_attempts,
        claim_idle_ms=settings.claim_idle_ms,
        result_ttl_s=settings.result_ttl_s,
    )


def main() -> None:
    """Entry point of ``labsight worker`` and ``python -m services.gateway.worker``."""
    import signal

    settings = Settings.from_env(WORKER)
    configure_logging(settings.log_level, WORKER.name)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    start_metrics(settings)
    worker = build_worker(settings)
    log.info("worker started", extra={"consumer": worker.consumer, "redis": settings.redis_url})
    worker.run(stop)
    worker.services.close()
    log.info("worker stopped")


if __name__ == "__main__":
    main()
