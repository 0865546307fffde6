"""Thin gRPC servicer of the GatewayService: validates, queues and reports jobs."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc

from labsight.blobs import BlobStore
from labsight.catalog import GATEWAY
from labsight.config import DEFAULT_MAX_MESSAGE_BYTES, Settings, env_int
from labsight.errors import (
    Cancelled,
    FailedPrecondition,
    InvalidArgument,
    LabSightError,
    NotFound,
    ResourceExhausted,
    Unavailable,
    echo,
)
from labsight.images import image_info, max_blob_image_bytes, max_image_bytes
from labsight.redis_client import redis_probe
from labsight.runtime.readiness import ReadinessProbe
from labsight.stored_results import unpack_result
from labsight.tensor_wire import DetachingParser
from labsight.tensors import from_tensor
from labsight.v1 import features_pb2, tensor_pb2
from labsight.v1 import gateway_pb2 as pb
from labsight.v1 import gateway_pb2_grpc as pb_grpc
from labsight.web.server import serve_web_page
from services.gateway.auth import BearerAuth
from services.gateway.batch_results import batch_result_messages, followed_result_messages
from services.gateway.ids import check_id, check_optional_id
from services.gateway.jobs import ACTIVE_STATUSES, CANCELLED, DONE, PROTO_TO_STATUS, TERMINAL_STATUSES, now
from services.gateway.pipelines import get_pipeline, pipeline_infos
from services.gateway.pipelines.models import MODEL_CATALOG, connect_model_catalog
from services.gateway.queue import JobQueue, NewJob, Staged, StagingWriter, build_queue
from services.gateway.watch import EventFanout, watch_batch, watch_job

log = logging.getLogger(__name__)

RESULT_CHUNK_BYTES = 1024 * 1024
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
"""Larger page sizes are served as this many jobs (and a next_page_token), so one answer
stays far below the message limit whatever a client asks for."""
BATCH_WRITE_SIZE = 256
BATCH_WRITE_BYTES = 4 * 1024 * 1024
"""A batch stream's jobs are written to Redis every BATCH_WRITE_SIZE jobs or
BATCH_WRITE_BYTES of input, whichever comes first; they become visible to workers
together, once the whole stream was accepted."""
CANCEL_GRACE_S = 0.05
"""How long a finished client stream waits for a cancel that may have cut it (see
_ensure_client_waits) before its jobs are queued."""
MAX_PAGE_TOKEN = 2**62
"""Page tokens are offsets into a list; beyond this they cannot be one (Redis takes 64-bit)."""
DEFAULT_TENANT = "default"
BLOB_THRESHOLD_ENV = "LABSIGHT_BLOB_THRESHOLD_BYTES"
DEFAULT_BLOB_THRESHOLD_BYTES = 16 * 1024 * 1024
"""Main images larger than this go to the blob store and jobs carry a reference (Redis keeps
only what is small)."""

_JOB_INPUT_PARSER = DetachingParser(pb.JobInput)

TenantResolver = Callable[[grpc.ServicerContext], str]
"""Finds the caller's tenant from call metadata (raises Unauthenticated if it cannot)."""


def open_tenant(context: grpc.ServicerContext) -> str:
    """Tenant resolver of a gateway without tokens: every caller is the default tenant."""
    return DEFAULT_TENANT


def new_job_from_request(request: pb.SubmitJobRequest, batch_id: str = "") -> NewJob:
    """Validate a submission against its pipeline and turn it into a NewJob.

    A main image the gateway put in the blob store (``input.image.blob``) is
    checked there by its header and travels as the job's ``input_blob``.
    """
    check_optional_id("idempotency_key", request.idempotency_key)
    pipeline = get_pipeline(request.pipeline)
    params = pipeline.validate(dict(request.params), request.input)
    input_bytes = request.input.SerializeToString()
    if request.input.tensors:  # no second parse of the many inputs without tensors
        check_tensor_sizes(input_bytes)
    return NewJob(
        input_blob=request.input.image.blob,
        pipeline=pipeline.name,
        params=params,
        input_bytes=input_bytes,
        input_name=request.input.image.name,
        priority="high" if request.priority == pb.PRIORITY_HIGH else "normal",
        labels=dict(request.labels),
        idempotency_key=request.idempotency_key,
        batch_id=batch_id,
    )


def check_tensor_sizes(input_bytes: bytes) -> None:
    """InvalidArgument naming the first ``input.tensors[role]`` whose data does not match its
    shape and dtype, in a job's serialized input. The input is parsed with its big tensor data
    left where it is (:mod:`labsight.tensor_wire`), so no pixel is copied: pipelines check their
    tensors' headers at submit, and this checks the data once for all of them."""
    detached = _JOB_INPUT_PARSER.parse(input_bytes)  # its tensors' data resolve while it lives
    for role, tensor in detached.message.tensors.items():
        from_tensor(tensor, f"input.tensors[{role}]")


def _batch_job(request: pb.SubmitJobRequest, position: int, batch_id: str) -> NewJob:
    """``new_job_from_request`` for the job at ``position`` of a batch; a refusal names
    the job (its position, image name or idempotency key) and says nothing was queued."""
    try:
        return new_job_from_request(request, batch_id)
    except (LabSightError, ValueError) as error:
        named = [f"jobs[{position}]"]
        if request.input.image.name:
            named.append(f"image {echo(request.input.image.name)}")
        if request.idempotency_key:
            named.append(f"idempotency_key {echo(request.idempotency_key)}")
        refusal = type(error) if isinstance(error, LabSightError) else InvalidArgument
        raise refusal(
            f"{', '.join(named)} of batch {batch_id}: {error}; nothing of this batch was queued"
        ) from None


def _watch_for_cancel(context: grpc.ServicerContext) -> threading.Event:
    """An event set once the call ends (for a client stream before the answer: a cancel)."""
    ended = threading.Event()
    if not context.add_callback(ended.set):
        ended.set()
    return ended


def _ensure_client_waits(
    context: grpc.ServicerContext, ended: threading.Event, stream_ended: float | None = None,
    whole: bool = False,
) -> None:
    """Cancelled if the client went away, checked just before queueing.

    grpc ends a cancelled client stream's iterator as if the client had sent
    its last message and records the cancel a moment later, so without this
    a handler would queue a cut upload or the first part of a batch that the
    client believes refused and sends again. CANCEL_GRACE_S gives the cancel
    that moment, counted from ``stream_ended`` (``time.monotonic()`` when the
    iterator ended; default: now), so work done since (the last writes to
    Redis) is part of the wait. A stream known to have ``whole``ly arrived (its
    header declared the jobs it carried, and all came) waits for nothing: only a
    client already gone is refused.
    """
    waited = 0.0 if stream_ended is None else time.monotonic() - stream_ended
    grace = 0.0 if whole else max(0.0, CANCEL_GRACE_S - waited)
    if ended.wait(grace) or not context.is_active():
        raise Cancelled("the client cancelled the call before its jobs were queued; nothing was queued")


def watch_stream_limit(grpc_threads: int) -> int:
    """Watch streams a gateway with ``grpc_threads`` handler threads allows at once.

    Each open stream holds a thread; the rest (an eighth, at least 4) stay free for
    submissions and queries, so watchers can never starve them.
    """
    return max(1, grpc_threads - max(4, grpc_threads // 8))


class GatewayServicer(pb_grpc.GatewayServiceServicer):
    """The public job API over one Redis job queue."""

    def __init__(
        self,
        queue: JobQueue,
        tenant_of: TenantResolver = open_tenant,
        max_upload_bytes: int = 2 * 1024**3,
        max_watch_streams: int = watch_stream_limit(GATEWAY.grpc_threads),
        blob_threshold_bytes: int = DEFAULT_BLOB_THRESHOLD_BYTES,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.queue = queue
        self.blobs: BlobStore | None = queue.blobs
        self.blob_threshold_bytes = blob_threshold_bytes
        self.max_message_bytes = max_message_bytes
        self.store = queue.store
        self.keys = queue.keys
        self.tenant_of = tenant_of
        self.max_upload_bytes = max_upload_bytes
        self.max_watch_streams = max_watch_streams
        self._watch_slots = threading.BoundedSemaphore(max_watch_streams)
        self.events = EventFanout(queue.client)

    @contextlib.contextmanager
    def _watch_slot(self) -> Iterator[None]:
        """Hold one of the watch-stream slots; RESOURCE_EXHAUSTED when all are taken."""
        if not self._watch_slots.acquire(blocking=False):
            raise ResourceExhausted(
                f"watch streams: all {self.max_watch_streams} are open; watch a whole batch "
                "with WatchBatch, poll GetJob, or retry later"
            )
        try:
            yield
        finally:
            self._watch_slots.release()

    def SubmitJob(self, request: pb.SubmitJobRequest, context: grpc.ServicerContext) -> pb.Job:
        """Validate and queue one job."""
        tenant = self.tenant_of(context)
        if not request.idempotency_key:
            self.queue.ensure_room(1)  # refuse before spending CPU on decoding the image
        _refuse_client_blobs(request.input)
        data = request.input.image.encoded.data
        if self.goes_to_blob_store(request.input.image):
            return self._submit_blob(tenant, request, [data], None)
        record, _ = self.queue.submit(tenant, new_job_from_request(request))
        return record.to_proto()

    def goes_to_blob_store(self, image: tensor_pb2.Image) -> bool:
        """Whether an encoded main image is kept in the blob store rather than in Redis: its file
        is over the blob threshold, or its header declares more decoded bytes than an image sent
        whole may have (a well-compressed slide; pipelines that read blobs can still run it)."""
        if self.blobs is None or image.WhichOneof("source") != "encoded":
            return False
        if len(image.encoded.data) > self.blob_threshold_bytes:
            return True
        try:
            declared = image_info(image, "input.image", max_blob_image_bytes()).decode_bytes
        except InvalidArgument:
            return False  # the job's validation says what is wrong with it
        return declared > max_image_bytes()

    def _submit_blob(
        self, tenant: str, header: pb.SubmitJobRequest, chunks: list[bytes] | Iterator[bytes],
        ended: threading.Event | None, context: grpc.ServicerContext | None = None,
    ) -> pb.Job:
        """Queue a job whose main image (``chunks``) goes to the blob store, not to Redis;
        the blob is removed again if the job is refused, cut or a duplicate."""
        assert self.blobs is not None
        with self.blobs.writer(self.max_upload_bytes) as writer:
            for chunk in chunks:
                writer.write(chunk)
        reference = writer.info().reference
        try:
            request = pb.SubmitJobRequest()
            request.CopyFrom(header)
            request.input.image.blob = reference
            new = new_job_from_request(request)
            self._check_blob_fits(request.input, new, writer.size)
            if ended is not None and context is not None:
                _ensure_client_waits(context, ended)
            record, _ = self.queue.submit(tenant, new)
        except BaseException:
            self.blobs.delete(reference)
            raise
        return record.to_proto()

    def _check_blob_fits(self, job_input: pb.JobInput, new: NewJob, size: int) -> None:
        """Refuse a blob a pipeline would have to send whole to a service beyond the message limit."""
        if get_pipeline(new.pipeline).keeps_blob_reference(job_input, new.params):
            return
        if size > self.max_message_bytes * 0.9:
            raise ResourceExhausted(
                f"input.image: {size} bytes; pipeline {new.pipeline!r} sends the image whole to a "
                f"service, and that is over 90% of the message limit of {self.max_message_bytes} "
                "bytes (raise LABSIGHT_MAX_MESSAGE_BYTES on the gateway, workers and services)"
            )

    def UploadJob(
        self, request_iterator: Iterator[pb.UploadJobRequest], context: grpc.ServicerContext
    ) -> pb.Job:
        """Queue one job whose encoded image arrives in chunks after the header."""
        tenant = self.tenant_of(context)
        ended = _watch_for_cancel(context)
        header: pb.SubmitJobRequest | None = None
        chunks: list[bytes] = []
        size = 0
        messages = iter(request_iterator)
        for message in messages:
            if message.WhichOneof("part") == "job":
                if header is not None:
                    raise InvalidArgument("job: the header must be sent exactly once, first")
                header = message.job
                _refuse_client_blobs(header.input)
                continue
            if header is None:
                raise InvalidArgument("job: the first message must carry the job header")
            size += len(message.image_chunk)
            if size > self.max_upload_bytes:
                raise InvalidArgument(
                    f"image_chunk: upload exceeds the limit of {self.max_upload_bytes} bytes"
                )
            chunks.append(message.image_chunk)
            if self.blobs is not None and size > self.blob_threshold_bytes:
                # The rest streams to the blob store: the gateway never holds a whole slide.
                return self._submit_blob(
                    tenant, header, _blob_chunks(chunks, messages), ended, context
                )
        stream_ended = time.monotonic()
        if header is None:
            raise InvalidArgument("job: the stream carried no job header")
        request = pb.SubmitJobRequest()
        request.CopyFrom(header)
        request.input.image.encoded.data = b"".join(chunks)
        if self.goes_to_blob_store(request.input.image):
            return self._submit_blob(tenant, header, chunks, ended, context)
        new = new_job_from_request(request)
        _ensure_client_waits(context, ended, stream_ended)
        record, _ = self.queue.submit(tenant, new)
        return record.to_proto()

    def SubmitBatch(
        self, request_iterator: Iterator[pb.SubmitBatchRequest], context: grpc.ServicerContext
    ) -> pb.SubmitBatchResponse:
        """Queue a stream of jobs under one batch id: all of them, or none if one is refused.

        Jobs are validated and written to Redis in chunks as they arrive, and
        queued together once the stream ended, so a client that retries a
        refused batch never duplicates the jobs before the bad one.
        """
        tenant = self.tenant_of(context)
        batch_id = ""
        declared = 0  # header.job_count: 0 when the client did not say
        staged = Staged(tenant)
        ended = _watch_for_cancel(context)
        pending: list[NewJob] = []
        pending_bytes = 0
        seen = 0
        writer = StagingWriter(self.queue, staged)

        def write_pending() -> None:
            nonlocal pending, pending_bytes
            writer.write(pending)  # written while the next jobs arrive and are checked
            pending, pending_bytes = [], 0

        def nothing_queued(error: ResourceExhausted) -> ResourceExhausted:
            return ResourceExhausted(f"{error}; nothing of batch {batch_id} was queued")

        def ensure_room(wanted: int) -> None:
            try:
                self.queue.ensure_room(wanted)
            except ResourceExhausted as error:
                raise nothing_queued(error) from None

        try:
            for index, message in enumerate(request_iterator):
                part = message.WhichOneof("part")
                if part == "header":
                    if index != 0:
                        raise InvalidArgument("header: the batch header must be the first message")
                    batch_id = (check_optional_id("header.batch_id", message.header.batch_id)
                                or uuid.uuid4().hex)
                    declared = _declared_job_count(message.header.job_count)
                    if declared:
                        ensure_room(declared)  # before any image arrives
                    continue
                batch_id = batch_id or uuid.uuid4().hex
                requests = message.jobs.jobs if part == "jobs" else [message.job]
                if not declared:  # a declared count was checked at the header
                    ensure_room(seen + len(requests))  # refuse before spending CPU on the images
                for position, request in enumerate(requests, start=seen):
                    pending.append(self._batch_job_input(request, position, batch_id))
                    pending_bytes += len(pending[-1].input_bytes)
                    if len(pending) >= BATCH_WRITE_SIZE or pending_bytes >= BATCH_WRITE_BYTES:
                        write_pending()
                seen += len(requests)
                if declared and seen > declared:
                    raise _job_count_refusal(declared, seen, batch_id)
            stream_ended = time.monotonic()
            batch_id = batch_id or uuid.uuid4().hex
            if declared and seen != declared:
                raise _job_count_refusal(declared, seen, batch_id)
            writer.finish(pending)
            pending = []
            _ensure_client_waits(context, ended, stream_ended, whole=bool(declared))
            try:
                self.queue.commit(staged, batch_id)  # refused, it discards what was staged
            except ResourceExhausted as error:
                raise nothing_queued(error) from None
        except BaseException:
            for new in pending + writer.abandon():
                self.queue.delete_blob(new.input_blob)
            self.queue.discard(staged)
            raise
        finally:
            writer.close()
        return pb.SubmitBatchResponse(batch_id=batch_id, job_ids=staged.job_ids)

    def _batch_job_input(self, request: pb.SubmitJobRequest, position: int, batch_id: str) -> NewJob:
        """The job at ``position`` of a batch, its main image in the blob store when over the
        threshold (as SubmitJob does); the blob is removed again if the job is refused."""
        try:
            _refuse_client_blobs(request.input)
        except InvalidArgument as error:
            raise InvalidArgument(
                f"jobs[{position}] of batch {batch_id}: {error}; nothing of this batch was queued"
            ) from None
        if self.blobs is None or not self.goes_to_blob_store(request.input.image):
            return _batch_job(request, position, batch_id)
        data = request.input.image.encoded.data  # each read of a bytes field copies it: once
        reference = self.blobs.put([data], self.max_upload_bytes).reference
        try:
            request.input.image.blob = reference
            new = _batch_job(request, position, batch_id)
            try:
                self._check_blob_fits(request.input, new, len(data))
            except ResourceExhausted as error:
                raise ResourceExhausted(
                    f"jobs[{position}] of batch {batch_id}: {error}; nothing of this batch was queued"
                ) from None
        except BaseException:
            self.blobs.delete(reference)
            raise
        return new

    def GetJob(self, request: pb.GetJobRequest, context: grpc.ServicerContext) -> pb.Job:
        """The job's current state."""
        tenant = self.tenant_of(context)
        return self.store.load(check_id("job_id", request.job_id), tenant).to_proto()

    def WatchJob(
        self, request: pb.WatchJobRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.JobEvent]:
        """Stream the job's state on every change until it ends."""
        tenant = self.tenant_of(context)
        self.store.load(check_id("job_id", request.job_id), tenant)
        with self._watch_slot():
            for job in watch_job(self.events, self.store, request.job_id, context):
                yield pb.JobEvent(job=job.to_proto())

    def CancelJob(self, request: pb.CancelJobRequest, context: grpc.ServicerContext) -> pb.Job:
        """Cancel a queued or running job."""
        tenant = self.tenant_of(context)
        job = self.store.load(check_id("job_id", request.job_id), tenant)
        if not self.store.transition(job, ACTIVE_STATUSES, CANCELLED, finished_at=now()):
            job = self.store.load(request.job_id)
            if job.status != CANCELLED:
                raise FailedPrecondition(
                    f"job_id: job {echo(request.job_id)} already ended ({job.status})"
                )
        return self.store.load(request.job_id).to_proto()

    def ListJobs(
        self, request: pb.ListJobsRequest, context: grpc.ServicerContext
    ) -> pb.ListJobsResponse:
        """The caller's jobs (newest first; a batch's in submission order), filtered and paged."""
        tenant = self.tenant_of(context)
        page_size = request.page_size or DEFAULT_PAGE_SIZE
        if page_size < 0:
            raise InvalidArgument(f"page_size: must be >= 0, got {page_size}")
        page_size = min(page_size, MAX_PAGE_SIZE)
        offset = _page_offset(request.page_token)
        if request.batch_id:
            self._batch(request.batch_id, tenant)
            batch_key = self.keys.batch_jobs(tenant, request.batch_id)

            def id_range(start: int, stop: int) -> list[bytes]:
                return self.queue.client.lrange(batch_key, start, stop)
        else:
            tenant_key = self.keys.tenant_jobs(tenant)

            def id_range(start: int, stop: int) -> list[bytes]:
                return self.queue.client.zrevrange(tenant_key, start, stop)

        wanted_status = PROTO_TO_STATUS.get(request.status)
        jobs: list[pb.Job] = []
        while len(jobs) < page_size:
            ids = [raw.decode() for raw in id_range(offset, offset + max(page_size, 100) - 1)]
            if not ids:
                return pb.ListJobsResponse(jobs=jobs)
            for record in self.store.load_many(ids):
                offset += 1
                if record is None or record.tenant != tenant:
                    continue
                if wanted_status and record.status != wanted_status:
                    continue
                jobs.append(record.to_proto())
                if len(jobs) == page_size:
                    break
        return pb.ListJobsResponse(jobs=jobs, next_page_token=str(offset))

    def GetJobResult(
        self, request: pb.GetJobResultRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.ResultChunk]:
        """Stream a finished job's serialized JobResult in chunks."""
        tenant = self.tenant_of(context)
        job = self.store.load(check_id("job_id", request.job_id), tenant)
        if job.status != DONE:
            raise FailedPrecondition(
                f"job_id: job {echo(job.job_id)} is {job.status}; results exist once it is done"
            )
        kept = self.queue.client.get(self.keys.job_result(job.job_id))
        if kept is None:
            raise NotFound(f"job_id: the result of job {echo(job.job_id)} has expired")
        data = unpack_result(kept)
        total = len(data)
        for start in range(0, max(total, 1), RESULT_CHUNK_BYTES):
            yield pb.ResultChunk(data=data[start : start + RESULT_CHUNK_BYTES], total_bytes=total)

    def GetBatchResults(
        self, request: pb.GetBatchResultsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.BatchResults]:
        """Stream every job of a batch, each done job with its serialized JobResult in chunks;
        with ``follow``, each job once it has ended, until all have."""
        tenant = self.tenant_of(context)
        self._batch(request.batch_id, tenant)
        if not request.follow:
            yield from batch_result_messages(self.queue.client, self.store, self.keys, tenant,
                                             request.batch_id, RESULT_CHUNK_BYTES)
            return
        # Woken when a job of the batch ends (the batch's channel carries each job's new
        # status): a job that starts or is queued again sends nothing new.
        with self._watch_slot(), self.events.subscribe(
                self.keys.batch_events(tenant, request.batch_id), TERMINAL_STATUSES) as changed:
            yield from followed_result_messages(
                self.queue.client, self.store, self.keys, tenant, request.batch_id,
                RESULT_CHUNK_BYTES, changed, lambda: self._batch(request.batch_id, tenant).finished,
                context,
            )

    def GetBatch(self, request: pb.GetBatchRequest, context: grpc.ServicerContext) -> pb.Batch:
        """A batch's counts per status."""
        return self._batch(request.batch_id, self.tenant_of(context))

    def WatchBatch(
        self, request: pb.WatchBatchRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.Batch]:
        """Stream a batch's counts on every change until all its jobs ended."""
        tenant = self.tenant_of(context)
        self._batch(request.batch_id, tenant)
        with self._watch_slot():
            yield from watch_batch(
                self.events,
                self.keys.batch_events(tenant, request.batch_id),
                lambda: self._batch(request.batch_id, tenant),
                context,
            )

    def _batch(self, batch_id: str, tenant: str) -> pb.Batch:
        raw = self.queue.client.hgetall(self.keys.batch(tenant, check_id("batch_id", batch_id)))
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        if fields.get("tenant") != tenant:
            raise NotFound(f"batch_id: no batch {echo(batch_id)}")
        counts = {
            name.removeprefix("count:"): int(value)
            for name, value in fields.items()
            if name.startswith("count:") and int(value)
        }
        total = int(fields.get("total", 0))
        active = sum(counts.get(status, 0) for status in ACTIVE_STATUSES)
        return pb.Batch(batch_id=batch_id, total=total, counts=counts, finished=active == 0)

    def ListPipelines(
        self, request: pb.ListPipelinesRequest, context: grpc.ServicerContext
    ) -> pb.ListPipelinesResponse:
        """Every pipeline of the contract and whether it is served."""
        self.tenant_of(context)
        return pb.ListPipelinesResponse(pipelines=pipeline_infos())

    def ListModels(
        self, request: features_pb2.ListModelsRequest, context: grpc.ServicerContext
    ) -> features_pb2.ListModelsResponse:
        """The features service's models, from the catalog submissions are checked against."""
        self.tenant_of(context)
        served = MODEL_CATALOG.models()
        if served is None:
            raise Unavailable("models: the features service does not answer; retry once it is up")
        reply = features_pb2.ListModelsResponse(
            models=served.by_name.values(), default_model=served.default_model
        )
        if not request.with_layer_paths:
            for model in reply.models:
                del model.layer_paths[:]
        return reply


def _declared_job_count(count: int) -> int:
    """``header.job_count`` checked: 0 (not declared) or a positive count."""
    if count < 0:
        raise InvalidArgument(f"header.job_count: {count} is negative; give the number of jobs "
                              "the stream carries, or 0")
    return count


def _job_count_refusal(declared: int, seen: int, batch_id: str) -> InvalidArgument:
    """The refusal of a batch whose stream carried other than the jobs its header declared."""
    carried = f"at least {seen}" if seen > declared else str(seen)
    return InvalidArgument(f"header.job_count: the header declared {declared} jobs, the stream "
                           f"carried {carried}; nothing of batch {batch_id} was queued")


def _refuse_client_blobs(job_input: pb.JobInput) -> None:
    """Blob references are the gateway's to set: a client sends the bytes."""
    named = [("input.image", job_input.image)]
    named += [(f"input.images[{echo(role)}]", image) for role, image in job_input.images.items()]
    for field, image in named:
        if image.WhichOneof("source") == "blob":
            raise InvalidArgument(
                f"{field}.blob: only the gateway sets blob references; send the file's bytes "
                "in encoded (UploadJob streams a large file in chunks)"
            )


def _blob_chunks(received: list[bytes], rest: Iterator[pb.UploadJobRequest]) -> Iterator[bytes]:
    """The chunks received so far, then those of the rest of an UploadJob stream."""
    yield from received
    received.clear()
    for message in rest:
        if message.WhichOneof("part") == "job":
            raise InvalidArgument("job: the header must be sent exactly once, first")
        yield message.image_chunk


def _page_offset(page_token: str) -> int:
    """The list offset a ListJobs page token stands for ("" is the first page)."""
    if not page_token:
        return 0
    if not (page_token.isascii() and page_token.isdigit()) or int(page_token) > MAX_PAGE_TOKEN:
        raise InvalidArgument(
            f"page_token: {echo(page_token)} is not a token this gateway gave; "
            "pass a previous answer's next_page_token, or none for the first page"
        )
    return int(page_token)


def tenant_resolver(settings: Settings) -> TenantResolver:
    """Bearer-token auth when tokens are configured; the open resolver only if explicitly allowed."""
    if settings.tokens_file or settings.tokens_env:
        tokens_file = Path(settings.tokens_file) if settings.tokens_file else None
        return BearerAuth(tokens_file, settings.tokens_env)
    if settings.allow_anonymous:
        log.warning("authentication is off: every caller is tenant %r", DEFAULT_TENANT)
        return open_tenant
    raise ValueError(
        "no tokens configured: set LABSIGHT_TOKENS_FILE (see `labsight token create`) or "
        "LABSIGHT_TOKENS, or LABSIGHT_ALLOW_ANONYMOUS=1 to run without authentication"
    )


def register(server: grpc.Server, settings: Settings) -> ReadinessProbe:
    """Add the GatewayService, backed by the Redis in ``settings``, to ``server``.

    Returns its readiness: the gateway serves only while Redis answers.
    """
    queue = build_queue(settings)
    queue.ensure_groups()
    connect_model_catalog(settings)  # jobs naming models are checked against the features service
    servicer = GatewayServicer(
        queue, tenant_resolver(settings), max_watch_streams=watch_stream_limit(settings.max_workers),
        blob_threshold_bytes=env_int(BLOB_THRESHOLD_ENV, DEFAULT_BLOB_THRESHOLD_BYTES),
        max_message_bytes=settings.max_message_bytes,
    )
    pb_grpc.add_GatewayServiceServicer_to_server(servicer, server)
    serve_web_page(settings)  # the web page, in a thread of this process ($LABSIGHT_WEB_PORT)
    return redis_probe(settings.redis_url)
