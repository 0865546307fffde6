"""The job queue: Redis Streams per priority with one consumer group of workers."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import redis

from labsight.errors import ResourceExhausted
from services.gateway.jobs import QUEUED, JobRecord, JobStore, now
from services.gateway.keys import PRIORITIES, WORKER_GROUP, RedisKeys


@dataclass(frozen=True)
class Delivery:
    """One stream entry handed to a worker."""

    priority: str
    message_id: bytes
    job_id: str


@dataclass(frozen=True)
class NewJob:
    """What a submission asks for, already validated."""

    pipeline: str
    params: dict[str, str]
    input_bytes: bytes
    input_name: str = ""
    priority: str = "normal"
    labels: dict[str, str] | None = None
    idempotency_key: str = ""
    batch_id: str = ""


class JobQueue:
    """Submits jobs, hands them to workers and acknowledges them."""

    def __init__(
        self,
        client: redis.Redis,
        keys: RedisKeys,
        max_depth: int = 100_000,
        idempotency_ttl_s: int = 7 * 24 * 3600,
    ) -> None:
        self.client = client
        self.keys = keys
        self.store = JobStore(client, keys)
        self.max_depth = max_depth
        self.idempotency_ttl_s = idempotency_ttl_s

    def ensure_groups(self) -> None:
        """Create the worker consumer group on every priority stream (idempotent)."""
        for priority in PRIORITIES:
            try:
                self.client.xgroup_create(
                    self.keys.stream(priority), WORKER_GROUP, id="0", mkstream=True
                )
            except redis.ResponseError as error:
                if "BUSYGROUP" not in str(error):
                    raise

    def depth(self) -> int:
        """Jobs accepted and not yet ended."""
        return int(self.client.get(self.keys.depth()) or 0)

    def submit(self, tenant: str, new: NewJob) -> tuple[JobRecord, bool]:
        """Queue a job for ``tenant``; returns the job and whether it is new.

        A repeated idempotency key returns the job first submitted under it.

        Raises
        ------
        ResourceExhausted
            If the queue already holds ``max_depth`` jobs.
        """
        job_id = uuid.uuid4().hex
        if new.idempotency_key:
            idem_key = self.keys.idempotency(tenant, new.idempotency_key)
            if not self.client.set(idem_key, job_id, nx=True, ex=self.idempotency_ttl_s):
                existing = self.client.get(idem_key)
                return self.store.load(existing.decode(), tenant), False
        depth = self.depth()
        if depth >= self.max_depth:
            if new.idempotency_key:
                self.client.delete(self.keys.idempotency(tenant, new.idempotency_key))
            raise ResourceExhausted(
                f"queue is full: {depth} jobs queued or running (limit {self.max_depth}); "
                "retry later"
            )
        record = JobRecord(
            job_id=job_id,
            tenant=tenant,
            pipeline=new.pipeline,
            params=new.params,
            priority=new.priority,
            created_at=now(),
            batch_id=new.batch_id,
            labels=dict(new.labels or {}),
            input_name=new.input_name,
        )
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.job(job_id), mapping=record.to_hash())
            pipe.set(self.keys.job_input(job_id), new.input_bytes)
            pipe.zadd(self.keys.tenant_jobs(tenant), {job_id: record.created_at})
            pipe.incr(self.keys.depth())
            if new.batch_id:
                pipe.hincrby(self.keys.batch(new.batch_id), "total", 1)
                pipe.hincrby(self.keys.batch(new.batch_id), f"count:{QUEUED}", 1)
                pipe.rpush(self.keys.batch_jobs(new.batch_id), job_id)
            pipe.xadd(self.keys.stream(new.priority), {"job_id": job_id})
            pipe.execute()
        return record, True

    def claim(self, consumer: str, block_ms: int = 1000) -> Delivery | None:
        """The next new job for ``consumer``, high priority first; None after ``block_ms``."""
        high = self.client.xreadgroup(
            WORKER_GROUP, consumer, {self.keys.stream("high"): ">"}, count=1
        )
        if high:
            return self._delivery("high", high)
        entries = self.client.xreadgroup(
            WORKER_GROUP,
            consumer,
            {self.keys.stream("high"): ">", self.keys.stream("normal"): ">"},
            count=1,
            block=block_ms,
        )
        if not entries:
            return None
        stream_name = entries[0][0].decode()
        priority = "high" if stream_name == self.keys.stream("high") else "normal"
        return self._delivery(priority, entries)

    @staticmethod
    def _delivery(priority: str, entries: list) -> Delivery:
        message_id, fields = entries[0][1][0]
        return Delivery(priority, message_id, fields[b"job_id"].decode())

    def reclaim_stale(self, consumer: str, min_idle_ms: int) -> list[Delivery]:
        """Take over entries another worker claimed ``min_idle_ms`` ago and never acked."""
        taken: list[Delivery] = []
        for priority in PRIORITIES:
            _, claimed, _ = self.client.xautoclaim(
                self.keys.stream(priority), WORKER_GROUP, consumer, min_idle_ms, count=10
            )
            taken += [
                Delivery(priority, message_id, fields[b"job_id"].decode())
                for message_id, fields in claimed
                if fields
            ]
        return taken

    def ack(self, delivery: Delivery) -> None:
        """Acknowledge and delete a finished entry so the stream stays small."""
        stream = self.keys.stream(delivery.priority)
        with self.client.pipeline(transaction=True) as pipe:
            pipe.xack(stream, WORKER_GROUP, delivery.message_id)
            pipe.xdel(stream, delivery.message_id)
            pipe.execute()

    def bury(self, delivery: Delivery, error: str) -> None:
        """Copy a job that used up its attempts to the dead-letter stream, then ack it."""
        self.client.xadd(
            self.keys.dead_letters(), {"job_id": delivery.job_id, "error": error[:2000]}
        )
        self.ack(delivery)
