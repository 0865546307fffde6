"""The job record (one Redis hash per job) and the only place its status changes."""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

import redis
from google.protobuf.timestamp_pb2 import Timestamp

from labsight.errors import NotFound, echo
from labsight.v1 import gateway_pb2 as pb
from services.gateway.keys import RedisKeys

QUEUED, RUNNING, DONE, FAILED, CANCELLED, DEAD = (
    "queued", "running", "done", "failed", "cancelled", "dead"
)
ACTIVE_STATUSES = (QUEUED, RUNNING)
TERMINAL_STATUSES = (DONE, FAILED, CANCELLED, DEAD)

_STATUS_TO_PROTO = {
    QUEUED: pb.JOB_STATUS_QUEUED,
    RUNNING: pb.JOB_STATUS_RUNNING,
    DONE: pb.JOB_STATUS_DONE,
    FAILED: pb.JOB_STATUS_FAILED,
    CANCELLED: pb.JOB_STATUS_CANCELLED,
    DEAD: pb.JOB_STATUS_DEAD,
}
PROTO_TO_STATUS = {code: name for name, code in _STATUS_TO_PROTO.items()}


@dataclass
class JobRecord:
    """A job as stored in its Redis hash."""

    job_id: str
    tenant: str
    pipeline: str
    params: dict[str, str] = field(default_factory=dict)
    status: str = QUEUED
    priority: str = "normal"
    progress: float = 0.0
    progress_message: str = ""
    progress_rate: float = 0.0
    progress_unit: str = ""
    eta_seconds: float = 0.0
    attempts: int = 0
    error: str = ""
    created_at: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0
    batch_id: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    input_name: str = ""
    warnings: list[str] = field(default_factory=list)
    input_blob: str = ""
    """Blob-store reference of the job's main image when it was too large for Redis."""

    @property
    def is_terminal(self) -> bool:
        """True once the job is done, failed, cancelled or dead."""
        return self.status in TERMINAL_STATUSES

    def to_hash(self) -> dict[str, str]:
        """Field/value pairs for HSET."""
        return {
            "job_id": self.job_id,
            "tenant": self.tenant,
            "pipeline": self.pipeline,
            "params": json.dumps(self.params, sort_keys=True),
            "status": self.status,
            "priority": self.priority,
            "progress": repr(self.progress),
            "progress_message": self.progress_message,
            "progress_rate": repr(self.progress_rate),
            "progress_unit": self.progress_unit,
            "eta_seconds": repr(self.eta_seconds),
            "attempts": str(self.attempts),
            "error": self.error,
            "created_at": repr(self.created_at),
            "started_at": repr(self.started_at),
            "finished_at": repr(self.finished_at),
            "batch_id": self.batch_id,
            "labels": json.dumps(self.labels, sort_keys=True),
            "input_name": self.input_name,
            "warnings": json.dumps(self.warnings),
            "input_blob": self.input_blob,
        }

    @classmethod
    def from_hash(cls, raw: dict[bytes, bytes]) -> JobRecord:
        """Rebuild a record from HGETALL output."""
        text = {k.decode(): v.decode() for k, v in raw.items()}
        return cls(
            job_id=text["job_id"],
            tenant=text["tenant"],
            pipeline=text["pipeline"],
            params=json.loads(text.get("params", "{}")),
            status=text["status"],
            priority=text.get("priority", "normal"),
            progress=float(text.get("progress", 0)),
            progress_message=text.get("progress_message", ""),
            progress_rate=float(text.get("progress_rate", 0)),
            progress_unit=text.get("progress_unit", ""),
            eta_seconds=float(text.get("eta_seconds", 0)),
            attempts=int(text.get("attempts", 0)),
            error=text.get("error", ""),
            created_at=float(text.get("created_at", 0)),
            started_at=float(text.get("started_at", 0)),
            finished_at=float(text.get("finished_at", 0)),
            batch_id=text.get("batch_id", ""),
            labels=json.loads(text.get("labels", "{}")),
            input_name=text.get("input_name", ""),
            warnings=json.loads(text.get("warnings", "[]")),
            input_blob=text.get("input_blob", ""),
        )

    def to_proto(self) -> pb.Job:
        """The public Job message."""
        job = pb.Job(
            job_id=self.job_id,
            batch_id=self.batch_id,
            pipeline=self.pipeline,
            params=self.params,
            status=_STATUS_TO_PROTO[self.status],
            progress=self.progress,
            progress_message=self.progress_message,
            progress_rate=self.progress_rate,
            progress_unit=self.progress_unit,
            # An estimate only means something while the job runs.
            eta_seconds=self.eta_seconds if self.status == RUNNING else 0.0,
            attempts=self.attempts,
            error=self.error,
            priority=pb.PRIORITY_HIGH if self.priority == "high" else pb.PRIORITY_NORMAL,
            labels=self.labels,
            input_name=self.input_name,
            warnings=self.warnings,
        )
        for name in ("created_at", "started_at", "finished_at"):
            seconds = getattr(self, name)
            if seconds:
                stamp = Timestamp()
                stamp.FromNanoseconds(int(seconds * 1e9))
                getattr(job, name).CopyFrom(stamp)
        return job


# Atomic status change: applies only from an allowed status, keeps the queue
# depth and the batch counts in step, sets the record's expiry once it ended,
# and announces the change (on the batch's channel unless ARGV[4] is ''). Returns 1 if
# applied, 0 if the job was in another status, -1 if the job does not exist.
_TRANSITION_LUA = """
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return -1 end
local allowed = false
for s in string.gmatch(ARGV[1], '[^,]+') do
  if s == current then allowed = true end
end
if not allowed then return 0 end
local fields = {'status', ARGV[2]}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
if ARGV[3] == '1' then
  redis.call('DECR', KEYS[2])
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[6]))
end
if KEYS[3] and current ~= ARGV[2] then
  redis.call('HINCRBY', KEYS[3], 'count:' .. current, -1)
  redis.call('HINCRBY', KEYS[3], 'count:' .. ARGV[2], 1)
  if ARGV[4] ~= '' then redis.call('PUBLISH', ARGV[4], ARGV[2]) end
end
redis.call('PUBLISH', ARGV[5], ARGV[2])
return 1
"""


# Progress of a running job, unless it was cancelled meanwhile: one round trip for the
# check and the write. ARGV: the announcement channel, then field/value pairs. Returns the
# job's status ('' if it does not exist); the fields are written unless it is 'cancelled'.
_PROGRESS_LUA = """
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return '' end
if current == 'cancelled' then return current end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PUBLISH', ARGV[1], 'progress')
return current
"""


class JobStore:
    """Reads job records and changes their status, atomically, in Redis."""

    def __init__(self, client: redis.Redis, keys: RedisKeys, ended_ttl_s: int = 7 * 24 * 3600) -> None:
        self.client = client
        self.keys = keys
        self.ended_ttl_s = ended_ttl_s
        self._transition = client.register_script(_TRANSITION_LUA)
        self._progress = client.register_script(_PROGRESS_LUA)

    def load(self, job_id: str, tenant: str | None = None) -> JobRecord:
        """The job's record; NotFound if unknown or owned by another tenant."""
        raw = self.client.hgetall(self.keys.job(job_id)) if job_id else {}
        if not raw:
            raise NotFound(f"job_id: no job {echo(job_id)}")
        record = JobRecord.from_hash(raw)
        if tenant is not None and record.tenant != tenant:
            raise NotFound(f"job_id: no job {echo(job_id)}")
        return record

    def load_with_inputs(self, job_ids: list[str]) -> list[tuple[JobRecord | None, bytes | None]]:
        """Records and serialized inputs of many jobs in one round trip (None where gone)."""
        with self.client.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(self.keys.job(job_id))
                pipe.get(self.keys.job_input(job_id))
            replies = pipe.execute()
        return [
            (JobRecord.from_hash(raw) if raw else None, raw_input)
            for raw, raw_input in zip(replies[::2], replies[1::2], strict=True)
        ]

    def load_many(self, job_ids: list[str]) -> list[JobRecord | None]:
        """Records of many jobs in one round trip (None where a job no longer exists)."""
        with self.client.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(self.keys.job(job_id))
            raws = pipe.execute()
        return [JobRecord.from_hash(raw) if raw else None for raw in raws]

    def transition(
        self, job: JobRecord, allowed_from: tuple[str, ...], to: str,
        pipe: redis.client.Pipeline | None = None, announce_batch: bool = True, **fields: Any,
    ) -> bool:
        """Set status ``to`` (and ``fields``) if the job is in ``allowed_from``; True if applied.

        The check and the change are one Lua script, so two workers finishing
        the same job make exactly one ``done`` transition. With ``pipe`` the
        script is queued there (returns False; the pipeline's reply is 1 if applied).
        The change is announced on the job's channel, and on its batch's unless
        ``announce_batch`` is False: a caller changing many jobs of a batch in one
        pipeline announces the last one only (batch watchers re-read the counts).
        """
        if any(status in TERMINAL_STATUSES for status in allowed_from):
            raise ValueError("a terminal status never changes")
        pairs: list[str] = []
        for name, value in fields.items():
            pairs += [name, value if isinstance(value, str) else repr(value)]
        keys = [self.keys.job(job.job_id), self.keys.depth()]
        batch_channel = ""
        if job.batch_id:
            keys.append(self.keys.batch(job.tenant, job.batch_id))
            if announce_batch:
                batch_channel = self.keys.batch_events(job.tenant, job.batch_id)
        args = [
            ",".join(allowed_from),
            to,
            "1" if to in TERMINAL_STATUSES else "0",
            batch_channel,
            self.keys.job_events(job.job_id),
            self.ended_ttl_s,
            *pairs,
        ]
        if pipe is not None:
            # EVAL, not the registered script: a pipeline with scripts checks them first (one
            # more round trip each time), and EVAL survives a restarted Redis's empty cache.
            pipe.eval(_TRANSITION_LUA, len(keys), *keys, *args)
            return False
        return self._transition(keys=keys, args=args) == 1

    def count_attempt(self, job_id: str, pipe: redis.client.Pipeline | None = None) -> int:
        """Add one to the job's attempts and return the new count (0 when queued in ``pipe``)."""
        if pipe is not None:
            pipe.hincrby(self.keys.job(job_id), "attempts", 1)
            return 0
        return int(self.client.hincrby(self.keys.job(job_id), "attempts", 1))

    def status(self, job_id: str) -> str:
        """The job's current status ("" if the job does not exist)."""
        raw = self.client.hget(self.keys.job(job_id), "status")
        return raw.decode() if raw else ""

    def statuses(self, job_ids: list[str]) -> list[str]:
        """Current statuses of many jobs in one round trip ("" where a job does not exist)."""
        with self.client.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hget(self.keys.job(job_id), "status")
            return [raw.decode() if raw else "" for raw in pipe.execute()]

    def set_progress(
        self, job_id: str, progress: float, message: str,
        rate: float = 0.0, unit: str = "", eta_seconds: float = 0.0,
    ) -> str:
        """Record progress of a job (and the rate of its step in ``unit`` per second, and
        its estimated seconds left, where known) and announce it, unless the job was
        cancelled meanwhile; one round trip. Returns the job's status ("" if it does
        not exist), read in the same step."""
        fields = {"progress": repr(progress), "progress_message": message,
                  "progress_rate": repr(rate), "progress_unit": unit,
                  "eta_seconds": repr(eta_seconds)}
        status = self._progress(keys=[self.keys.job(job_id)],
                                args=[self.keys.job_events(job_id), *itertools.chain(*fields.items())])
        return status.decode() if isinstance(status, bytes) else str(status or "")


def now() -> float:
    """Wall-clock seconds since the epoch, as stored in job records."""
    return time.time()
