"""Python SDK for the gateway: submit images, watch jobs, fetch results.

Every call that the gateway refuses raises a ``labsight.errors.ServiceError``
subclass (``NotFoundError``, ``InvalidArgumentError``, ...), never a raw
``grpc.RpcError`` (though each is one, for code written against grpc).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc

from labsight.arrays import is_array, require_numpy
from labsight.batch_results import BatchResultReader, entry_result
from labsight.batch_submit import (
    PART_JOBS,
    SubmittedBatch,
    journal_path,
    submission_id,
    submit_in_parts,
)
from labsight.config import DEFAULT_MAX_MESSAGE_BYTES
from labsight.errors import (
    FailedPreconditionError,
    JobFailedError,
    ResourceExhaustedError,
    ServiceError,
    UnavailableError,
    UnimplementedError,
    service_error,
)
from labsight.home import read_endpoints, running_endpoints
from labsight.image_messages import image_from_array, image_from_file
from labsight.progress import ProgressBar
from labsight.result import Result, main_table
from labsight.v1 import gateway_pb2 as pb
from labsight.v1 import gateway_pb2_grpc as pb_grpc
from labsight.v1 import tensor_pb2
from labsight.wire import length_delimited_head

if TYPE_CHECKING:
    import anndata
    import numpy as np
    import pandas as pd

ImageLike: TypeAlias = "np.ndarray | str | Path | tensor_pb2.Image | None"
"""A job's main image: pixels, a file, an Image message, or None for none (a job whose inputs
are all in ``tensors``, e.g. fractal ``tiles``)."""
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
SUBMIT_BATCH_METHOD = f"/{pb.DESCRIPTOR.services_by_name['GatewayService'].full_name}/SubmitBatch"
_BATCH_JOBS = pb.SubmitBatchRequest.DESCRIPTOR.fields_by_name["jobs"].number
_BATCH_JOB = pb.BatchJobs.DESCRIPTOR.fields_by_name["jobs"].number
"""Field numbers of SubmitBatchRequest.jobs and BatchJobs.jobs, for the stream's wire bytes."""


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
    """An Image message from an array, a file path or an Image; an empty one for None."""
    if image is None:
        return tensor_pb2.Image()
    if isinstance(image, tensor_pb2.Image):
        return image
    if is_array(image):
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
    name: str = "",
    tensor_names: Mapping[str, Sequence[str]] | None = None,
) -> pb.SubmitJobRequest:
    """A SubmitJobRequest; parameter values are sent as text (lists comma-joined).

    ``name`` names the main input (the row id of per-image tables, the prefix of
    row ids in batch exports); a file is named after itself unless given one.
    ``tensor_names`` names the images of a stack in ``tensors`` by role, one per image in
    order (fractal's ``tiles``, deep-features' ``patches``): the result's rows take them.
    """
    text_params = {
        key: ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value).lower()
        if isinstance(value, bool) else str(value)
        for key, value in (params or {}).items()
    }
    job_input = pb.JobInput(image=as_image(image))
    if name:
        job_input.image.name = name
    for role, extra in (images or {}).items():
        job_input.images[role].CopyFrom(as_image(extra))
    if tensors:
        from labsight.tensors import to_tensor  # numpy: the light client's arrays extra

        for role, array in tensors.items():
            job_input.tensors[role].CopyFrom(to_tensor(array))
    for role, names in (tensor_names or {}).items():
        job_input.tensor_names[role].names.extend(names)
    return pb.SubmitJobRequest(
        pipeline=pipeline,
        params=text_params,
        input=job_input,
        idempotency_key=idempotency_key,
        priority=pb.PRIORITY_HIGH if priority == "high" else pb.PRIORITY_NORMAL,
        labels=dict(labels or {}),
    )


def channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """gRPC channel options of a client: message limits both ways, and reconnects that find a
    restarted gateway within seconds."""
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
    ]


def channel_credentials(tls_ca: str | Path | None) -> grpc.ChannelCredentials | None:
    """TLS credentials trusting the PEM file ``tls_ca`` (default $LABSIGHT_TLS_CA); None for a
    plaintext channel when neither is given."""
    tls_ca = tls_ca or os.environ.get("LABSIGHT_TLS_CA")
    return grpc.ssl_channel_credentials(root_certificates=Path(tls_ca).read_bytes()) if tls_ca else None


class TableCut:
    """Cuts results down to one table as they stream in (``labsight.export.keep_table``):
    ``table``, or when empty the first result's main table."""

    def __init__(self, table: str = "") -> None:
        self.table = table

    def __call__(self, result: Result) -> Result:
        """``result`` holding only the table and its per-row tensors (cut in place)."""
        from labsight.export import keep_table

        self.table = self.table or result.main_table
        keep_table(result.message, self.table)
        return result


def split_ended(
    ended: Iterable[tuple[pb.Job, Result | None]], skip_failed: bool, address: str,
    cut: TableCut | None = None,
) -> tuple[list[tuple[pb.Job, Result]], dict[str, str]]:
    """Ended jobs with their results (``batch_results``' pairs) split into the finished ones,
    in order, and the error of each job without a result: with ``skip_failed``, else
    JobFailedError (naming ``address``) at the first such job. With ``cut``, each result
    is cut down to one table as it comes."""
    finished: list[tuple[pb.Job, Result]] = []
    failed: dict[str, str] = {}
    for job, result in ended:
        if result is not None:
            finished.append((job, result if cut is None else cut(result)))
        elif skip_failed:
            failed[job.job_id] = job.error
        else:
            raise JobFailedError(job, address=address)
    return finished, failed


def bearer_metadata(token: str) -> list[tuple[str, str]]:
    """Call metadata carrying ``token`` as a bearer token (none for an empty token)."""
    return [("authorization", f"Bearer {token}")] if token else []


def batch_messages(requests: Iterable[pb.SubmitJobRequest], batch_id: str,
                   max_message_bytes: int) -> Iterator[bytes]:
    """The client stream of a SubmitBatch, each message as wire bytes: the header, then the jobs
    packed BATCH_MESSAGE_JOBS or BATCH_MESSAGE_BYTES (at most half the message limit) to a
    message.

    The header declares the job count when ``requests`` has a length (a list): the
    gateway then refuses a batch the queue has no room for before its images are
    sent, and answers a whole stream at once (see ``BatchHeader.job_count``).
    Each job is serialized once and its bytes joined into its message: one more copy, where
    a message built with protobuf copies every job three times (sizing it, appending it,
    serializing the message).
    """
    batch_message_bytes = min(BATCH_MESSAGE_BYTES, max_message_bytes // 2)
    count = len(requests) if isinstance(requests, Sized) else 0
    yield pb.SubmitBatchRequest(header=pb.BatchHeader(batch_id=batch_id, job_count=count)).SerializeToString()
    jobs: list[bytes] = []
    size = 0
    for request in requests:
        job = request.SerializeToString()
        if jobs and (len(jobs) >= BATCH_MESSAGE_JOBS or size + len(job) > batch_message_bytes):
            yield _jobs_message(jobs)
            jobs, size = [], 0
        jobs.append(job)
        size += len(job)
    if jobs:
        yield _jobs_message(jobs)


def _jobs_message(jobs: list[bytes]) -> bytes:
    """The wire bytes of a SubmitBatchRequest carrying ``jobs`` (each a serialized SubmitJobRequest)."""
    pieces = [piece for job in jobs for piece in (length_delimited_head(_BATCH_JOB, len(job)), job)]
    return b"".join([length_delimited_head(_BATCH_JOBS, sum(len(piece) for piece in pieces)), *pieces])


def fits_one_message(request: pb.SubmitJobRequest, max_message_bytes: int) -> bool:
    """True when ``request`` goes whole in a SubmitJob message (under 90% of the limit); False
    when it must be uploaded in chunks (UploadJob), which only an encoded main image can be.

    Raises
    ------
    ValueError
        Saying what is too large, for a request over the limit that cannot be uploaded.
    """
    size = request.ByteSize()
    if size < max_message_bytes * 0.9:
        return True
    if request.input.image.WhichOneof("source") == "encoded":
        return False
    arrays = ("a main image given as an array" if request.input.image.HasField("tensor")
              else "its tensors and extra images")
    raise ValueError(
        f"a job input of {size} bytes is over 90% of the gateway's message limit "
        f"({max_message_bytes} bytes): only an encoded main image (PNG/TIFF file) is uploaded in "
        f"chunks, and this job has {arrays}; send a file, fewer tiles or patches per job, or have "
        "the operator raise LABSIGHT_MAX_MESSAGE_BYTES"
    )


def submit_batch_bytes(channel: Any) -> Any:
    """SubmitBatch on ``channel`` (``grpc`` or ``grpc.aio``) for a stream of wire bytes, as
    :func:`batch_messages` writes them."""
    return channel.stream_unary(SUBMIT_BATCH_METHOD, request_serializer=None,
                                response_deserializer=pb.SubmitBatchResponse.FromString)


class LabSightClient:
    """A connection to the gateway. Use as a context manager or call ``close()``.

    ``address`` defaults to $LABSIGHT_GATEWAY_ADDR or the gateway of the
    running ``labsight up`` (found through its home, see ``labsight.home``);
    ``token`` defaults to $LABSIGHT_TOKEN or the token of ``labsight up``;
    ``tls_ca`` (default $LABSIGHT_TLS_CA) is the PEM certificate that signed
    the gateway's TLS certificate; without it the channel is plaintext.

    Methods raise ``labsight.errors.ServiceError`` subclasses for refused calls
    (see ``labsight.errors``). ``stub`` is the raw generated stub (for
    ``.future()`` and the like), whose calls raise plain ``grpc.RpcError``.
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
        options = channel_options(max_message_bytes)
        credentials = channel_credentials(tls_ca)
        self.channel = (grpc.secure_channel(self.address, credentials, options=options) if credentials
                        else grpc.insecure_channel(self.address, options=options))
        self.stub = pb_grpc.GatewayServiceStub(self.channel)
        self._gateway = _TypedStub(self.stub, self.address,
                                   {"SubmitBatch": submit_batch_bytes(self.channel)})

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
        return bearer_metadata(self.token)

    def submit_request(self, request: pb.SubmitJobRequest) -> pb.Job:
        """Queue a prepared request; inputs near the message limit are uploaded in chunks."""
        if fits_one_message(request, self.max_message_bytes):
            return self._gateway.SubmitJob(request, timeout=self.timeout_s, metadata=self.metadata)
        return self._gateway.UploadJob(
            upload_messages(request), timeout=self.timeout_s, metadata=self.metadata
        )

    def submit(self, pipeline: str, image: ImageLike, params: Mapping[str, object] | None = None,
               **options: object) -> pb.Job:
        """Queue one job; ``options`` are those of :func:`build_request`."""
        return self.submit_request(build_request(pipeline, image, params, **options))

    def submit_batch(
        self, requests: Iterable[pb.SubmitJobRequest], batch_id: str = ""
    ) -> pb.SubmitBatchResponse:
        """Queue many jobs under one batch id in one client stream (many jobs per message)."""
        return self._gateway.SubmitBatch(
            batch_messages(requests, batch_id, self.max_message_bytes), metadata=self.metadata
        )

    def get(self, job_id: str) -> pb.Job:
        """A job's current state."""
        return self._gateway.GetJob(
            pb.GetJobRequest(job_id=job_id), timeout=self.timeout_s, metadata=self.metadata
        )

    def watch(self, job_id: str, timeout_s: float | None = None) -> Iterator[pb.Job]:
        """Every state of a job until it ends."""
        events = self._gateway.WatchJob(
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
        except ServiceError:
            pass  # polling below answers the same question without a stream
        unreachable_since: float | None = None
        while job.status not in TERMINAL:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} did not end within {timeout_s} s")
            time.sleep(POLL_INTERVAL_S)
            try:
                job = self.get(job_id)
                unreachable_since = None
            except UnavailableError:
                # A gateway (or its Redis) being restarted answers UNAVAILABLE for a while.
                unreachable_since = unreachable_since or time.monotonic()
                if time.monotonic() - unreachable_since > RESTART_PATIENCE_S:
                    raise
        return job

    def result(self, job_id: str) -> Result:
        """A finished job's result (reassembled from its chunks).

        Raises JobFailedError (with the job's error) when the job ended
        without a result, FailedPreconditionError while it is still running.
        """
        try:
            chunks = self._gateway.GetJobResult(
                pb.GetJobResultRequest(job_id=job_id), timeout=self.timeout_s,
                metadata=self.metadata,
            )
            return Result(pb.JobResult.FromString(b"".join(chunk.data for chunk in chunks)))
        except FailedPreconditionError as error:
            job = self.get(job_id)
            if job.status == pb.JOB_STATUS_DONE:  # it finished between the two calls
                return self.result(job_id)
            if job.status in TERMINAL:
                raise JobFailedError(job, rpc=error.rpc, address=error.address) from None
            raise

    def run(self, pipeline: str, image: ImageLike, params: Mapping[str, object] | None = None,
            timeout_s: float | None = None, **options: object) -> Result:
        """Submit one job, wait for it and return its result (``options`` as for ``submit``).

        Raises JobFailedError, with the job's error, if it failed.
        """
        job = self.submit(pipeline, image, params, **options)
        self.wait(job.job_id, timeout_s)
        return self.result(job.job_id)

    def cancel(self, job_id: str) -> pb.Job:
        """Cancel a queued or running job."""
        return self._gateway.CancelJob(
            pb.CancelJobRequest(job_id=job_id), timeout=self.timeout_s, metadata=self.metadata
        )

    def list_jobs(self, batch_id: str = "", page_size: int = 100) -> list[pb.Job]:
        """The caller's jobs, newest first (one page)."""
        return list(
            self._gateway.ListJobs(
                pb.ListJobsRequest(batch_id=batch_id, page_size=page_size),
                timeout=self.timeout_s,
                metadata=self.metadata,
            ).jobs
        )

    def batch(self, batch_id: str) -> pb.Batch:
        """A batch's counts per status."""
        return self._gateway.GetBatch(
            pb.GetBatchRequest(batch_id=batch_id), timeout=self.timeout_s, metadata=self.metadata
        )

    def watch_batch(self, batch_id: str) -> Iterator[pb.Batch]:
        """Every state of a batch until all its jobs ended."""
        yield from self._gateway.WatchBatch(
            pb.WatchBatchRequest(batch_id=batch_id), metadata=self.metadata
        )

    def batch_jobs(self, batch_id: str) -> list[pb.Job]:
        """Every job of a batch (all pages)."""
        jobs: list[pb.Job] = []
        token = ""
        while True:
            page = self._gateway.ListJobs(
                pb.ListJobsRequest(batch_id=batch_id, page_size=500, page_token=token),
                timeout=self.timeout_s,
                metadata=self.metadata,
            )
            jobs.extend(page.jobs)
            token = page.next_page_token
            if not token:
                return jobs

    def batch_results(self, batch_id: str, follow: bool = False, timeout_s: float | None = None
                      ) -> Iterator[tuple[pb.Job, Result | None]]:
        """Each job of a batch in submission order with its result (None unless the job is
        done), read from one GetBatchResults stream; from a gateway without that call,
        ListJobs and a GetJobResult per done job. NotFoundError for a done job whose result
        expired.

        With ``follow``, each job comes once it has ended, so results are read while later
        jobs still run, until every job of the batch has ended (call it right after
        submitting; ``batch_results(batch_id)`` once the batch has ended reads the same).
        Where every watch stream of the gateway is taken, the jobs listed now are waited
        for one by one (``wait`` polls) and read with a call each. A TimeoutError once
        ``timeout_s`` have passed."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        reader = BatchResultReader()
        yielded = False
        try:
            for chunk in self._gateway.GetBatchResults(
                pb.GetBatchResultsRequest(batch_id=batch_id, follow=follow), timeout=timeout_s,
                metadata=self.metadata,
            ):
                for entry in reader.feed(chunk):
                    yielded = True
                    yield entry.job, entry_result(entry, self.address)
        except (UnimplementedError, ResourceExhaustedError):  # an older gateway; no stream free
            if yielded:
                raise
            for job in self.batch_jobs(batch_id):
                if follow and job.status not in TERMINAL:
                    job = self.wait(job.job_id, None if deadline is None
                                    else max(deadline - time.monotonic(), 0.0))
                yield job, self.result(job.job_id) if job.status == pb.JOB_STATUS_DONE else None
            return
        reader.finish()

    def batch_to_anndata(
        self,
        batch_id: str,
        table: str | None = None,
        *,
        skip_failed: bool = False,
        timeout_s: float | None = None,
    ) -> anndata.AnnData:
        """One AnnData for every job of a batch, once all of them have ended.

        Parameters
        ----------
        batch_id : str
            The batch.
        table : str, optional
            The table to stack; default: the main table of the first result
            (see ``labsight.result.main_table``).
        skip_failed : bool
            Leave out jobs that failed (their ids and errors are then in
            ``uns["failed_jobs"]``) instead of raising JobFailedError.
        timeout_s : float, optional
            How long to wait for jobs still queued or running (TimeoutError after).

        Returns
        -------
        anndata.AnnData
            The rows of every job's table in submission order, built by
            ``labsight.export.results_to_anndata``: features in ``X`` and
            ``obsm["features"]``, row ids as ``obs_names`` (prefixed with the
            image name), spot coordinates in ``obsm["spatial"]``, provenance in
            ``uns["provenance"]``, the jobs' labels as ``obs`` columns; plus
            each row's ``job_id`` in ``obs``.
        """
        return batch_anndata(batch_id, *self.ended_results(batch_id, skip_failed, timeout_s,
                                                            table=table or ""), table)

    def batch_to_pandas(
        self,
        batch_id: str,
        table: str | None = None,
        *,
        skip_failed: bool = False,
        timeout_s: float | None = None,
    ) -> pd.DataFrame:
        """One DataFrame of every job's table in a batch, once all of them have ended.

        Parameters and waiting as for ``batch_to_anndata``. The frame has the rows
        of each result's ``to_pandas(table)`` in submission order, indexed by
        (``job_id``, ``id``), with the job's ``input_name`` as a column; the batch,
        table and failed jobs are in ``attrs``. ``.to_numpy()`` gives the values.
        """
        return batch_frame(batch_id, *self.ended_results(batch_id, skip_failed, timeout_s,
                                                          table=table or ""), table)

    def batch_tracks(
        self,
        batch_id: str,
        *,
        objects: str = "cells",
        min_iou: float = 0.1,
        max_distance_um: float = 10.0,
        timeout_s: float | None = None,
    ) -> pd.DataFrame:
        """The cells of a batch's time-lapses followed over time, once every job has ended: one
        row per cell per time point of the ``cells`` or ``hpa-cells`` jobs named ``FILE[t=N]``
        (``labsight submit ... --each-plane t``), with ``movie``, ``t``, ``track_id`` and
        ``parent_track_id`` before the cells table's columns, as ``labsight track`` writes them.

        ``objects`` links the ``"cells"`` or their ``"nuclei"``; ``min_iou`` and
        ``max_distance_um`` are :func:`labsight.tracking.link_frames`'. Failed jobs are left
        out (their time points missing); ValueError where the batch holds no such jobs or a
        movie's masks cannot be linked.
        """
        import pandas as pd

        from labsight.time_lapse import LINKED_MASKS, movies_of, track_movies

        if objects not in LINKED_MASKS:
            raise ValueError(f"objects: expected one of {sorted(LINKED_MASKS)}, got {objects!r}")
        finished, _ = self.ended_results(batch_id, skip_failed=True, timeout_s=timeout_s)
        movies = movies_of(finished, LINKED_MASKS[objects])
        if not movies:
            raise ValueError(f"batch {batch_id} has no finished cells or hpa-cells jobs named "
                             "FILE[t=N] (submit with --each-plane t)")
        tracked = track_movies(movies, min_iou=min_iou, max_distance_um=max_distance_um)
        return pd.concat([each.table for each in tracked], ignore_index=True)

    def ended_results(
        self, batch_id: str, skip_failed: bool = False, timeout_s: float | None = None, *,
        table: str | None = None,
    ) -> tuple[list[tuple[pb.Job, Result]], dict[str, str]]:
        """Wait for every job of a batch to end: the finished ones with their results, in
        submission order, and the error of each job that did not finish (with ``skip_failed``;
        else JobFailedError for the first one). TimeoutError after ``timeout_s``.

        With ``table`` (empty: the first result's main table), each result keeps only that
        table and its per-row tensors, cut as the results stream in: a batch of thousands of
        ``cells`` jobs then holds its tables, not every mask and crop.

        Reads ``batch_results(batch_id, follow=True)``: one stream, each result as its job
        ends."""
        return split_ended(self.batch_results(batch_id, follow=True, timeout_s=timeout_s),
                           skip_failed, self.address, None if table is None else TableCut(table))

    def submit_folder(
        self,
        pipeline: str,
        paths: Sequence[str | Path],
        params: Mapping[str, object] | None = None,
        *,
        recursive: bool = False,
        batch_id: str = "",
        resume: bool = False,
        labels: Mapping[str, str] | None = None,
        priority: str = "normal",
        progress: bool = True,
        stack: int = 0,
    ) -> SubmittedBatch:
        """Submit every image of folders (and files) as one batch, resumable after an interruption.

        Each job is named by its file's path relative to the files' common folder and
        keyed by its content and parameters (``labsight.inputs.content_key``); jobs go
        in parts, each recorded in a journal in the LabSight home once queued (see
        ``labsight.batch_submit``). ``resume`` sends only what the journal of the same
        submission (gateway, pipeline, parameters, files) lacks, into its batch; a part
        queued but not recorded is deduplicated by the gateway through its keys.

        Parameters
        ----------
        pipeline : str
            The pipeline of every job.
        paths : sequence of str or Path
            Image files and folders (their PNG, TIFF and JPEG files; ``recursive``: also
            those of their subfolders).
        params : mapping, optional
            The pipeline's parameters.
        recursive : bool
            Also take the images of subfolders.
        batch_id : str
            The batch (default: a new id; with ``resume`` the journal's).
        resume : bool
            Continue an interrupted submission of the same files and parameters.
        labels : mapping, optional
            Labels stored with every job.
        priority : {"normal", "high"}
            The jobs' priority.
        progress : bool
            Draw a progress bar on stderr (on a terminal; elsewhere a line per part, if several).
        stack : int
            With N >= 1, pack same-size images into jobs of up to N (fractal's ``tiles``,
            deep-features' ``patches``; ``labsight.stack_inputs``), each image named by its
            file, so the result rows carry the file names; 0 (default): a job per file.

        Returns
        -------
        SubmittedBatch
            The batch id, each job's id in order (a file's, or with ``stack`` a stack's), how
            many jobs were sent now.

        Raises
        ------
        labsight.inputs.InputError
            Naming every path that is missing or not an image; nothing is sent then.
        labsight.errors.ServiceError
            The gateway refused a part (the parts before it stay queued: ``resume``).
        """
        from labsight.inputs import check_inputs, content_key, expand_inputs, input_names
        from labsight.stack_inputs import STACK_ROLES, StackFiles, stack_files, stack_request

        expanded = expand_inputs(paths, recursive)
        check_inputs(expanded)
        files = input_names(expanded)
        if stack and pipeline not in STACK_ROLES:
            raise ValueError(f"stack: pipeline {pipeline!r} takes no stack of images; "
                             f"these do: {sorted(STACK_ROLES)}")
        stacks = stack_files(files, stack) if stack else []

        def requests() -> Iterator[pb.SubmitJobRequest]:
            for job in stacks if stack else files:
                request = (stack_request(pipeline, job, params, labels=labels, priority=priority)
                           if isinstance(job, StackFiles) else
                           build_request(pipeline, job.path, params, labels=labels, priority=priority,
                                         name=job.name))
                request.idempotency_key = content_key(request)
                yield request

        packing = {"--stack": stack} if stack else {}  # another packing, another submission
        submission = submission_id(self.address, pipeline, {**dict(params or {}), **packing},
                                   dict(labels or {}), priority, [str(file.path.resolve()) for file in files])
        jobs = len(stacks) if stack else len(files)
        bar = ProgressBar(lines=jobs > PART_JOBS) if progress else None
        try:
            return submit_in_parts(
                self, requests(), jobs, journal_path(submission), batch_id=batch_id,
                resume=resume, on_part=bar.update if bar else None,
            )
        finally:
            if bar:
                bar.close()

    def pipelines(self) -> list[pb.PipelineInfo]:
        """The pipelines the gateway runs."""
        return list(
            self._gateway.ListPipelines(
                pb.ListPipelinesRequest(), timeout=self.timeout_s, metadata=self.metadata
            ).pipelines
        )


def batch_anndata(batch_id: str, finished: Sequence[tuple[pb.Job, Result]],
                  failed: Mapping[str, str], table: str | None = None) -> anndata.AnnData:
    """The AnnData of ``LabSightClient.batch_to_anndata`` from a batch's ended jobs."""
    from labsight.export import results_to_anndata

    np = require_numpy("batch_to_anndata")
    _require_finished(batch_id, finished, failed)
    results = [result.message for _, result in finished]
    name = table or main_table(results[0])
    adata = results_to_anndata(results, name)
    rows = [len(result.tables[name].row_ids) for result in results]
    adata.obs["job_id"] = np.repeat([job.job_id for job, _ in finished], rows)
    adata.uns["batch_id"] = batch_id
    adata.uns["table"] = name
    if failed:
        adata.uns["failed_jobs"] = dict(failed)
    return adata


def batch_frame(batch_id: str, finished: Sequence[tuple[pb.Job, Result]],
                failed: Mapping[str, str], table: str | None = None) -> pd.DataFrame:
    """The DataFrame of ``LabSightClient.batch_to_pandas`` from a batch's ended jobs."""
    np = require_numpy("batch_to_pandas")
    import pandas as pd

    _require_finished(batch_id, finished, failed)
    name = table or finished[0][1].main_table
    frames = [result.to_pandas(name) for _, result in finished]
    frame = pd.concat(frames, keys=[job.job_id for job, _ in finished], names=["job_id", "id"])
    frame.insert(0, "input_name", np.repeat([job.input_name for job, _ in finished],
                                            [len(part) for part in frames]))
    frame.attrs = {"batch_id": batch_id, "table": name, "failed_jobs": dict(failed)}
    return frame


def _require_finished(batch_id: str, finished: Sequence[object], failed: Mapping[str, str]) -> None:
    """ValueError, naming the failed jobs, when a batch has no finished job to export."""
    if not finished:
        raise ValueError(f"batch {batch_id} has no finished job to export"
                         + (f"; failed: {dict(failed)}" if failed else ""))


def upload_messages(request: pb.SubmitJobRequest) -> Iterator[pb.UploadJobRequest]:
    """The client stream of an UploadJob: the request without its image bytes, then the bytes
    in UPLOAD_CHUNK_BYTES chunks."""
    header = pb.SubmitJobRequest()
    header.CopyFrom(request)
    data = request.input.image.encoded.data
    header.input.image.encoded.data = b""
    yield pb.UploadJobRequest(job=header)
    for start in range(0, len(data), UPLOAD_CHUNK_BYTES):
        yield pb.UploadJobRequest(image_chunk=data[start : start + UPLOAD_CHUNK_BYTES])


class _TypedStub:
    """The gateway stub seen through one door: a refused call raises its
    ``labsight.errors.ServiceError`` subclass, naming the call and the gateway,
    instead of a raw ``grpc.RpcError`` (for answers streamed back too). ``methods`` stand in
    for the stub's calls of their names."""

    def __init__(self, stub: pb_grpc.GatewayServiceStub, address: str,
                 methods: Mapping[str, Callable[..., Any]] | None = None) -> None:
        self._stub = stub
        self._address = address
        self._methods = dict(methods or {})

    def __getattr__(self, rpc: str) -> Callable[..., Any]:
        method = self._methods.get(rpc) or getattr(self._stub, rpc)

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                answer = method(*args, **kwargs)
            except grpc.RpcError as error:
                raise service_error(error, rpc=rpc, address=self._address) from None
            # A unary call returns its response; a streamed answer is a Call to iterate.
            if isinstance(answer, grpc.Call):
                return self._typed_stream(answer, rpc)
            return answer

        return call

    def _typed_stream(self, stream: Any, rpc: str) -> Iterator[Any]:
        try:
            yield from stream
        except grpc.RpcError as error:
            raise service_error(error, rpc=rpc, address=self._address) from None
        finally:
            stream.cancel()  # a reader that stopped early frees the gateway's stream at once
