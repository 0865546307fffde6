"""GetBatchResults: every job of a batch with its result in one stream, through a real gateway,
worker and features service on loopback and the test Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import redis

from labsight import stored_results
from labsight.aio import AsyncLabSightClient
from labsight.batch_results import BatchResultReader, JobResultBytes
from labsight.catalog import GATEWAY
from labsight.client import LabSightClient, build_request
from labsight.config import Settings
from labsight.errors import NotFoundError
from labsight.runtime.server import RunningServer
from labsight.v1 import gateway_pb2 as pb
from labsight.v1 import gateway_pb2_grpc as pb_grpc
from services.gateway import batch_results, servicer
from services.gateway.auth import create_token
from services.gateway.jobs import DONE, JobStore
from services.gateway.keys import RedisKeys
from services.gateway.servicer import GatewayServicer
from services.gateway.servicer import register as register_gateway
from tests.integration.conftest import InProcessStack

FAST = {"box_sizes": "3-11"}


def _finished_batch(stack: InProcessStack, batch_id: str, jobs: int = 4) -> list[pb.Job]:
    """A batch of small fractal jobs, the second cancelled before any worker ran; all ended."""
    rng = np.random.default_rng(11)
    requests = [build_request("fractal", rng.integers(0, 256, (40, 40), dtype=np.uint8), FAST,
                              name=f"well-{i}.png") for i in range(jobs)]
    stack.client.submit_batch(requests, batch_id=batch_id)
    stack.client.cancel(stack.client.batch_jobs(batch_id)[1].job_id)
    stack.start_worker()
    for state in stack.client.watch_batch(batch_id):
        if state.finished:
            break
    return stack.client.batch_jobs(batch_id)


def _read(stub: pb_grpc.GatewayServiceStub, batch_id: str, follow: bool = False
          ) -> tuple[list[JobResultBytes], int]:
    """The stream's jobs, reassembled, and how many messages it took."""
    reader = BatchResultReader()
    entries: list[JobResultBytes] = []
    messages = 0
    for message in stub.GetBatchResults(pb.GetBatchResultsRequest(batch_id=batch_id, follow=follow)):
        messages += 1
        entries += reader.feed(message)
    reader.finish()
    return entries, messages


def test_every_job_comes_in_submission_order_with_the_bytes_get_job_result_gives(
    stack: InProcessStack,
) -> None:
    jobs = _finished_batch(stack, "plate-9")
    entries, messages = _read(stack.client.stub, "plate-9")
    assert [entry.job.job_id for entry in entries] == [job.job_id for job in jobs]
    assert [entry.job.status for entry in entries] == [job.status for job in jobs]
    assert entries[1].job.status == pb.JOB_STATUS_CANCELLED and entries[1].data is None
    for entry in (entries[0], *entries[2:]):
        expected = b"".join(chunk.data for chunk in stack.client.stub.GetJobResult(
            pb.GetJobResultRequest(job_id=entry.job.job_id)))
        assert entry.data == expected and entry.error == ""
    assert messages == 1  # small results share a message
    sdk = list(stack.client.batch_results("plate-9"))
    assert [result is None for _, result in sdk] == [False, True, False, False]
    assert sdk[2][1].scalars["fractal_dimension"] == stack.client.result(jobs[2].job_id).scalars[
        "fractal_dimension"]


def test_a_followed_stream_sends_each_job_once_it_ended_jobs_added_meanwhile_too(
    stack: InProcessStack,
) -> None:
    rng = np.random.default_rng(12)
    requests = [build_request("fractal", rng.integers(0, 256, (40, 40), dtype=np.uint8), FAST,
                              name=f"well-{i}.png") for i in range(4)]
    client = stack.client
    client.submit_batch(requests[:3], batch_id="plate-20")
    first_job = client.batch_jobs("plate-20")[0]
    client.cancel(first_job.job_id)
    followed = iter(client.batch_results("plate-20", follow=True))
    job, result = next(followed)  # no worker yet: the stream sends the ended job and waits
    assert (job.job_id, job.status, result) == (first_job.job_id, pb.JOB_STATUS_CANCELLED, None)
    client.submit_batch(requests[3:], batch_id="plate-20")  # joins the batch while it is followed
    stack.start_worker()
    rest = list(followed)  # ends once every job has ended
    jobs = client.batch_jobs("plate-20")
    assert [job.job_id for job, _ in rest] == [job.job_id for job in jobs[1:]]
    assert all(job.status == pb.JOB_STATUS_DONE and result is not None for job, result in rest)
    assert [result.scalars["fractal_dimension"] for _, result in rest] == [
        result.scalars["fractal_dimension"] for _, result in client.batch_results("plate-20")
        if result is not None]

    async def follow_async() -> list[tuple[str, int]]:
        async with AsyncLabSightClient(stack.gateway.address, token="") as lab:
            return [(job.job_id, job.status)
                    async for job, _ in lab.batch_results("plate-20", follow=True)]

    assert asyncio.run(follow_async()) == [(job.job_id, job.status) for job in jobs]


def test_ended_results_wait_for_a_running_batch_and_poll_when_no_stream_is_free(
    stack: InProcessStack, serve: Callable[..., RunningServer]
) -> None:
    limited = Settings(**{**vars(stack.settings), "max_workers": 8})  # 4 watch streams at once
    gateway = serve(register_gateway, GATEWAY.grpc_services, limited)
    rng = np.random.default_rng(13)
    with LabSightClient(gateway.address, token="") as client:
        jobs = client.submit_batch([build_request("fractal", rng.integers(0, 256, (40, 40), np.uint8),
                                                  FAST) for _ in range(3)], batch_id="plate-31").job_ids
        with pytest.raises(TimeoutError):  # no worker yet: the followed batch does not end
            stack.client.ended_results("plate-31", timeout_s=0.5)
        watches = [client.watch(jobs[0], timeout_s=120) for _ in range(4)]
        assert all(next(watch).status == pb.JOB_STATUS_QUEUED for watch in watches)  # all taken
        with pytest.raises(grpc.RpcError) as refused:
            list(client.stub.GetBatchResults(pb.GetBatchResultsRequest(batch_id="plate-31",
                                                                      follow=True)))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

        async def ended_async() -> None:
            async with AsyncLabSightClient(gateway.address, token="") as lab:
                await lab.ended_results("plate-31", timeout_s=0.5)

        # The SDK waits job by job instead, polling, within its time
        with pytest.raises(TimeoutError):
            client.ended_results("plate-31", timeout_s=0.5)
        with pytest.raises(TimeoutError):
            asyncio.run(ended_async())
        waiting = ThreadPoolExecutor(1).submit(client.ended_results, "plate-31")
        stack.start_worker()
        finished, failed = waiting.result(timeout=120)
    assert [job.job_id for job, _ in finished] == list(jobs) and not failed
    assert all(result.scalars["fractal_dimension"] > 0 for _, result in finished)


def test_results_cut_into_chunks_pages_and_groups_reassemble_exactly(
    stack: InProcessStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = _finished_batch(stack, "plate-10", jobs=5)
    whole, _ = _read(stack.client.stub, "plate-10")
    monkeypatch.setattr(servicer, "RESULT_CHUNK_BYTES", 100)
    monkeypatch.setattr(batch_results, "PAGE_JOBS", 2)
    monkeypatch.setattr(batch_results, "GROUP_BYTES", 150)
    cut, messages = _read(stack.client.stub, "plate-10")
    assert [(e.job.job_id, e.data) for e in cut] == [(e.job.job_id, e.data) for e in whole]
    sizes = [len(entry.data) for entry in cut if entry.data is not None]
    # a message is full after one chunk here: one per 100 bytes of result, one for the cancelled job
    assert messages == 1 + sum(-(-size // 100) for size in sizes)
    assert len(cut) == len(jobs) and min(sizes) > 100
    monkeypatch.setattr(batch_results, "FOLLOW_WINDOW", 1)  # windows of 1, 2, 2 on an ended batch
    followed, _ = _read(stack.client.stub, "plate-10", follow=True)
    assert [(e.job.job_id, e.data) for e in followed] == [(e.job.job_id, e.data) for e in whole]


def test_results_kept_packed_come_back_whole_and_are_grouped_by_their_plain_size(
    stack: InProcessStack, redis_for: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """These fractal results are too small to be packed; packed here, the stream and
    GetJobResult give the same bytes, and a group holds no more plain bytes than GROUP_BYTES."""
    jobs = _finished_batch(stack, "plate-14")
    whole, _ = _read(stack.client.stub, "plate-14")
    keys = RedisKeys(stack.settings.key_prefix)
    monkeypatch.setattr(stored_results, "PACK_MIN_BYTES", 0)
    monkeypatch.setattr(stored_results, "PACK_MIN_SAVING", -1.0)  # packed even if no smaller
    done = [job for job in jobs if job.status == pb.JOB_STATUS_DONE]
    for job in done:
        plain = redis_for.get(keys.job_result(job.job_id))
        assert plain is not None and not plain.startswith(stored_results.PACKED_MAGIC)
        redis_for.set(keys.job_result(job.job_id), stored_results.pack_result(plain), keepttl=True)
    again, _ = _read(stack.client.stub, "plate-14")
    assert [(e.job.job_id, e.data) for e in again] == [(e.job.job_id, e.data) for e in whole]
    for entry in whole:
        if entry.data is not None:
            assert b"".join(chunk.data for chunk in stack.client.stub.GetJobResult(
                pb.GetJobResultRequest(job_id=entry.job.job_id))) == entry.data
    largest = max(len(entry.data) for entry in whole if entry.data is not None)
    monkeypatch.setattr(batch_results, "GROUP_BYTES", largest)  # one done job per group
    records = JobStore(redis_for, keys).load_many([job.job_id for job in jobs])
    groups = list(batch_results._groups(redis_for, keys, [r for r in records if r is not None]))
    assert [sum(r.status == DONE for r in group) for group in groups] == [1] * len(done)


def test_an_expired_result_is_named_and_the_sdk_raises_not_found(
    stack: InProcessStack, redis_for: redis.Redis
) -> None:
    jobs = _finished_batch(stack, "plate-11", jobs=3)
    redis_for.delete(RedisKeys(stack.settings.key_prefix).job_result(jobs[2].job_id))
    entries, _ = _read(stack.client.stub, "plate-11")
    assert entries[2].data is None and entries[2].error == batch_results.EXPIRED
    assert entries[0].data is not None
    with pytest.raises(NotFoundError, match=f"result of job {jobs[2].job_id}: the result has expired"):
        list(stack.client.batch_results("plate-11"))


def test_unknown_foreign_and_malformed_batches_are_refused(
    stack: InProcessStack, serve: Callable[..., RunningServer], settings: Settings, tmp_path: Path
) -> None:
    def code_of(stub: pb_grpc.GatewayServiceStub, batch_id: str,
                metadata: tuple[tuple[str, str], ...] = ()) -> grpc.StatusCode:
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.GetBatchResults(pb.GetBatchResultsRequest(batch_id=batch_id), metadata=metadata))
        return caught.value.code()

    assert code_of(stack.client.stub, "no-such-batch") == grpc.StatusCode.NOT_FOUND
    assert code_of(stack.client.stub, "plate:jobs") == grpc.StatusCode.INVALID_ARGUMENT
    tokens = tmp_path / "tokens"
    lab_a, lab_b = create_token(tokens, "lab-a"), create_token(tokens, "lab-b")
    secured = Settings(**{**vars(settings), "allow_anonymous": False, "tokens_file": str(tokens)})
    gateway = serve(register_gateway, GATEWAY.grpc_services, secured)
    with LabSightClient(gateway.address, token=lab_a) as client:
        client.submit_batch([build_request("fractal", np.zeros((32, 32), np.uint8), FAST)],
                            batch_id="shared-name")
        assert [job.status for job, _ in client.batch_results("shared-name")] == [pb.JOB_STATUS_QUEUED]
    assert code_of(pb_grpc.GatewayServiceStub(grpc.insecure_channel(gateway.address)), "shared-name",
                   (("authorization", f"Bearer {lab_b}"),)) == grpc.StatusCode.NOT_FOUND


def test_the_sdk_falls_back_to_a_call_per_job_on_a_gateway_without_the_stream(
    stack: InProcessStack, serve: Callable[..., RunningServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = _finished_batch(stack, "plate-12", jobs=3)
    # An older gateway: the generated base class answers UNIMPLEMENTED
    monkeypatch.setattr(GatewayServicer, "GetBatchResults",
                        pb_grpc.GatewayServiceServicer.GetBatchResults)
    older = serve(register_gateway, GATEWAY.grpc_services, stack.settings)
    with pytest.raises(grpc.RpcError) as caught:
        list(pb_grpc.GatewayServiceStub(grpc.insecure_channel(older.address)).GetBatchResults(
            pb.GetBatchResultsRequest(batch_id="plate-12")))
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    with LabSightClient(older.address, token="") as client:
        fetched = list(client.batch_results("plate-12"))
        assert [(job.job_id, result is None) for job, result in client.batch_results(
            "plate-12", follow=True)] == [(job.job_id, result is None) for job, result in fetched]
        finished, failed = client.ended_results("plate-12", skip_failed=True)
    assert [job.job_id for job, _ in fetched] == [job.job_id for job in jobs]
    assert [result is None for _, result in fetched] == [False, True, False]
    assert [job.job_id for job, _ in finished] == [jobs[0].job_id, jobs[2].job_id]
    assert list(failed) == [jobs[1].job_id]

    async def read_async(address: str) -> list[tuple[str, bool]]:
        async with AsyncLabSightClient(address, token="") as client:
            return [(job.job_id, result is None) async for job, result in client.batch_results("plate-12")]

    expected = [(job.job_id, job.status != pb.JOB_STATUS_DONE) for job in jobs]
    assert asyncio.run(read_async(older.address)) == expected
    assert asyncio.run(read_async(stack.gateway.address)) == expected


def test_results_cut_to_one_table_keep_it_and_its_rows_and_drop_the_rest(
    stack: InProcessStack,
) -> None:
    jobs = _finished_batch(stack, "plate-13", jobs=3)
    client = stack.client
    whole, _ = client.ended_results("plate-13", skip_failed=True)
    main, _ = client.ended_results("plate-13", skip_failed=True, table="")
    weka, failed = client.ended_results("plate-13", skip_failed=True, table="weka_fractal")
    assert list(failed) == [jobs[1].job_id]
    assert len(whole[0][1].tables) > 1 and whole[0][1].tensors  # there is something to cut
    for kept, name in ((main, whole[0][1].main_table), (weka, "weka_fractal")):
        assert [job.job_id for job, _ in kept] == [job.job_id for job, _ in whole]
        for (_, cut), (_, full) in zip(kept, whole, strict=True):
            assert list(cut.tables) == [name] and not cut.tensors
            assert cut.tables[name] == full.tables[name]
            assert (cut.input_name, dict(cut.provenance)) == (full.input_name, dict(full.provenance))
    frame = client.batch_to_pandas("plate-13", skip_failed=True)
    assert frame.attrs["table"] == whole[0][1].main_table and len(frame) == 2

    async def cut_async() -> list[list[str]]:
        async with AsyncLabSightClient(stack.gateway.address, token="") as lab:
            finished, _ = await lab.ended_results("plate-13", skip_failed=True, table="weka_fractal")
            return [list(result.tables) for _, result in finished]

    assert asyncio.run(cut_async()) == [["weka_fractal"], ["weka_fractal"]]
