"""The job queue: Redis Streams per priority with one consumer group of workers."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import redis

from labsight.blobs import BlobStore, blob_store
from labsight.config import Settings
from labsight.errors import ResourceExhausted
from labsight.redis_client import connect_redis
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
    input_blob: str = ""
    """Blob-store reference of the main image when it went to the blob store instead of Redis."""


STAGING_TTL_S = 24 * 3600
"""A submission's inputs are written as they arrive and its jobs queued together at its
end; inputs that a gateway which died mid-stream left behind expire after this long."""


@dataclass
class Staged:
    """The jobs of one submission, their inputs written to Redis, not yet queued (see JobQueue.stage)."""

    tenant: str
    records: list[JobRecord] = field(default_factory=list)
    """New jobs of this submission (inputs written, records not yet), in order."""
    job_ids: list[str] = field(default_factory=list)
    """Every job of the submission in order, earlier ones under a reused idempotency key too."""
    idempotency_keys: list[str] = field(default_factory=list)
    """Redis keys of the idempotency keys this submission reserved."""
    committed: bool = False
    """True once ``commit`` sent the transaction; ``discard`` then deletes nothing."""


class StagingWriter:
    """Stages a submission's jobs chunk by chunk (``JobQueue.stage``) in a thread of its own,
    one chunk at a time and in order, so the caller receives and checks the next chunk while
    Redis takes the last one (sending an input to Redis releases the GIL).

    At most one chunk is being written; ``write`` waits for it first, and raises
    what its write raised.
    """

    def __init__(self, queue: JobQueue, staged: Staged) -> None:
        self._queue = queue
        self._staged = staged
        self._executor: ThreadPoolExecutor | None = None
        self._writing: Future[None] | None = None
        self._chunk: list[NewJob] = []

    def write(self, jobs: list[NewJob]) -> None:
        """Start staging ``jobs`` once the chunk before them is staged."""
        self.wait()
        if not jobs:
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="staging")
        self._chunk = jobs
        self._writing = self._executor.submit(self._queue.stage, self._staged, jobs)

    def wait(self) -> None:
        """Wait until every chunk is staged; raises what staging the last one raised."""
        if self._writing is not None:
            self._writing.result()
            self._writing, self._chunk = None, []

    def finish(self, jobs: list[NewJob]) -> None:
        """Stage the last chunk, ``jobs``, in the calling thread once the chunk before it is
        staged (nothing is left to receive meanwhile; a submission of one chunk starts no
        thread)."""
        self.wait()
        if jobs:  # if this raises, the caller still holds ``jobs`` (their blobs are its to delete)
            self._queue.stage(self._staged, jobs)

    def abandon(self) -> list[NewJob]:
        """After a failure: wait for the chunk being written; returns its jobs if staging them
        failed (their blobs are the caller's to delete), else nothing."""
        try:
            self.wait()
        except Exception:  # noqa: BLE001 - the submission already failed; its cleanup goes on
            failed, self._writing, self._chunk = self._chunk, None, []
            return failed
        return []

    def close(self) -> None:
        """End the writer's thread (after ``wait`` or ``abandon``)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)


def _record(job_id: str, tenant: str, new: NewJob, created: float) -> JobRecord:
    """The queued record of a new job."""
    return JobRecord(
        job_id=job_id,
        tenant=tenant,
        pipeline=new.pipeline,
        params=new.params,
        priority=new.priority,
        created_at=created,
        batch_id=new.batch_id,
        labels=dict(new.labels or {}),
        input_name=new.input_name,
        input_blob=new.input_blob,
    )


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
        blobs: BlobStore | None = None,
    ) -> None:
        self.client = client
        self.blobs = blobs
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
        staged = Staged(tenant)
        self.stage(staged, [new])
        if not staged.records:
            return self.store.load(staged.job_ids[0], tenant), False
        self.commit(staged)
        return staged.records[0], True

    def stage(self, staged: Staged, jobs: Sequence[NewJob]) -> None:
        """Write the inputs of ``jobs`` to Redis as part of ``staged``; their records stay
        in ``staged`` until ``commit`` (the inputs are the bulk, the records a few hundred
        bytes each), so nothing is visible to workers or clients before then.

        A job whose idempotency key was used before is not written: the
        earlier job's id takes its place in ``staged.job_ids``.
        """
        job_ids = self._reserve_idempotency_keys(staged, jobs)
        created = now()
        fresh: list[tuple[JobRecord, bytes]] = []
        for (job_id, is_new), new in zip(job_ids, jobs, strict=True):
            staged.job_ids.append(job_id)
            if is_new:
                fresh.append((_record(job_id, staged.tenant, new, created), new.input_bytes))
            elif new.input_blob:
                self.delete_blob(new.input_blob)  # the earlier job keeps its own input
        with self.client.pipeline(transaction=False) as pipe:
            for record, input_bytes in fresh:
                # A memoryview is sent as it is; bytes would be copied into one command
                # buffer first (hiredis' packer: 4x slower for a 560 kB input).
                pipe.set(self.keys.job_input(record.job_id), memoryview(input_bytes),
                         ex=STAGING_TTL_S)
            pipe.execute()
        staged.records += [record for record, _ in fresh]

    def _reserve_idempotency_keys(
        self, staged: Staged, jobs: Sequence[NewJob]
    ) -> list[tuple[str, bool]]:
        """(job id, whether it is new) per job: a used idempotency key gives its earlier job."""
        reserved = [(uuid.uuid4().hex, True) for _ in jobs]
        keyed = [index for index, new in enumerate(jobs) if new.idempotency_key]
        if not keyed:
            return reserved
        idem_keys = {i: self.keys.idempotency(staged.tenant, jobs[i].idempotency_key) for i in keyed}
        with self.client.pipeline(transaction=False) as pipe:
            for i in keyed:
                pipe.set(idem_keys[i], reserved[i][0], nx=True, ex=STAGING_TTL_S)
            taken = pipe.execute()
        for i, was_set in zip(keyed, taken, strict=True):
            if was_set:
                staged.idempotency_keys.append(idem_keys[i])
            else:
                existing = self.client.get(idem_keys[i])
                if existing is not None:  # else it expired just now: the job stays new
                    reserved[i] = (existing.decode(), False)
        return reserved

    def commit(self, staged: Staged, batch_id: str = "") -> None:
        """Queue every job ``stage`` wrote, in one transaction (all of them or none).

        With ``batch_id`` the jobs join that batch of the tenant (created,
        even with no job, if new).

        Raises
        ------
        ResourceExhausted
            If the jobs do not fit under ``max_depth``; the staged jobs are discarded.
        """
        try:
            self.ensure_room(len(staged.records))
        except ResourceExhausted:
            self.discard(staged)
            raise
        records, tenant = staged.records, staged.tenant
        staged.committed = True
        # One transaction: the jobs become visible to workers and counted together.
        with self.client.pipeline(transaction=True) as pipe:
            for record in records:
                pipe.hset(self.keys.job(record.job_id), mapping=record.to_hash())
                pipe.persist(self.keys.job_input(record.job_id))
                pipe.xadd(self.keys.stream(record.priority), {"job_id": record.job_id})
            for idem_key in staged.idempotency_keys:
                pipe.expire(idem_key, self.idempotency_ttl_s)
            if records:
                pipe.zadd(self.keys.tenant_jobs(tenant), {r.job_id: r.created_at for r in records})
            if batch_id:
                pipe.hsetnx(self.keys.batch(tenant, batch_id), "tenant", tenant)
            if batch_id and records:
                pipe.hincrby(self.keys.batch(tenant, batch_id), "total", len(records))
                pipe.hincrby(self.keys.batch(tenant, batch_id), f"count:{QUEUED}", len(records))
                pipe.rpush(self.keys.batch_jobs(tenant, batch_id), *(r.job_id for r in records))
            pipe.incrby(self.keys.depth(), len(records))
            pipe.execute()

    def discard(self, staged: Staged) -> None:
        """Delete what ``stage`` wrote for a submission that will not be committed."""
        if staged.committed:
            return
        keys = [*staged.idempotency_keys]
        keys += [self.keys.job_input(record.job_id) for record in staged.records]
        for start in range(0, len(keys), 1000):
            self.client.delete(*keys[start : start + 1000])
        for record in staged.records:
            self.delete_blob(record.input_blob)
        staged.records.clear()
        staged.idempotency_keys.clear()

    def claim(self, consumer: str, priority: str, count: int) -> list[Delivery]:
        """Up to ``count`` new jobs of ``priority`` for ``consumer``, without waiting."""
        entries = self.client.xreadgroup(
            WORKER_GROUP, consumer, {self.keys.stream(priority): ">"}, count=count
        )
        return self._deliveries(entries)

    def wait_for_job(self, consumer: str, block_ms: int = 1000) -> list[Delivery]:
        """The next new job of either priority (high first) for ``consumer``, waiting up to
        ``block_ms`` for one; empty if none came."""
        entries = self.client.xreadgroup(
            WORKER_GROUP,
            consumer,
            {self.keys.stream("high"): ">", self.keys.stream("normal"): ">"},
            count=1,
            block=block_ms,
        )
        return self._deliveries(entries)[:1]

    def _deliveries(self, entries: list | None) -> list[Delivery]:
        """Deliveries of XREADGROUP's answer, stream by stream."""
        priority_of = {self.keys.stream(priority): priority for priority in PRIORITIES}
        return [
            Delivery(priority_of[stream.decode()], message_id, fields[b"job_id"].decode())
            for stream, messages in entries or []
            for message_id, fields in messages
        ]

    def reclaim_stale(self, consumer: str, min_idle_ms: int, count: int = 10) -> list[Delivery]:
        """Take over up to ``count`` entries (high priority first) that a worker claimed
        ``min_idle_ms`` ago and never acked."""
        taken: list[Delivery] = []
        for priority in PRIORITIES:
            if len(taken) >= count:
                break
            # Redis 7 answers (cursor, entries, deleted ids), Redis 6.2 (cursor, entries).
            claimed = self.client.xautoclaim(
                self.keys.stream(priority), WORKER_GROUP, consumer, min_idle_ms,
                count=count - len(taken),
            )[1]
            taken += [
                Delivery(priority, message_id, fields[b"job_id"].decode())
                for message_id, fields in claimed
                if fields
            ]
        return taken

    def touch(self, deliveries: Sequence[Delivery], consumer: str) -> None:
        """Reset the idle time of entries still being worked on, so nobody takes them over
        (one round trip for all)."""
        with self.client.pipeline(transaction=False) as pipe:
            for priority in PRIORITIES:
                ids = [d.message_id for d in deliveries if d.priority == priority]
                if ids:
                    pipe.xclaim(self.keys.stream(priority), WORKER_GROUP, consumer, 0, ids,
                                justid=True)
            pipe.execute()

    def ack(
        self, delivery: Delivery, input_blob: str | None = None,
        pipe: redis.client.Pipeline | None = None,
    ) -> None:
        """Acknowledge and delete a finished entry so the stream stays small; the job's
        input (in Redis and the blob store) goes with it, as the job has ended.

        ``input_blob`` is the job's blob reference when the caller has its record
        (None: read it here). With ``pipe`` the commands are queued there and the
        caller deletes the blob once they ran.
        """
        if input_blob is None:
            blob = self.client.hget(self.keys.job(delivery.job_id), "input_blob")
            input_blob = blob.decode() if blob else ""
        stream = self.keys.stream(delivery.priority)
        if pipe is not None:
            pipe.xack(stream, WORKER_GROUP, delivery.message_id)
            pipe.xdel(stream, delivery.message_id)
            pipe.delete(self.keys.job_input(delivery.job_id))
            return
        with self.client.pipeline(transaction=True) as own:
            self.ack(delivery, input_blob, own)
            own.execute()
        self.delete_blob(input_blob)

    def delete_blob(self, reference: str) -> None:
        """Remove a job input from the blob store ("" : none)."""
        if reference and self.blobs is not None:
            self.blobs.delete(reference)

    def schedule_retry(self, delivery: Delivery, delay_s: float) -> None:
        """Acknowledge the entry and queue the job again after ``delay_s`` (atomically)."""
        stream = self.keys.stream(delivery.priority)
        member = f"{delivery.priority}|{delivery.job_id}"
        with self.client.pipeline(transaction=True) as pipe:
            pipe.zadd(self.keys.retries(), {member: time.time() + delay_s})
            pipe.xack(stream, WORKER_GROUP, delivery.message_id)
            pipe.xdel(stream, delivery.message_id)
            pipe.execute()

    def release(self, deliveries: Sequence[Delivery]) -> None:
        """Give entries claimed but never started back to the stream, at its end, for any
        worker (atomically: each is acknowledged and added again)."""
        if not deliveries:
            return
        with self.client.pipeline(transaction=True) as pipe:
            for delivery in deliveries:
                stream = self.keys.stream(delivery.priority)
                pipe.xack(stream, WORKER_GROUP, delivery.message_id)
                pipe.xdel(stream, delivery.message_id)
                pipe.xadd(stream, {"job_id": delivery.job_id})
            pipe.execute()

    def release_due_retries(self, limit: int = 100) -> int:
        """Put retries whose delay has passed back on their stream; returns how many."""
        return int(
            self._release_retries(
                keys=[self.keys.retries(), self.keys.stream("high"), self.keys.stream("normal")],
                args=[time.time(), limit],
            )
        )

    def bury(self, delivery: Delivery, error: str, input_blob: str | None = None) -> None:
        """Copy a job that used up its attempts to the dead-letter stream, then ack it."""
        self.client.xadd(
            self.keys.dead_letters(), {"job_id": delivery.job_id, "error": error[:2000]}
        )
        self.ack(delivery, input_blob)


def build_queue(settings: Settings, threads: int = 0) -> JobQueue:
    """The job queue on the Redis, key prefix, depth limit and retention in ``settings``,
    with a connection for each of ``threads`` callers (at least ``settings.max_workers``)."""
    client = connect_redis(settings.redis_url, max(threads, settings.max_workers))
    return JobQueue(
        client,
        RedisKeys(settings.key_prefix),
        max_depth=settings.max_queue_depth,
        retention_s=settings.result_ttl_s,
        blobs=blob_store(),
    )
