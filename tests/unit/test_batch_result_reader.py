"""BatchResultReader: a GetBatchResults stream reassembled, and streams out of order refused."""

from __future__ import annotations

import pytest

from labsight.batch_results import BatchResultReader, entry_result
from labsight.errors import NotFoundError
from labsight.v1 import gateway_pb2 as pb

DONE = pb.JOB_STATUS_DONE


def _message(*chunks: pb.BatchResultChunk) -> pb.BatchResults:
    return pb.BatchResults(chunks=list(chunks))


def test_jobs_complete_in_order_across_and_within_messages() -> None:
    result = pb.JobResult(job_id="a", scalars={"fractal_dimension": 1.5}).SerializeToString()
    reader = BatchResultReader()
    first = reader.feed(_message(
        pb.BatchResultChunk(job=pb.Job(job_id="q", status=pb.JOB_STATUS_FAILED, error="bad")),
        pb.BatchResultChunk(job=pb.Job(job_id="a", status=DONE), data=result[:5], total_bytes=len(result)),
    ))
    assert [(entry.job.job_id, entry.data) for entry in first] == [("q", None)]
    second = reader.feed(_message(
        pb.BatchResultChunk(data=result[5:], total_bytes=len(result)),
        pb.BatchResultChunk(job=pb.Job(job_id="e", status=DONE), result_error="the result has expired"),
    ))
    reader.finish()
    assert [(entry.job.job_id, entry.data, entry.error) for entry in second] == [
        ("a", result, ""), ("e", None, "the result has expired")]
    assert entry_result(second[0]).scalars["fractal_dimension"] == 1.5
    assert entry_result(first[0]) is None
    with pytest.raises(NotFoundError, match="result of job e: the result has expired"):
        entry_result(second[1])


def test_streams_out_of_order_or_cut_short_are_refused_naming_the_job() -> None:
    started = pb.BatchResultChunk(job=pb.Job(job_id="a", status=DONE), data=b"xy", total_bytes=4)
    reader = BatchResultReader()
    reader.feed(_message(started))
    with pytest.raises(ValueError, match="job b began before the result of job a was complete"):
        reader.feed(_message(pb.BatchResultChunk(job=pb.Job(job_id="b"))))
    with pytest.raises(ValueError, match="ended after 2 of the 4 bytes of job a"):
        reader.finish()
    with pytest.raises(ValueError, match="before their job's record"):
        BatchResultReader().feed(_message(pb.BatchResultChunk(data=b"zz", total_bytes=2)))
