"""The job queue: Redis Streams per priority with one consumer group of workers."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from labsight.config import Settings
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


# Moves retries whose time has come back onto their priority stream, atomically.
_RELEASE_RETRIES_LUA = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  local sep = string.find(member, '|', 1, true)
  local priority = string.sub(member, 1, sep - 1)
  local stream = KEYS[3]
  if priority == 'high' then stream = KEYS[2] end
  redis.call('XADD', stream, '*', 'job_id', string.sub(member, sep + 1))
  redis.call('ZREM', KEYS[1], member)
end
return #due
"""


class JobQueue:
    """Submits jobs, hands them to workers, schedules retries and acknowledges them."""

    def __init__(
        self,
        client: redis.Redis,
        keys: RedisKeys,
        max_depth: int = 100_000,
        retention_s: int = 7 * 24 * 3600,
    ) -> None:
        self.client = client
        self.keys = keys
        self.store = JobStore(client, keys, ended_ttl_s=retention_s)
        self.max_depth = max_depth
        self.idempotency_ttl_s = retention_s
        self._release_retries = client.register_script(_RELEASE_RETRIES_LUA)

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

    def announce_worker(self, consumer: str) -> None:
        """Record that ``consumer`` is alive and looking for work (for operators and tests)."""
        self.client.hset(self.keys.workers(), consumer, repr(time.time()))

    def depth(self) -> int:
        """Jobs accepted and not yet ended."""
        return int(self.client.get(self.keys.depth()) or 0)

    def ensure_room(self, wanted: int) -> None:
        """Raise ResourceExhausted, with the current depth, if ``wanted`` more jobs do not fit."""
        depth = self.depth()
        if depth + wanted > self.max_depth:
            raise ResourceExhausted(
                f"queue is full: {depth} jobs queued or running (limit {self.max_depth}); "
                "retry later"
            )

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
            try:
                self.ensure_room(1)
            except ResourceExhausted:
                self.client.delete(idem_key)
                raise
        else:
            self.ensure_room(1)
        return self._write(tenant, [(job_id, new)])[0], True

    def submit_many(self, tenant: str, jobs: Sequence[NewJob]) -> list[JobRecord]:
        """Queue many jobs without idempotency keys in one round trip (batch intake)."""
        if any(new.idempotency_key for new in jobs):
            raise ValueError("submit_many takes jobs without idempotency keys; use submit")
        self.ensure_room(len(jobs))
        return self._write(tenant, [(uuid.uuid4().hex, new) for new in jobs])

    def _write(self, tenant: str, jobs: Sequence[tuple[str, NewJob]]) -> list[JobRecord]:
        created = now()
        records = [
            JobRecord(
                job_id=job_id,
                tenant=tenant,
                pipeline=new.pipeline,
                params=new.params,
                priority=new.priority,
                created_at=created,
                batch_id=new.batch_id,
                labels=dict(new.labels or {}),
                input_name=new.input_name,
            )
            for job_id, new in jobs
        ]
        by_batch: dict[str, list[str]] = {}
        for record in records:
            if record.batch_id:
                by_batch.setdefault(record.batch_id, []).append(record.job_id)
        # One transaction: the jobs become visible to workers and counted together.
        with self.client.pipeline(transaction=True) as pipe:
            for record, (_, new) in zip(records, jobs, strict=True):
                pipe.hset(self.keys.job(record.job_id), mapping=record.to_hash())
                pipe.set(self.keys.job_input(record.job_id), new.input_bytes)
                pipe.xadd(self.keys.stream(new.priority), {"job_id": record.job_id})
            pipe.zadd(self.keys.tenant_jobs(tenant), {r.job_id: r.created_at for r in records})
            for batch_id, job_ids in by_batch.items():
                pipe.hincrby(self.keys.batch(batch_id), "total", len(job_ids))
                pipe.hincrby(self.keys.batch(batch_id), f"count:{QUEUED}", len(job_ids))
                pipe.rpush(self.keys.batch_jobs(batch_id), *job_ids)
            pipe.incrby(self.keys.depth(), len(records))
            pipe.execute()
        return records

    def claim(self, consumer: str, block_ms: int = 1000, prefer_normal: bool = False) -> Delivery | None:
        """The next new job for ``consumer``; None after ``block_ms`` without one.

        High priority is served first unless ``prefer_normal`` is set (the
        worker sets it now and then so normal jobs are never starved).
        """
        order = ("normal", "high") if prefer_normal else ("high", "normal")
        first = self.client.xreadgroup(
            WORKER_GROUP, consumer, {self.keys.stream(order[0]): ">"}, count=1
        )
        if first:
            return self._delivery(order[0], first)
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
            # Redis 7 answers (cursor, entries, deleted ids), Redis 6.2 (cursor, entries).
            claimed = self.client.xautoclaim(
                self.keys.stream(priority), WORKER_GROUP, consumer, min_idle_ms, count=10
            )[1]
            taken += [
                Delivery(priority, message_id, fields[b"job_id"].decode())
                for message_id, fields in claimed
                if fields
            ]
        return taken

    def touch(self, delivery: Delivery, consumer: str) -> None:
        """Reset the idle time of an entry still being worked on, so nobody takes it over."""
        self.client.xclaim(
            self.keys.stream(delivery.priority), WORKER_GROUP, consumer, 0,
            [delivery.message_id], justid=True,
        )

    def ack(self, delivery: Delivery) -> None:
        """Acknowledge and delete a finished entry so the stream stays small."""
        stream = self.keys.stream(delivery.priority)
        with self.client.pipeline(transaction=True) as pipe:
            pipe.xack(stream, WORKER_GROUP, delivery.message_id)
            pipe.xdel(stream, delivery.message_id)
            pipe.delete(self.keys.job_input(delivery.job_id))
            pipe.execute()

    def schedule_retry(self, delivery: Delivery, delay_s: float) -> None:
        """Acknowledge the entry and queue the job again after ``delay_s`` (atomically)."""
        stream = self.keys.stream(delivery.priority)
        member = f"{delivery.priority}|{delivery.job_id}"
        with self.client.pipeline(transaction=True) as pipe:
            pipe.zadd(self.keys.retries(), {member: time.time() + delay_s})
            pipe.xack(stream, WORKER_GROUP, delivery.message_id)
            pipe.xdel(stream, delivery.message_id)
            pipe.execute()

    def release_due_retries(self, limit: int = 100) -> int:
        """Put retries whose delay has passed back on their stream; returns how many."""
        return int(
            self._release_retries(
                keys=[self.keys.retries(), self.keys.stream("high"), self.keys.stream("normal")],
                args=[time.time(), limit],
            )
        )

    def bury(self, delivery: Delivery, error: str) -> None:
        """Copy a job that used up its attempts to the dead-letter stream, then ack it."""
        self.client.xadd(
            self.keys.dead_letters(), {"job_id": delivery.job_id, "error": error[:2000]}
        )
        self.ack(delivery)


def build_queue(settings: Settings) -> JobQueue:
    """The job queue on the Redis, key prefix, depth limit and retention in ``settings``."""
    client = redis.Redis.from_url(settings.redis_url)
    return JobQueue(
        client,
        RedisKeys(settings.key_prefix),
        max_depth=settings.max_queue_depth,
        retention_s=settings.result_ttl_s,
    )
