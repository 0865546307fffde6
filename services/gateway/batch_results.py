"""A batch's jobs with their results as one stream (GetBatchResults): records read a page at a
time, results in groups of bounded size, each result cut into chunks, consecutive chunks packed
into messages of bounded size; with ``follow``, each job once it has ended."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Iterator

import redis

from labsight.stored_results import SIZE_HEAD_BYTES, plain_size, unpack_result
from labsight.v1 import gateway_pb2 as pb
from services.gateway.jobs import ACTIVE_STATUSES, DONE, JobRecord, JobStore
from services.gateway.keys import RedisKeys
from services.gateway.watch import POLL_INTERVAL_S, Caller

PAGE_JOBS = 256
"""Job records read per round trip."""

FOLLOW_WINDOW = 32
"""Jobs whose statuses a following stream reads per round trip, from the first not yet sent
(doubled, up to PAGE_JOBS, while whole windows have ended, as in a batch that already has):
jobs end about in submission order, so those further on are mostly still active. Reading
every record of the rest on each change instead took the gateway 0.49 ms CPU per cell of
bench/classifier.py's hpa-cells batch (96 jobs, 2026-12-06), these windows 0.38, and one
fetch after the batch ended 0.28-0.32."""

GROUP_BYTES = 8 * 1024 * 1024
"""Result bytes read per round trip at most (a larger result is read alone): the gateway
holds one group in memory while the stream sends it."""

EXPIRED = "the result has expired"
"""``result_error`` of a done job whose result is gone."""


def batch_result_messages(
    client: redis.Redis, store: JobStore, keys: RedisKeys, tenant: str, batch_id: str, chunk_bytes: int
) -> Iterator[pb.BatchResults]:
    """Every job of ``tenant``'s batch in submission order, each done job followed by its
    serialized result in chunks of at most ``chunk_bytes``; consecutive chunks share a
    message up to about ``chunk_bytes``.

    The caller checks that the batch is the tenant's. Jobs gone from Redis (expired
    records) are left out; a done job whose result expired comes with ``result_error``.
    """
    return _messages(_chunks(client, store, keys, tenant, batch_id, chunk_bytes), chunk_bytes)


def followed_result_messages(
    client: redis.Redis, store: JobStore, keys: RedisKeys, tenant: str, batch_id: str,
    chunk_bytes: int, changed: threading.Event, finished: Callable[[], bool], caller: Caller,
) -> Iterator[pb.BatchResults]:
    """As :func:`batch_result_messages`, each job sent once it has ended (still in submission
    order): until every job of the batch has ended (``finished()``) or the caller left.

    ``changed`` is set when a job of the batch ends (the caller subscribed it to the batch's
    channel before this starts, for the ended statuses) and when the call ends; the statuses of the
    next FOLLOW_WINDOW jobs are read again then, and at least every POLL_INTERVAL_S, and the
    records of those that ended before the first still active. The messages of the jobs
    that ended are sent before each wait.
    """
    caller.add_callback(changed.set)  # a caller that left frees the stream's slot at once
    jobs_key = keys.batch_jobs(tenant, batch_id)
    offset = 0
    window = FOLLOW_WINDOW
    while caller.is_active():
        changed.clear()  # before the reads: a change during them wakes the wait below
        all_ended = finished()  # read before the list: every job listed by then has ended
        ids = [raw.decode() for raw in client.lrange(jobs_key, offset, offset + window - 1)]
        ended = list(itertools.takewhile(lambda status: status not in ACTIVE_STATUSES,
                                         store.statuses(ids)))
        offset += len(ended)
        mine = [record for record in store.load_many(ids[:len(ended)])
                if record is not None and record.tenant == tenant] if ended else []
        if mine:
            yield from _messages(itertools.chain.from_iterable(
                _group_chunks(client, keys, group, chunk_bytes)
                for group in _groups(client, keys, mine)), chunk_bytes)
        if len(ended) == len(ids) == window:  # the whole window ended: read on at once, further
            window = min(2 * window, PAGE_JOBS)
            continue
        if len(ended) == len(ids) and all_ended:
            return
        window = FOLLOW_WINDOW
        changed.wait(POLL_INTERVAL_S)


def _messages(chunks: Iterable[Chunk], chunk_bytes: int) -> Iterator[pb.BatchResults]:
    """Consecutive chunks packed into messages of about ``chunk_bytes`` at most."""
    message = pb.BatchResults()
    size = 0
    for job, data, total, error in chunks:
        if message.chunks and size + len(data) > chunk_bytes:
            yield message
            message, size = pb.BatchResults(), 0
        chunk = message.chunks.add(data=data, total_bytes=total, result_error=error)
        if job is not None:
            chunk.job.CopyFrom(job)
        size += len(data) + 256  # a record and the framing: a few hundred bytes
    if message.chunks:
        yield message


Chunk = tuple[pb.Job | None, bytes, int, str]
"""(the job's record on its first chunk, the result's next bytes, its total size, result_error)."""


def _chunks(
    client: redis.Redis, store: JobStore, keys: RedisKeys, tenant: str, batch_id: str, chunk_bytes: int
) -> Iterator[Chunk]:
    """The stream's chunks in order, reading a page of records and a group of results at a time."""
    jobs_key = keys.batch_jobs(tenant, batch_id)
    offset = 0
    while True:
        ids = [raw.decode() for raw in client.lrange(jobs_key, offset, offset + PAGE_JOBS - 1)]
        if not ids:
            return
        offset += len(ids)
        records = [record for record in store.load_many(ids)
                   if record is not None and record.tenant == tenant]
        for group in _groups(client, keys, records):
            yield from _group_chunks(client, keys, group, chunk_bytes)


def _groups(client: redis.Redis, keys: RedisKeys, records: list[JobRecord]) -> Iterator[list[JobRecord]]:
    """The records in order, cut where the done jobs' results would pass GROUP_BYTES."""
    done = [record for record in records if record.status == DONE]
    with client.pipeline(transaction=False) as pipe:
        for record in done:
            pipe.strlen(keys.job_result(record.job_id))
            pipe.getrange(keys.job_result(record.job_id), 0, SIZE_HEAD_BYTES - 1)
        replies = pipe.execute()
    sizes = {record.job_id: plain_size(head, kept_bytes) for record, kept_bytes, head
             in zip(done, replies[::2], replies[1::2], strict=True)}
    group: list[JobRecord] = []
    group_bytes = 0
    for record in records:
        size = sizes.get(record.job_id, 0)
        if group and group_bytes + size > GROUP_BYTES:
            yield group
            group, group_bytes = [], 0
        group.append(record)
        group_bytes += size
    if group:
        yield group


def _group_chunks(
    client: redis.Redis, keys: RedisKeys, group: list[JobRecord], chunk_bytes: int
) -> Iterator[Chunk]:
    """The chunks of one group: each record, with its result's bytes if it is done."""
    done = [record.job_id for record in group if record.status == DONE]
    results = dict(zip(done, client.mget([keys.job_result(job_id) for job_id in done]), strict=True)
                   ) if done else {}
    for record in group:
        job = record.to_proto()
        if record.status != DONE:
            yield job, b"", 0, ""
            continue
        kept = results[record.job_id]
        if kept is None:
            yield job, b"", 0, EXPIRED
            continue
        data = unpack_result(kept)
        total = len(data)
        for start in range(0, max(total, 1), chunk_bytes):
            yield job if start == 0 else None, data[start : start + chunk_bytes], total, ""
