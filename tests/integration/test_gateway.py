"""The gateway and worker end to end on real Redis and real loopback gRPC."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pytest
import redis
import tifffile

import labsight.images
from labsight.catalog import GATEWAY
from labsight.client import LabSightClient, batch_messages, build_request
from labsight.config import Settings
from labsight.demo import demo_image
from labsight.errors import Cancelled
from labsight.images import encode_png
from labsight.runtime.server import RunningServer
from labsight.tensors import from_tensor
from labsight.v1 import gateway_pb2 as pb
from labsight.v1 import tensor_pb2
from services.features.fractal import gliding_box, percolation
from services.features.fractal_columns import fractal_columns, percolation_columns
from services.gateway.keys import RedisKeys
from services.gateway.queue import build_queue
from services.gateway.servicer import GatewayServicer
from services.gateway.servicer import register as register_gateway

from .conftest import InProcessStack


def _rpc_error(call, *args) -> grpc.RpcError:  # noqa: ANN001 - any stub method
    with pytest.raises(grpc.RpcError) as error:
        call(*args)
    return error.value


def test_fractal_job_result_equals_a_direct_call(stack: InProcessStack) -> None:
    stack.start_worker()
    image = demo_image()
    job = stack.client.submit("fractal", image, {"percolation": True, "box_sizes": "3-11"})
    assert job.status == pb.JOB_STATUS_QUEUED
    final = stack.client.wait(job.job_id, timeout_s=120)
    assert final.status == pb.JOB_STATUS_DONE, final.error
    assert final.attempts == 1 and final.progress == 1.0
    result = stack.client.result(job.job_id)
    direct = gliding_box(image, box_sizes=range(3, 12, 2))
    np.testing.assert_array_equal(from_tensor(result.tensors["lacunarity"]), direct.lacunarity)
    np.testing.assert_array_equal(from_tensor(result.tensors["box_count"]), direct.box_count)
    np.testing.assert_array_equal(
        from_tensor(result.tensors["probability_r5"]), direct.probability[5]
    )
    perc = percolation(image, box_sizes=range(3, 12, 2))
    np.testing.assert_array_equal(
        from_tensor(result.tensors["percolation_cluster_count"]), perc.cluster_count
    )
    table = result.tables["fractal"]
    assert list(table.columns[:5]) == [f"MinkLAC{i}" for i in range(1, 6)]
    assert from_tensor(table.values)[0, 0] == direct.lacunarity[0]
    seed_fractal = fractal_columns(direct, extras=False)
    assert list(result.tables["weka_fractal"].columns) == list(seed_fractal)
    assert from_tensor(result.tables["weka_fractal"].values)[0].tolist() == list(
        seed_fractal.values()
    )
    assert list(result.tables["weka_percolation"].columns) == list(percolation_columns(perc))


@pytest.mark.parametrize(("sizes", "tiles"), [([3, 5], 1), (list(range(3, 42, 2)), 2),
                                             (list(range(3, 42, 2)), 5)],
                         ids=["in a group", "alone", "alone, streaming its progress"])
def test_encoded_png_input_gives_the_same_result_as_pixels_decoded_once(
    stack: InProcessStack, monkeypatch: pytest.MonkeyPatch, sizes: list[int], tiles: int
) -> None:
    """The worker reads the file (for the job's warnings) and the features service gets those
    pixels, named as the file was, rather than decoding it again; a small job runs in a
    group (``run_many``), one of 128² with the sides 3-41 alone in one call, one of 320² in a
    call that streams its progress (STREAM_MIN_COST)."""
    decoded: list[tuple[int, int]] = []
    decode = labsight.images._decode_pillow
    monkeypatch.setattr(labsight.images, "_decode_pillow",
                        lambda image: decoded.append(image.size) or decode(image))
    stack.start_worker()
    image = np.tile(demo_image(), (tiles, tiles, 1))
    png = tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=encode_png(image)), name="demo.png")
    job = stack.client.submit("fractal", png, {"box_sizes": ",".join(map(str, sizes))})
    assert stack.client.wait(job.job_id, 120).status == pb.JOB_STATUS_DONE
    result = stack.client.result(job.job_id)
    assert result.input_name == "demo.png"
    assert len(decoded) == 1
    assert list(result.tables["fractal"].row_ids) == ["demo.png"]
    np.testing.assert_array_equal(
        from_tensor(result.tensors["lacunarity"]), gliding_box(image, box_sizes=sizes).lacunarity
    )


def test_a_chosen_position_of_a_multi_position_ome_tiff_is_the_one_computed(
    stack: InProcessStack
) -> None:
    stack.start_worker()
    rng = np.random.default_rng(11)
    positions = [rng.integers(0, 256, (40, 48, 3), dtype=np.uint8) for _ in range(3)]
    buffer = io.BytesIO()
    with tifffile.TiffWriter(buffer, ome=True) as tif:
        for pixels in positions:
            tif.write(pixels, photometric="rgb")
    plate = tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=buffer.getvalue()), name="scan.ome.tif")
    with pytest.raises(grpc.RpcError) as refused:  # checked at submit, from the header
        stack.client.submit("fractal", plate, {"box_sizes": "3,5", "series": "3"})
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "params.series: the file holds 3 image(s), 0-2; not 3" in refused.value.details()
    job = stack.client.submit("fractal", plate, {"box_sizes": "3,5", "series": "1"})
    assert stack.client.wait(job.job_id, 120).status == pb.JOB_STATUS_DONE
    result = stack.client.result(job.job_id)
    np.testing.assert_array_equal(from_tensor(result.tensors["lacunarity"]),
                                  gliding_box(positions[1], box_sizes=[3, 5]).lacunarity)
    assert result.provenance["series"] == "1" and not list(result.warnings)


def test_watch_streams_events_until_the_job_ends(stack: InProcessStack) -> None:
    # percolation on 256x256 runs long enough that the running state is seen, not coalesced
    slow = np.random.default_rng(4).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    job = stack.client.submit("fractal", slow, {"percolation": True})
    events = stack.client.watch(job.job_id, timeout_s=120)
    first = next(events)
    assert first.status == pb.JOB_STATUS_QUEUED
    stack.start_worker()
    statuses = [first.status] + [event.status for event in events]
    assert statuses[-1] == pb.JOB_STATUS_DONE
    assert pb.JOB_STATUS_RUNNING in statuses


def test_unknown_pipeline_is_invalid_argument(stack: InProcessStack) -> None:
    error = _rpc_error(stack.client.submit, "no-such-pipeline", demo_image())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "pipeline: unknown pipeline 'no-such-pipeline'" in error.details()


def test_unknown_pipeline_lists_the_known_ones(stack: InProcessStack) -> None:
    error = _rpc_error(stack.client.submit, "hpa-cell", demo_image())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    known = ["cell-tracks", "cells", "deep-features", "fractal", "hpa-cells", "spot-features",
             "vessel-content"]
    assert f"known pipelines: {known}" in error.details()


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=b"")), "empty image bytes"),
        (tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=b"\x89PNG\r\n\x1a\n garbage")),
         "corrupt PNG"),
        (tensor_pb2.Image(tensor=tensor_pb2.Tensor(dtype=tensor_pb2.DATA_TYPE_UINT8,
                                                   shape=[64, 64], data=b"\0" * 100)),
         "100 bytes do not match shape [64, 64]"),
        (tensor_pb2.Image(), "no image given"),
    ],
)
def test_bad_images_are_invalid_argument_and_nothing_is_queued(
    stack: InProcessStack, image: tensor_pb2.Image, message: str
) -> None:
    error = _rpc_error(stack.client.submit, "fractal", image)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.details() and "input.image" in error.details()
    assert stack.client.list_jobs() == []
    assert stack.client.pipelines()  # still serving


def test_bad_parameters_are_invalid_argument(stack: InProcessStack) -> None:
    error = _rpc_error(stack.client.submit, "fractal", demo_image(), {"box_sizes": "4,6"})
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "params.box_sizes: box sizes must be odd" in error.details()
    error = _rpc_error(stack.client.submit, "fractal", demo_image(), {"colour": "red"})
    assert "unknown parameter(s) 'colour' for pipeline" in error.details()
    error = _rpc_error(stack.client.submit, "fractal", demo_image(), {"box_sizes": "3-99"})
    assert "smaller than the largest box side 99" in error.details()


def test_unknown_job_is_not_found_everywhere(stack: InProcessStack) -> None:
    for call in (stack.client.get, stack.client.cancel, stack.client.result):
        error = _rpc_error(call, "feedbeef")
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert "no job 'feedbeef'" in error.details()
    error = _rpc_error(lambda job_id: list(stack.client.watch(job_id)), "feedbeef")
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_result_of_an_unfinished_job_is_failed_precondition(stack: InProcessStack) -> None:
    job = stack.client.submit("fractal", demo_image(), {"box_sizes": "3"})
    error = _rpc_error(stack.client.result, job.job_id)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_cancelled_queued_job_is_never_run(stack: InProcessStack) -> None:
    job = stack.client.submit("fractal", demo_image(), {"box_sizes": "3"})
    assert stack.client.cancel(job.job_id).status == pb.JOB_STATUS_CANCELLED
    later = stack.client.submit("fractal", demo_image(), {"box_sizes": "3"})
    stack.start_worker()
    assert stack.client.wait(later.job_id, 120).status == pb.JOB_STATUS_DONE
    cancelled = stack.client.get(job.job_id)
    assert cancelled.status == pb.JOB_STATUS_CANCELLED and cancelled.attempts == 0
    assert _rpc_error(stack.client.cancel, later.job_id).code() == grpc.StatusCode.FAILED_PRECONDITION


def test_batch_stream_queues_every_job_and_counts_them(stack: InProcessStack) -> None:
    requests = [build_request("fractal", demo_image(), {"box_sizes": "3"}) for _ in range(5)]
    reply = stack.client.submit_batch(requests, batch_id="plate-7")
    assert reply.batch_id == "plate-7" and len(reply.job_ids) == 5
    assert stack.client.batch("plate-7").counts["queued"] == 5
    stack.start_worker()
    states = list(stack.client.watch_batch("plate-7"))
    assert states[-1].finished and states[-1].counts["done"] == 5 and states[-1].total == 5
    listed = stack.client.list_jobs(batch_id="plate-7")
    assert sorted(job.job_id for job in listed) == sorted(reply.job_ids)


def test_idempotency_key_returns_the_same_job(stack: InProcessStack) -> None:
    first = stack.client.submit("fractal", demo_image(), {"box_sizes": "3"}, idempotency_key="s-1")
    second = stack.client.submit("fractal", demo_image(), {"box_sizes": "3"}, idempotency_key="s-1")
    assert first.job_id == second.job_id
    assert len(stack.client.list_jobs()) == 1


def test_large_input_is_uploaded_in_chunks(stack: InProcessStack) -> None:
    stack.client.max_message_bytes = 64 * 1024  # force the chunked path for a ~100 kB PNG
    noise = np.random.default_rng(5).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    png = tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=encode_png(noise)), name="n.png")
    job = stack.client.submit("fractal", png, {"box_sizes": "3"})
    stack.start_worker()
    assert stack.client.wait(job.job_id, 120).status == pb.JOB_STATUS_DONE
    np.testing.assert_array_equal(
        from_tensor(stack.client.result(job.job_id).tensors["lacunarity"]),
        gliding_box(noise, box_sizes=[3]).lacunarity,
    )


def test_full_queue_is_resource_exhausted_with_the_depth(
    stack: InProcessStack, serve: Callable[..., RunningServer]
) -> None:
    stack.client.submit("fractal", demo_image(), {"box_sizes": "3"})
    limited = Settings(**{**vars(stack.settings), "max_queue_depth": 1})
    small_gateway = serve(register_gateway, GATEWAY.grpc_services, limited)
    with LabSightClient(small_gateway.address, token="") as client:
        error = _rpc_error(client.submit, "fractal", demo_image(), {"box_sizes": "3"})
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "queue is full: 1 jobs queued or running (limit 1)" in error.details()


def test_cancelled_running_job_stops_at_the_next_step(
    stack: InProcessStack, redis_for: redis.Redis
) -> None:
    worker = stack.start_worker()
    big = np.random.default_rng(9).integers(0, 256, (384, 384, 3), dtype=np.uint8)
    job = stack.client.submit("fractal", big, {"percolation": True})
    deadline = time.monotonic() + 60
    while stack.client.get(job.job_id).status != pb.JOB_STATUS_RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert stack.client.cancel(job.job_id).status == pb.JOB_STATUS_CANCELLED
    keys = RedisKeys(stack.settings.key_prefix)
    deadline = time.monotonic() + 120
    while redis_for.xpending(keys.stream("normal"), "workers")["pending"]:
        assert time.monotonic() < deadline, "the worker never let go of the cancelled job"
        time.sleep(0.1)
    final = stack.client.get(job.job_id)
    assert final.status == pb.JOB_STATUS_CANCELLED and final.progress < 1.0
    assert not redis_for.exists(keys.job_result(job.job_id))
    assert worker.queue.depth() == 0


def test_large_results_stream_in_chunks(
    stack: InProcessStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("services.gateway.servicer.RESULT_CHUNK_BYTES", 4096)
    stack.start_worker()
    job = stack.client.submit("fractal", demo_image())
    assert stack.client.wait(job.job_id, 120).status == pb.JOB_STATUS_DONE
    chunks = list(stack.client.stub.GetJobResult(pb.GetJobResultRequest(job_id=job.job_id)))
    total = chunks[0].total_bytes
    assert total > 100_000 and len(chunks) == -(-total // 4096)
    assert all(len(chunk.data) <= 4096 for chunk in chunks)
    result = stack.client.result(job.job_id)
    assert result.ByteSize() == total
    assert len(result.tensors["probability_r41"].data) == 41 * 41 * 8


def test_bad_job_in_a_batch_queues_nothing_and_names_the_job(
    stack: InProcessStack, redis_for: redis.Redis
) -> None:
    good = build_request("fractal", demo_image(), {"box_sizes": "3"})
    one_channel = build_request("hpa-cells", demo_image(), idempotency_key="well-C3")
    error = _rpc_error(stack.client.submit_batch, [good, good, one_channel, good], "mixed")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "jobs[2], idempotency_key 'well-C3' of batch mixed" in error.details()
    assert "cells need 4" in error.details()
    assert "nothing of this batch was queued" in error.details()
    assert _rpc_error(stack.client.batch, "mixed").code() == grpc.StatusCode.NOT_FOUND
    assert stack.client.list_jobs() == []
    keys = RedisKeys(stack.settings.key_prefix)
    assert redis_for.xlen(keys.stream("normal")) == 0
    assert int(redis_for.get(keys.depth()) or 0) == 0
    assert not list(redis_for.scan_iter(match=keys.job("*")))  # the staged inputs are gone
    # The client fixes the job and retries: exactly the retried jobs exist, once.
    fixed = build_request("fractal", demo_image(), {"box_sizes": "3"}, idempotency_key="well-C3")
    reply = stack.client.submit_batch([good, good, fixed, good], "mixed")
    assert stack.client.batch("mixed").total == 4
    assert sorted(job.job_id for job in stack.client.list_jobs()) == sorted(reply.job_ids)


def test_batch_stream_cancelled_midway_queues_nothing(
    stack: InProcessStack, redis_for: redis.Redis
) -> None:
    job = build_request("fractal", demo_image(), {"box_sizes": "3"})
    hold = threading.Event()

    def messages() -> Iterator[pb.SubmitBatchRequest]:
        yield pb.SubmitBatchRequest(header=pb.BatchHeader(batch_id="cut"))
        yield pb.SubmitBatchRequest(jobs=pb.BatchJobs(jobs=[job] * 300))  # 256 are written at once
        hold.wait(60)  # the stream stays open, as a client that stalls or dies does

    call = stack.client.stub.SubmitBatch.future(messages())
    keys = RedisKeys(stack.settings.key_prefix)
    staged = lambda: list(redis_for.scan_iter(match=keys.job_input("*")))  # noqa: E731
    deadline = time.monotonic() + 60
    while len(staged()) < 256:
        assert time.monotonic() < deadline, "the first jobs of the stream were never written"
        time.sleep(0.05)
    call.cancel()
    hold.set()
    while staged():
        assert time.monotonic() < deadline, "the cancelled stream's inputs were left in Redis"
        time.sleep(0.05)
    assert stack.client.list_jobs() == []
    assert _rpc_error(stack.client.batch, "cut").code() == grpc.StatusCode.NOT_FOUND
    assert redis_for.xlen(keys.stream("normal")) == 0


class _GoneClient:
    """The servicer context of a call whose client cancelled after its last message arrived.

    grpc's request iterator ends as if the client had finished before
    is_active() turns False, a race no client can time from outside; this
    pins the state the handler then sees.
    """

    def invocation_metadata(self) -> tuple[()]:
        return ()

    def is_active(self) -> bool:
        return False

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return False  # the call has ended


def test_streams_whose_client_went_away_queue_nothing(
    settings: Settings, redis_for: redis.Redis
) -> None:
    servicer = GatewayServicer(build_queue(settings))
    header = build_request("fractal", demo_image(), {"box_sizes": "3"}, idempotency_key="gone-1")
    png = encode_png(demo_image())
    upload = [pb.UploadJobRequest(job=header), pb.UploadJobRequest(image_chunk=png)]
    with pytest.raises(Cancelled):
        servicer.UploadJob(iter(upload), _GoneClient())
    batch = [pb.SubmitBatchRequest(header=pb.BatchHeader(batch_id="gone")),
             pb.SubmitBatchRequest(jobs=pb.BatchJobs(jobs=[header, header]))]
    with pytest.raises(Cancelled):
        servicer.SubmitBatch(iter(batch), _GoneClient())
    keys = RedisKeys(settings.key_prefix)
    assert not list(redis_for.scan_iter(match=f"{settings.key_prefix}:*"))  # no job, input or key
    assert servicer.queue.depth() == 0 and redis_for.xlen(keys.stream("normal")) == 0


def test_batch_over_the_queue_limit_is_refused_and_queues_nothing(
    stack: InProcessStack, serve: Callable[..., RunningServer]
) -> None:
    limited = Settings(**{**vars(stack.settings), "max_queue_depth": 3})
    small_gateway = serve(register_gateway, GATEWAY.grpc_services, limited)
    requests = [build_request("fractal", demo_image(), {"box_sizes": "3"}) for _ in range(5)]
    with LabSightClient(small_gateway.address, token="") as client:
        error = _rpc_error(client.submit_batch, requests, "too-big")
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "queue is full: 0 jobs" in error.details()
        assert "nothing of batch too-big was queued" in error.details()
        assert _rpc_error(client.batch, "too-big").code() == grpc.StatusCode.NOT_FOUND
        assert client.list_jobs() == []


def test_a_batch_the_queue_filled_up_under_is_refused_at_commit_and_queues_nothing(
    stack: InProcessStack, serve: Callable[..., RunningServer]
) -> None:
    limited = Settings(**{**vars(stack.settings), "max_queue_depth": 3})
    small_gateway = serve(register_gateway, GATEWAY.grpc_services, limited)
    job = build_request("fractal", demo_image(), {"box_sizes": "3"})
    with LabSightClient(small_gateway.address, token="") as client:

        def stream() -> Iterator[pb.SubmitBatchRequest]:  # no declared count: checked as jobs come
            yield pb.SubmitBatchRequest(header=pb.BatchHeader(batch_id="late"))
            yield pb.SubmitBatchRequest(jobs=pb.BatchJobs(jobs=[job] * 3))  # fits an empty queue
            client.submit_request(job)  # another job takes a place before the stream ends

        error = _rpc_error(client.stub.SubmitBatch, stream())
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "queue is full: 1 jobs" in error.details()
        assert "nothing of batch late was queued" in error.details()
        assert _rpc_error(client.batch, "late").code() == grpc.StatusCode.NOT_FOUND
        assert len(client.list_jobs()) == 1
    keys = RedisKeys(stack.settings.key_prefix)
    inputs = list(redis.Redis.from_url(stack.settings.redis_url).scan_iter(
        match=keys.job_input("*")))
    assert len(inputs) == 1  # the other job's; the batch's staged inputs were deleted


def test_watch_streams_beyond_the_limit_are_refused_and_leave_threads_for_other_calls(
    serve: Callable[..., RunningServer], settings: Settings
) -> None:
    settings.max_workers = 8  # a limit of 4 open watch streams, 4 threads kept for other calls
    gateway = serve(register_gateway, GATEWAY.grpc_services, settings)
    with LabSightClient(gateway.address, token="") as client:
        jobs = [client.submit("fractal", demo_image()) for _ in range(5)]  # no worker: stay queued
        streams = [client.watch(job.job_id, timeout_s=60) for job in jobs[:4]]
        assert all(next(stream).status == pb.JOB_STATUS_QUEUED for stream in streams)
        error = _rpc_error(lambda: next(client.watch(jobs[4].job_id, timeout_s=60)))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "watch streams: all 4 are open" in error.details()
        assert client.get(jobs[4].job_id).status == pb.JOB_STATUS_QUEUED  # still answered
        # With no stream free, wait() polls: it sees the job end all the same.
        threading.Timer(0.3, client.cancel, args=(jobs[4].job_id,)).start()
        assert client.wait(jobs[4].job_id, timeout_s=30).status == pb.JOB_STATUS_CANCELLED
        jobs[4] = client.submit("fractal", demo_image())
        client.cancel(jobs[0].job_id)  # its stream ends and frees a slot
        assert [event.status for event in streams[0]][-1] == pb.JOB_STATUS_CANCELLED
        deadline = time.monotonic() + 10
        while True:
            try:
                assert next(client.watch(jobs[4].job_id, timeout_s=60)).status == pb.JOB_STATUS_QUEUED
                break
            except grpc.RpcError as refused:
                assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert time.monotonic() < deadline, "the slot of the ended stream was not freed"
                time.sleep(0.1)


def _declaring(batch_id: str, declared: int, jobs: list[pb.SubmitJobRequest],
               hold: threading.Event | None = None) -> Iterator[pb.SubmitBatchRequest]:
    yield pb.SubmitBatchRequest(header=pb.BatchHeader(batch_id=batch_id, job_count=declared))
    if hold is not None:
        hold.wait(60)  # a client that has not sent its images yet
    yield pb.SubmitBatchRequest(jobs=pb.BatchJobs(jobs=jobs))


def test_a_declared_job_count_must_match_and_a_batch_without_room_is_refused_at_its_header(
    stack: InProcessStack, serve: Callable[..., RunningServer]
) -> None:
    job = build_request("fractal", demo_image(), {"box_sizes": "3"})
    stub = stack.client.stub
    for declared, sent, expected in (
        (3, 2, "header.job_count: the header declared 3 jobs, the stream carried 2; nothing of "
               "batch short was queued"),
        (1, 2, "header.job_count: the header declared 1 jobs, the stream carried at least 2"),
        (-1, 1, "header.job_count: -1 is negative"),
    ):
        error = _rpc_error(stub.SubmitBatch, _declaring("short", declared, [job] * sent))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.details().startswith(expected), error.details()
    assert stack.client.list_jobs() == []
    assert len(stub.SubmitBatch(_declaring("whole", 2, [job] * 2)).job_ids) == 2
    # the SDK declares the count of a list; of a generator it cannot know it
    messages = [pb.SubmitBatchRequest.FromString(m) for m in batch_messages([job] * 3, "b", 1 << 22)]
    assert messages[0].header.job_count == 3
    assert list(messages[1].jobs.jobs) == [job] * 3  # the wire bytes parse to the jobs sent
    header = next(batch_messages((job for _ in range(3)), "b", 1 << 22))
    assert pb.SubmitBatchRequest.FromString(header).header.job_count == 0

    limited = Settings(**{**vars(stack.settings), "max_queue_depth": 3})
    small_gateway = serve(register_gateway, GATEWAY.grpc_services, limited)
    hold = threading.Event()
    with LabSightClient(small_gateway.address, token="") as client:
        call = client.stub.SubmitBatch.future(_declaring("too-big", 5, [job] * 5, hold))
        try:
            error = call.exception(timeout=30)  # answered while the images are still held back
        finally:
            hold.set()
        assert error is not None and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "nothing of batch too-big was queued" in error.details()
