"""The SDK for asyncio: ``AsyncLabSightClient``, the gateway calls of ``LabSightClient`` as coroutines.

Built on ``grpc.aio``; requests, errors (``labsight.errors.ServiceError``
subclasses) and results (``labsight.result.Result``) are those of the
synchronous client, so code moves between the two by adding ``await``.

Examples
--------
>>> async def features(paths):                                   # doctest: +SKIP
...     async with AsyncLabSightClient("localhost:50051") as lab:
...         results = await asyncio.gather(*(lab.run("fractal", path) for path in paths))
...         return [result.to_pandas() for result in results]
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from labsight.batch_results import BatchResultReader, entry_result
from labsight.client import (
    POLL_INTERVAL_S,
    RESTART_PATIENCE_S,
    TERMINAL,
    ImageLike,
    TableCut,
    batch_anndata,
    batch_frame,
    batch_messages,
    bearer_metadata,
    build_request,
    channel_credentials,
    channel_options,
    default_gateway_address,
    default_token,
    fits_one_message,
    split_ended,
    submit_batch_bytes,
    upload_messages,
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
from labsight.result import Result
from labsight.v1 import gateway_pb2 as pb
from labsight.v1 import gateway_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    import anndata
    import pandas as pd


class AsyncLabSightClient:
    """A ``grpc.aio`` connection to the gateway. Use as ``async with`` or await ``close()``.

    ``address``, ``token``, ``max_message_bytes``, ``timeout_s`` and ``tls_ca``
    are those of ``labsight.client.LabSightClient``; so are the methods, as
    coroutines (and async iterators for the streams). ``stub`` is the raw
    ``grpc.aio`` stub, whose calls raise plain ``grpc.aio.AioRpcError``.
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
        self.channel = (grpc.aio.secure_channel(self.address, credentials, options=options)
                        if credentials else grpc.aio.insecure_channel(self.address, options=options))
        self.stub = pb_grpc.GatewayServiceStub(self.channel)
        self._methods = {"SubmitBatch": submit_batch_bytes(self.channel)}  # wire bytes in
        self.metadata = bearer_metadata(self.token)

    async def __aenter__(self) -> AsyncLabSightClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel."""
        await self.channel.close()

    async def _call(self, rpc: str, request: Any, timeout: float | None = None) -> Any:
        """A unary (or client-streaming) call whose refusal raises its ServiceError subclass."""
        try:
            method = self._methods.get(rpc) or getattr(self.stub, rpc)
            return await method(request, timeout=timeout, metadata=self.metadata)
        except grpc.RpcError as error:
            raise service_error(error, rpc=rpc, address=self.address) from None

    async def _stream(self, rpc: str, request: Any, timeout: float | None = None) -> AsyncIterator[Any]:
        """The answers of a server-streaming call; a refusal raises its ServiceError subclass."""
        call = getattr(self.stub, rpc)(request, timeout=timeout, metadata=self.metadata)
        try:
            async for answer in call:
                yield answer
        except grpc.RpcError as error:
            raise service_error(error, rpc=rpc, address=self.address) from None
        finally:
            call.cancel()  # a reader that stopped early frees the gateway's stream at once

    async def submit_request(self, request: pb.SubmitJobRequest) -> pb.Job:
        """Queue a prepared request; inputs near the message limit are uploaded in chunks."""
        if fits_one_message(request, self.max_message_bytes):
            return await self._call("SubmitJob", request, self.timeout_s)
        return await self._call("UploadJob", upload_messages(request), self.timeout_s)

    async def submit(self, pipeline: str, image: ImageLike, params: Mapping[str, object] | None = None,
                     **options: object) -> pb.Job:
        """Queue one job; ``options`` are those of ``labsight.client.build_request``."""
        return await self.submit_request(build_request(pipeline, image, params, **options))

    async def submit_batch(
        self, requests: Iterable[pb.SubmitJobRequest], batch_id: str = ""
    ) -> pb.SubmitBatchResponse:
        """Queue many jobs under one batch id in one client stream (many jobs per message)."""
        return await self._call("SubmitBatch", batch_messages(requests, batch_id, self.max_message_bytes))

    async def get(self, job_id: str) -> pb.Job:
        """A job's current state."""
        return await self._call("GetJob", pb.GetJobRequest(job_id=job_id), self.timeout_s)

    async def watch(self, job_id: str, timeout_s: float | None = None) -> AsyncIterator[pb.Job]:
        """Every state of a job until it ends."""
        async for event in self._stream("WatchJob", pb.WatchJobRequest(job_id=job_id), timeout_s):
            yield event.job

    async def wait(self, job_id: str, timeout_s: float | None = None) -> pb.Job:
        """Until the job ends, its final state: watched, else polled (as ``LabSightClient.wait``).

        TimeoutError after ``timeout_s``.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        job = await self.get(job_id)
        try:
            async with contextlib.aclosing(self.watch(job_id, timeout_s)) as states:
                async for job in states:
                    if job.status in TERMINAL:
                        return job
        except ServiceError:
            pass  # polling below answers the same question without a stream
        unreachable_since: float | None = None
        while job.status not in TERMINAL:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} did not end within {timeout_s} s")
            await asyncio.sleep(POLL_INTERVAL_S)
            try:
                job = await self.get(job_id)
                unreachable_since = None
            except UnavailableError:
                unreachable_since = unreachable_since or time.monotonic()
                if time.monotonic() - unreachable_since > RESTART_PATIENCE_S:
                    raise
        return job

    async def result(self, job_id: str) -> Result:
        """A finished job's result; JobFailedError if it ended without one,
        FailedPreconditionError while it is still running."""
        try:
            chunks = [chunk.data async for chunk in self._stream(
                "GetJobResult", pb.GetJobResultRequest(job_id=job_id), self.timeout_s)]
            return Result(pb.JobResult.FromString(b"".join(chunks)))
        except FailedPreconditionError as error:
            job = await self.get(job_id)
            if job.status == pb.JOB_STATUS_DONE:  # it finished between the two calls
                return await self.result(job_id)
            if job.status in TERMINAL:
                raise JobFailedError(job, rpc=error.rpc, address=error.address) from None
            raise

    async def run(self, pipeline: str, image: ImageLike, params: Mapping[str, object] | None = None,
                  timeout_s: float | None = None, **options: object) -> Result:
        """Submit one job, wait for it and return its result; JobFailedError if it failed."""
        job = await self.submit(pipeline, image, params, **options)
        await self.wait(job.job_id, timeout_s)
        return await self.result(job.job_id)

    async def cancel(self, job_id: str) -> pb.Job:
        """Cancel a queued or running job."""
        return await self._call("CancelJob", pb.CancelJobRequest(job_id=job_id), self.timeout_s)

    async def batch(self, batch_id: str) -> pb.Batch:
        """A batch's counts per status."""
        return await self._call("GetBatch", pb.GetBatchRequest(batch_id=batch_id), self.timeout_s)

    async def watch_batch(self, batch_id: str) -> AsyncIterator[pb.Batch]:
        """Every state of a batch until all its jobs ended."""
        async for batch in self._stream("WatchBatch", pb.WatchBatchRequest(batch_id=batch_id)):
            yield batch

    async def batch_jobs(self, batch_id: str) -> list[pb.Job]:
        """Every job of a batch (all pages)."""
        jobs: list[pb.Job] = []
        token = ""
        while True:
            page = await self._call("ListJobs", pb.ListJobsRequest(
                batch_id=batch_id, page_size=500, page_token=token), self.timeout_s)
            jobs.extend(page.jobs)
            token = page.next_page_token
            if not token:
                return jobs

    async def batch_results(self, batch_id: str, follow: bool = False,
                            timeout_s: float | None = None
                            ) -> AsyncIterator[tuple[pb.Job, Result | None]]:
        """As ``LabSightClient.batch_results``: one GetBatchResults stream, each job once it
        has ended with ``follow`` (from a gateway without it, or with every watch stream
        taken, ListJobs and a GetJobResult per done job)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        reader = BatchResultReader()
        yielded = False
        try:
            async for chunk in self._stream(
                    "GetBatchResults", pb.GetBatchResultsRequest(batch_id=batch_id, follow=follow),
                    timeout_s):
                for entry in reader.feed(chunk):
                    yielded = True
                    yield entry.job, entry_result(entry, self.address)
        except (UnimplementedError, ResourceExhaustedError):  # an older gateway; no stream free
            if yielded:
                raise
            for job in await self.batch_jobs(batch_id):
                if follow and job.status not in TERMINAL:
                    job = await self.wait(job.job_id, None if deadline is None
                                          else max(deadline - time.monotonic(), 0.0))
                yield job, await self.result(job.job_id) if job.status == pb.JOB_STATUS_DONE else None
            return
        reader.finish()

    async def ended_results(
        self, batch_id: str, skip_failed: bool = False, timeout_s: float | None = None, *,
        table: str | None = None,
    ) -> tuple[list[tuple[pb.Job, Result]], dict[str, str]]:
        """As ``LabSightClient.ended_results``: one stream following the batch, each result cut
        to the table as it comes."""
        cut = None if table is None else TableCut(table)
        ended = [(job, result if result is None or cut is None else cut(result))
                 async for job, result in self.batch_results(batch_id, True, timeout_s)]
        return split_ended(ended, skip_failed, self.address)

    async def batch_to_pandas(self, batch_id: str, table: str | None = None, *,
                              skip_failed: bool = False, timeout_s: float | None = None) -> pd.DataFrame:
        """As ``LabSightClient.batch_to_pandas``."""
        return batch_frame(batch_id, *await self.ended_results(batch_id, skip_failed, timeout_s,
                                                                table=table or ""), table)

    async def batch_to_anndata(self, batch_id: str, table: str | None = None, *,
                               skip_failed: bool = False,
                               timeout_s: float | None = None) -> anndata.AnnData:
        """As ``LabSightClient.batch_to_anndata``."""
        return batch_anndata(batch_id, *await self.ended_results(batch_id, skip_failed, timeout_s,
                                                                  table=table or ""), table)

    async def pipelines(self) -> list[pb.PipelineInfo]:
        """The pipelines the gateway runs."""
        return list((await self._call("ListPipelines", pb.ListPipelinesRequest(),
                                      self.timeout_s)).pipelines)


