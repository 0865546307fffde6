"""Reassembles a GetBatchResults stream into each job's record and serialized result."""

from __future__ import annotations

from dataclasses import dataclass, field

from labsight.errors import NotFoundError
from labsight.result import Result
from labsight.v1 import gateway_pb2 as pb

__all__ = ["BatchResultReader", "JobResultBytes", "entry_result"]


@dataclass(frozen=True)
class JobResultBytes:
    """One job of a batch as GetBatchResults sends it.

    Attributes
    ----------
    job : Job
        The job's record.
    data : bytes or None
        Its serialized JobResult; None unless the job is done and its result was found.
    error : str
        Why a done job came without its result (it expired); empty otherwise.
    """

    job: pb.Job
    data: bytes | None
    error: str = ""


@dataclass
class BatchResultReader:
    """Feed it the stream's messages in order; each ``feed`` returns the jobs it completed.

    Examples
    --------
    >>> reader = BatchResultReader()
    >>> job = pb.Job(job_id="a", status=pb.JOB_STATUS_DONE)
    >>> reader.feed(pb.BatchResults(chunks=[pb.BatchResultChunk(job=job, data=b"xy", total_bytes=4)]))
    []
    >>> done = reader.feed(pb.BatchResults(chunks=[pb.BatchResultChunk(data=b"zw", total_bytes=4)]))
    >>> [(entry.job.job_id, entry.data) for entry in done]
    [('a', b'xyzw')]
    >>> reader.finish()
    """

    _job: pb.Job | None = None
    _parts: list[bytes] = field(default_factory=list)
    _received: int = 0
    _total: int = 0

    def feed(self, message: pb.BatchResults) -> list[JobResultBytes]:
        """The jobs this message completes, in order (none while a result is still arriving).

        Raises
        ------
        ValueError
            If the message breaks the stream's order: a job's record before the previous
            job's result was complete, or result bytes with no job before them.
        """
        completed: list[JobResultBytes] = []
        for chunk in message.chunks:
            completed += self._chunk(chunk)
        return completed

    def _chunk(self, chunk: pb.BatchResultChunk) -> list[JobResultBytes]:
        if chunk.HasField("job"):
            if self._job is not None:
                raise ValueError(f"GetBatchResults: job {chunk.job.job_id} began before the "
                                 f"result of job {self._job.job_id} was complete")
            if chunk.result_error or chunk.job.status != pb.JOB_STATUS_DONE:
                return [JobResultBytes(chunk.job, None, chunk.result_error)]
            self._job, self._total = chunk.job, chunk.total_bytes
        elif self._job is None:
            raise ValueError("GetBatchResults: result bytes arrived before their job's record")
        data = chunk.data  # each read of a bytes field copies it: once
        self._parts.append(data)
        self._received += len(data)
        if self._received < self._total:
            return []
        whole = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
        done = JobResultBytes(self._job, whole)
        self._job, self._parts, self._received, self._total = None, [], 0, 0
        return [done]

    def finish(self) -> None:
        """Check that the stream did not end inside a job's result.

        Raises
        ------
        ValueError
            Naming the job whose result was cut off.
        """
        if self._job is not None:
            raise ValueError(f"GetBatchResults: the stream ended after {self._received} of the "
                             f"{self._total} bytes of job {self._job.job_id}'s result")


def entry_result(entry: JobResultBytes, address: str = "") -> Result | None:
    """The Result of one job of the stream (None unless it is done).

    Raises
    ------
    NotFoundError
        If the job is done but its result expired, as GetJobResult answers then.
    """
    if entry.error:
        raise NotFoundError(f"job_id: the result of job {entry.job.job_id}: {entry.error}",
                            rpc="GetBatchResults", address=address)
    return None if entry.data is None else Result(pb.JobResult.FromString(entry.data))
