"""Python SDK for the gateway: submit images, watch jobs, fetch results."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import grpc
import numpy as np

from labsight.config import DEFAULT_MAX_MESSAGE_BYTES
from labsight.home import read_endpoints, running_endpoints
from labsight.images import image_from_array, image_from_file
from labsight.tensors import to_tensor
from labsight.v1 import gateway_pb2 as pb
from labsight.v1 import gateway_pb2_grpc as pb_grpc
from labsight.v1 import tensor_pb2

ImageLike = np.ndarray | str | Path | tensor_pb2.Image
TERMINAL = (pb.JOB_STATUS_DONE, pb.JOB_STATUS_FAILED, pb.JOB_STATUS_CANCELLED, pb.JOB_STATUS_DEAD)
UPLOAD_CHUNK_BYTES = 4 * 1024 * 1024
BATCH_MESSAGE_JOBS = 128
POLL_INTERVAL_S = 0.5
"""How often ``wait`` asks for a job's state when it cannot watch the job."""
RESTART_PATIENCE_S = 60.0
"""How long ``wait`` keeps asking a gateway that answers UNAVAILABLE (e.g. while restarting)."""
MAX_RECONNECT_BACKOFF_MS = 5000
"""The channel tries a gateway that went away again at least this often, so a restarted
gateway is found within seconds (gRPC's default backs off to two minutes)."""
BATCH_MESSAGE_BYTES = 4 * 1024 * 1024
"""The SDK packs up to BATCH_MESSAGE_JOBS jobs or BATCH_MESSAGE_BYTES into one SubmitBatch
message (a larger job travels alone), so the gateway can queue early jobs while later
ones are still arriving."""


def default_gateway_address() -> str:
    """$LABSIGHT_GATEWAY_ADDR, else the gateway of the running ``labsight up``.

    Raises GatewayNotFound, saying how to start one, when neither exists:
    guessing a port would only fail later with a bare UNAVAILABLE.
    """
    return os.environ.get("LABSIGHT_GATEWAY_ADDR") or running_endpoints().gateway


def default_token() -> str:
    """$LABSIGHT_TOKEN, else the token recorded by ``labsight up``, else none."""
    if os.environ.get("LABSIGHT_TOKEN"):
        return os.environ["LABSIGHT_TOKEN"]
    endpoints = read_endpoints()
    return endpoints.token if endpoints else ""


def as_image(image: ImageLike, name: str = "") -> tensor_pb2.Image:
    """An Image message from an array, a file path or an Image."""
    if isinstance(image, tensor_pb2.Image):
        return image
    if isinstance(image, np.ndarray):
        return image_from_array(image, name)
    return image_from_file(image)


def build_request(
    pipeline: str,
    image: ImageLike,
    params: Mapping[str, object] | None = None,
    *,
    images: Mapping[str, ImageLike] | None = None,
    tensors: Mapping[str, np.ndarray] | None = None,
    idempotency_key: str = "",
    priority: str = "normal",
    labels: Mapping[str, str] | None = None,
) -> pb.SubmitJobRequest:
    """A SubmitJobRequest; parameter values are sent as text (lists comma-joined)."""
    text_params = {
        key: ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value).lower()
        if isinstance(value, bool) else str(value)
        for key, value in (params or {}).items()
    }
    job_input = pb.JobInput(image=as_image(image))
    for role, extra in (images or {}).items():
        job_input.images[role].CopyFrom(as_image(extra))
    for role, array in (tensors or {}).items():
        job_input.tensors[role].CopyFrom(to_tensor(array))
    return pb.SubmitJobRequest(
        pipeline=pipeline,
        params=text_params,
        input=job_input,
        idempotency_key=idempotency_key,
        priority=pb.PRIORITY_HIGH if priority == "high" else pb.PRIORITY_NORMAL,
        labels=dict(labels or {}),
    )


class LabSightClient:
    """A connection to the gateway. Use as a context manager or call ``close()``.

    ``address`` defaults to $LABSIGHT_GATEWAY_ADDR or the gateway of the
    running ``labsight up`` (found through its home, see ``labsight.home``);
    ``token`` defaults to $LABSIGHT_TOKEN or the token of ``labsight up``;
    ``tls_ca`` (default $LABSIGHT_TLS_CA) is the PEM certificate that signed
    the gateway's TLS certificate; without it the channel is plaintext.
    """

    def __init__(
        self,
        address: str | None = None,
        token: str | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        timeout_s: float = 60.0,
        tls_ca: str | Path | None = None,
    ) -> None:
        self.address = address or default_gateway_address()
        self.token = default_token() if token is None else token
        self.max_message_bytes = max_message_bytes
        self.timeout_s = timeout_s
        options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
        ]
        tls_ca = tls_ca or os.environ.get("LABSIGHT_TLS_CA")
        if tls_ca:
            credentials = grpc.ssl_channel_credentials(root_certificates=Path(tls_ca).read_bytes())
            self.channel = grpc.secure_channel(self.address, credentials, options=options)
        else:
            self.channel = grpc.insecure_channel(self.address, options=options)
        self.stub = pb_grpc.GatewayServiceStub(self.channel)

    def __enter__(self) -> LabSightClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()

    @property
    def metadata(self) -> list[tuple[str, str]]:
        """Call metadata carrying the bearer token, if any."""
        return [("authorization", f"Bearer {self.token}")] if self.token else []

    def submit_request(self, request: pb.SubmitJobRequest) -> pb.Job:
        """Queue a prepared request; inputs near the message limit are uploaded in chunks."""
        if request.ByteSize() < self.max_message_bytes * 0.9:
            return self.stub.SubmitJob(request, timeout=self.timeout_s, metadata=self.metadata)
        if request.input.image.WhichOneof("source") != "encoded":
            raise ValueError("inputs over the message limit must be encoded images (PNG/TIFF)")
        return self.stub.UploadJob(
            _upload_messages(request), timeout=self.timeout_s, metadata=self.metadata
        )

    def submit(self, pipeline: str, image: ImageLike, params: Mapping[str, object] | None = None,
               **options: object) -> pb.Job:
        """Queue one job; ``options`` are those of :func:`build_request`."""
        return self.submit_request(build_request(pipeline, image, params, **options))

    def submit_batch(
        self, requests: Iterable[pb.SubmitJobRequest], batch_id: str = ""
    ) -> pb.SubmitBatchResponse:
        """Queue many jobs under one batch id in one client stream (many jobs per message)."""

        batch_message_bytes = min(BATCH_MESSAGE_BYTES, self.max_message_bytes // 2)

        def messages() -> Iterator[pb.SubmitBatchRequest]:
            yield pb.SubmitBatchRequest(header=pb.BatchHeader(batch_id=batch_id))
            message = pb.SubmitBatchRequest()
            size = 0
            for request in requests:
                request_size = request.ByteSize()
                if message.jobs.jobs and (len(message.jobs.jobs) >= BATCH_MESSAGE_JOBS
                                          or size + request_size > batch_message_bytes):
                    yield message
                    message, size = pb.SubmitBatchRequest(), 0
                message.jobs.jobs.append(request)  # the one copy of the job before sending
                size += request_size
            if message.jobs.jobs:
                yield message

        return self.stub.SubmitBatch(messages(), metadata=self.metadata)

    def get(self, job_id: str) -> pb.Job:
        """A job's current state."""
        return self.stub.GetJob(
            pb.GetJobRequest(job_id=job_id), timeout=self.timeout_s, metadata=self.metadata
        )

    def watch(self, job_id: str, timeout_s: float | None = None) -> Iterator[pb.Job]:
        """Every state of a job until it ends."""
        events = self.stub.WatchJob(
            pb.WatchJobRequest(job_id=job_id), timeout=timeout_s, metadata=self.metadata
        )
        for event in events:
            yield event.job

    def wait(self, job_id: str, timeout_s: float | None = None) -> pb.Job:
        """Block until the job ends; returns its final state.

        Watches the job; when the watch fails in any way (the gateway has no
        watch stream free, it restarted, the stream broke or ended early), polls
        GetJob every POLL_INTERVAL_S instead. TimeoutError after ``timeout_s``.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        job = self.get(job_id)
        try:
            for job in self.watch(job_id, timeout_s):
                if job.status in TERMINAL:
                    return job
        except grpc.RpcError:
            pass  # polling below answers the same question without a stream
        unreachable_since: float | None = None
        while job.status not in TERMINAL:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} did not end within {timeout_s} s")
            time.sleep(POLL_INTERVAL_S)
            try:
                job = self.get(job_id)
                unreachable_since = None
            except grpc.RpcError as error:
                # A gateway (or its Redis) being restarted answers UNAVAILABLE for a while.
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                unreachable_since = unreachable_since or time.monotonic()
                if time.monotonic() - unreachable_since > RESTART_PATIENCE_S:
                    raise
        return job

    def result(self, job_id: str) -> pb.JobResult:
        """A finished job's result (reassembled from its chunks)."""
        chunks = self.stub.GetJobResult(
            pb.GetJobResultRequest(job_id=job_id), timeout=self.timeout_s, metadata=self.metadata
        )
        return pb.JobResult.FromString(b"".join(chunk.data for chunk in chunks))

    def cancel(self, job_id: str) -> pb.Job:
        """Cancel a queued or running job."""
        return self.stub.CancelJob(
            pb.CancelJobRequest(job_id=job_id), timeout=self.timeout_s, metadata=self.metadata
        )

    def list_jobs(self, batch_id: str = "", page_size: int = 100) -> list[pb.Job]:
        """The caller's jobs, newest first (one page)."""
        return list(
            self.stub.ListJobs(
                pb.ListJobsRequest(batch_id=batch_id, page_size=page_size),
                timeout=self.timeout_s,
                metadata=self.metadata,
            ).jobs
        )

    def batch(self, batch_id: str) -> pb.Batch:
        """A batch's counts per status."""
        return self.stub.GetBatch(
            pb.GetBatchRequest(batch_id=batch_id), timeout=self.timeout_s, metadata=self.metadata
        )

    def watch_batch(self, batch_id: str) -> Iterator[pb.Batch]:
        """Every state of a batch until all its jobs ended."""
        yield from self.stub.WatchBatch(
            pb.WatchBatchRequest(batch_id=batch_id), metadata=self.metadata
        )

    def batch_jobs(self, batch_id: str) -> list[pb.Job]:
        """Every job of a batch (all pages)."""
        jobs: list[pb.Job] = []
        token = ""
        while True:
            page = self.stub.ListJobs(
                pb.ListJobsRequest(batch_id=batch_id, page_size=500, page_token=token),
                timeout=self.timeout_s,
                metadata=self.metadata,
            )
            jobs.extend(page.jobs)
            token = page.next_page_token
            if not token:
                return jobs

    def batch_results(self, batch_id: str) -> Iterator[tuple[pb.Job, pb.JobResult | None]]:
        """Each job of a batch with its result (None unless the job is done)."""
        for job in self.batch_jobs(batch_id):
            yield job, self.result(job.job_id) if job.status == pb.JOB_STATUS_DONE else None

    def pipelines(self) -> list[pb.PipelineInfo]:
        """The pipelines the gateway runs."""
        return list(
            self.stub.ListPipelines(
                pb.ListPipelinesRequest(), timeout=self.timeout_s, metadata=self.metadata
            ).pipelines
        )


def _upload_messages(request: pb.SubmitJobRequest) -> Iterator[pb.UploadJobRequest]:
    header = pb.SubmitJobRequest()
    header.CopyFrom(request)
    data = request.input.image.encoded.data
    header.input.image.encoded.data = b""
    yield pb.UploadJobRequest(job=header)
    for start in range(0, len(data), UPLOAD_CHUNK_BYTES):
        yield pb.UploadJobRequest(image_chunk=data[start : start + UPLOAD_CHUNK_BYTES])
