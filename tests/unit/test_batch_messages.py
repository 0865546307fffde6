"""The SDK's SubmitBatch stream, written as wire bytes, parses to the jobs sent, packed as the
gateway expects: the header first, then messages of at most BATCH_MESSAGE_JOBS jobs or
BATCH_MESSAGE_BYTES, a larger job alone."""

from __future__ import annotations

from labsight.client import BATCH_MESSAGE_BYTES, BATCH_MESSAGE_JOBS, batch_messages
from labsight.v1 import gateway_pb2 as pb
from labsight.v1 import tensor_pb2


def _job(index: int, data_bytes: int = 10) -> pb.SubmitJobRequest:
    image = tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=bytes([index % 256]) * data_bytes,
                                                             format="png"), name=f"job-{index}")
    return pb.SubmitJobRequest(pipeline="fractal", input=pb.JobInput(image=image),
                               params={"box_sizes": "3,5"})


def _parsed(jobs: list[pb.SubmitJobRequest], limit: int = 64 << 20) -> list[pb.SubmitBatchRequest]:
    return [pb.SubmitBatchRequest.FromString(data) for data in batch_messages(jobs, "b-1", limit)]


def test_the_stream_parses_to_the_header_then_every_job_in_order() -> None:
    jobs = [_job(i) for i in range(2 * BATCH_MESSAGE_JOBS + 3)]
    messages = _parsed(jobs)
    assert messages[0].header == pb.BatchHeader(batch_id="b-1", job_count=len(jobs))
    assert [len(m.jobs.jobs) for m in messages[1:]] == [BATCH_MESSAGE_JOBS, BATCH_MESSAGE_JOBS, 3]
    assert [job for m in messages[1:] for job in m.jobs.jobs] == jobs
    sent = b"".join(batch_messages(jobs, "b-1", 64 << 20))
    built = b"".join(message.SerializeToString() for message in messages)
    assert sent == built  # byte for byte what protobuf writes for the same messages


def test_messages_stay_under_the_byte_budget_and_a_big_job_travels_alone() -> None:
    limit = 2 * BATCH_MESSAGE_BYTES
    small = BATCH_MESSAGE_BYTES // 3
    jobs = [_job(0, small), _job(1, small), _job(2, small), _job(3, BATCH_MESSAGE_BYTES + 1),
            _job(4, 10)]
    messages = _parsed(jobs, limit)
    assert [[job.input.image.name for job in m.jobs.jobs] for m in messages[1:]] == [
        ["job-0", "job-1"], ["job-2"], ["job-3"], ["job-4"]]
    # a lower message limit halves the budget too
    assert len(_parsed([_job(i, 1000) for i in range(4)], limit=4000)) == 1 + 4


def test_a_generator_of_jobs_declares_no_count() -> None:
    messages = [pb.SubmitBatchRequest.FromString(data)
                for data in batch_messages((_job(i) for i in range(3)), "", 64 << 20)]
    assert messages[0].header.job_count == 0
    assert len(messages[1].jobs.jobs) == 3
