"""Small jobs on a real stack: several in flight per worker, claimed in batches by priority,
started and finished in few Redis round trips, and small fractal jobs in one unary call."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import grpc
import numpy as np
import pytest
import redis
from redis.connection import Connection

from labsight import images
from labsight.client import build_request
from labsight.image_messages import image_from_array
from labsight.images import encode_png
from labsight.runtime.idle_trim import IdleTrimmer
from labsight.tensor_wire import EncodedMessage
from labsight.v1 import features_pb2, tensor_pb2
from labsight.v1 import features_pb2_grpc as features_grpc
from labsight.v1 import gateway_pb2 as pb
from services.gateway.jobs import RUNNING
from services.gateway.keys import RedisKeys
from services.gateway.pipelines import base as pipelines_base
from services.gateway.pipelines.base import RunContext
from services.gateway.pipelines.fractal import FractalPipeline
from services.gateway.worker import Worker, build_worker
from tests.conftest import RunningWorker

from .conftest import InProcessStack

TINY = np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)


def _image(side: int, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)


@contextmanager
def round_trips() -> Iterator[list[int]]:
    """Counts the requests this process sends to Redis (a pipeline is one) while the block runs."""
    sent = [0]
    original = Connection.send_packed_command

    def counted(self: Connection, command: object, check_health: bool = True) -> None:
        sent[0] += 1
        original(self, command, check_health)

    Connection.send_packed_command = counted  # type: ignore[method-assign]
    try:
        yield sent
    finally:
        Connection.send_packed_command = original  # type: ignore[method-assign]


def test_a_worker_runs_many_jobs_at_once_each_to_one_outcome(
    stack: InProcessStack, worker_thread: Callable[..., RunningWorker], redis_for: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LABSIGHT_WORKER_CONCURRENCY", "6")
    requests = [build_request("fractal", _image(48, seed), {"box_sizes": "3-21"}) for seed in range(60)]
    batch = stack.client.submit_batch(requests, batch_id="many")
    running = worker_thread("many")
    assert running.worker.concurrency == 6
    for job_id in batch.job_ids:
        assert stack.client.wait(job_id, 120).status == pb.JOB_STATUS_DONE
    assert dict(stack.client.batch("many").counts) == {"done": 60}
    jobs = [stack.client.get(job_id) for job_id in batch.job_ids]
    assert {job.attempts for job in jobs} == {1}
    keys = RedisKeys(stack.settings.key_prefix)
    assert redis_for.xpending(keys.stream("normal"), "workers")["pending"] == 0
    assert int(redis_for.get(keys.depth())) == 0
    first, last = stack.client.result(batch.job_ids[0]), stack.client.result(batch.job_ids[-1])
    with grpc.insecure_channel(stack.features.address) as channel:
        direct = features_grpc.FeatureServiceStub(channel).ComputeFractal(
            features_pb2.ComputeFractalRequest(image=requests[-1].input.image,
                                               box_sizes=list(range(3, 22, 2)))
        )
    assert last.scalars["fractal_dimension"] == direct.fractal_dimension.dimension
    assert first.scalars["fractal_dimension"] != last.scalars["fractal_dimension"]


def _queued_worker(stack: InProcessStack, consumer: str) -> Worker:
    worker = build_worker(stack.settings, consumer)
    worker.queue.ensure_groups()
    return worker


def test_batched_claims_keep_high_priority_first_and_normal_never_starved(
    stack: InProcessStack,
) -> None:
    worker = _queued_worker(stack, "claims")
    try:
        for _ in range(3):
            stack.client.submit("fractal", TINY, {"box_sizes": "3"})
        for _ in range(10):
            stack.client.submit("fractal", TINY, {"box_sizes": "3"}, priority="high")
        claimed = worker.claim(8, block_ms=100)
        assert [d.priority for d in claimed] == ["high"] * 4 + ["normal"] + ["high"] * 3
        # the streak goes on; a drained stream ends the batch, the next claim takes the rest
        assert [d.priority for d in worker.claim(8, block_ms=100)] == ["high", "normal", "high", "high"]
        assert [d.priority for d in worker.claim(8, block_ms=100)] == ["normal"]
        assert worker.claim(8, block_ms=100) == []  # nothing left: waited and came back empty
    finally:
        worker.services.close()


def test_a_batch_of_jobs_starts_in_two_round_trips_and_each_finishes_in_one(
    stack: InProcessStack, redis_for: redis.Redis,
) -> None:
    worker = _queued_worker(stack, "trips")
    try:
        batch = stack.client.submit_batch(
            [build_request("fractal", TINY, {"box_sizes": "3"}) for _ in range(5)]
        )
        claimed = worker.claim(5, block_ms=100)
        assert len(claimed) == 5
        with round_trips() as sent:
            started = worker.start(claimed)
        assert sent[0] == 2
        assert [s.job.job_id for s in started] == list(batch.job_ids)
        assert {stack.client.get(job_id).status for job_id in batch.job_ids} == {
            pb.JOB_STATUS_RUNNING
        }
        assert all(s.job.status == RUNNING and s.attempts == 1 for s in started)
        result = pb.JobResult(pipeline="fractal")
        with round_trips() as sent:
            worker.handle_job_success(started[0].delivery, started[0].job, result)
        assert sent[0] == 1
        assert stack.client.get(batch.job_ids[0]).status == pb.JOB_STATUS_DONE
        keys = RedisKeys(stack.settings.key_prefix)
        assert redis_for.exists(keys.job_result(batch.job_ids[0]))
        assert not redis_for.exists(keys.job_input(batch.job_ids[0]))
        assert redis_for.xpending(keys.stream("normal"), "workers")["pending"] == 4
    finally:
        worker.services.close()


def test_a_small_fractal_job_is_one_call_without_progress_and_equals_the_service(
    stack: InProcessStack,
) -> None:
    request = build_request("fractal", _image(64), {})
    result, reports = stack.run_in_worker(FractalPipeline(), request)
    assert reports == []
    with grpc.insecure_channel(stack.features.address) as channel:
        whole = features_grpc.FeatureServiceStub(channel).ComputeFractal(
            features_pb2.ComputeFractalRequest(image=request.input.image,
                                               box_sizes=list(range(3, 42, 2)))
        )
    assert result.tables["fractal"] == whole.features
    assert result.scalars["fractal_dimension"] == whole.fractal_dimension.dimension
    assert set(result.tables) == {"fractal", "weka_fractal"}


def test_small_jobs_run_in_groups_finished_in_one_round_trip_and_equal_single_runs(
    stack: InProcessStack, redis_for: redis.Redis,
) -> None:
    worker = _queued_worker(stack, "groups")
    worker.group_size = 3
    try:
        requests = [build_request("fractal", _image(48, seed), {"box_sizes": "3-21"})
                    for seed in range(5)]
        batch = stack.client.submit_batch(requests)
        claimed = worker.claim(5, block_ms=100)
        units = worker.start_units(claimed, free=2)
        assert [len(unit) for unit in units] == [3, 2]
        with round_trips() as sent:
            worker.process_group(units[0], worker.services)
        assert sent[0] == 1  # the calls are gRPC; the three results, states and acks one transaction
        worker.process_group(units[1], worker.services)
        keys = RedisKeys(stack.settings.key_prefix)
        assert redis_for.xpending(keys.stream("normal"), "workers")["pending"] == 0
        assert dict(stack.client.batch(batch.batch_id).counts) == {"done": 5}
        with grpc.insecure_channel(stack.features.address) as channel:
            stub = features_grpc.FeatureServiceStub(channel)
            for job_id, request in zip(batch.job_ids, requests, strict=True):
                direct = stub.ComputeFractal(features_pb2.ComputeFractalRequest(
                    image=request.input.image, box_sizes=list(range(3, 22, 2))))
                result = stack.client.result(job_id)
                assert result.scalars["fractal_dimension"] == direct.fractal_dimension.dimension
                assert result.job_id == job_id
    finally:
        worker.services.close()


@pytest.mark.parametrize("params", [
    {"box_sizes": "3-21"},
    {"box_sizes": "3-7", "percolation": "true", "probabilities": "false"},
    {"box_sizes": "3-21", "channels": "1"},  # read here as the features service reads them
])
def test_a_group_runs_same_size_images_as_one_stack_and_each_result_equals_its_job_alone(
    stack: InProcessStack, monkeypatch: pytest.MonkeyPatch, params: dict[str, str],
) -> None:
    side = 24 if params.get("percolation") else 48
    inputs: list[object] = [_image(side, 0), image_from_array(_image(side, 1), "tile-1.png"), _image(side, 2)]
    png = tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=encode_png(_image(side, 10)), format="png"))
    inputs += [_image(side + 2, 9), png]  # the PNG joins the stack; the other size goes alone
    requests = [build_request("fractal", image, params) for image in inputs]  # type: ignore[arg-type]
    pipeline = FractalPipeline()
    stacked: list[int] = []
    with stack.service_clients() as services:
        contexts = [RunContext(f"job-{i}", pipeline.validate(dict(r.params), r.input), r.input, services,
                               lambda *_: None) for i, r in enumerate(requests)]
        original = services.features.ComputeFractalStack.future

        def counted(request: EncodedMessage, **kwargs: object) -> object:
            stacked.append(features_pb2.ComputeFractalStackRequest.FromString(request.data).tiles.shape[0])
            return original(request, **kwargs)

        monkeypatch.setattr(services.features.ComputeFractalStack, "future", counted)
        grouped = pipeline.run_many(contexts)
        alone = [pipeline.run(context) for context in contexts]
    assert stacked == [4]  # the three same-size tensors and the PNG; the other size by batch
    assert grouped == alone
    assert list(grouped[1].tables["fractal"].row_ids) == ["tile-1.png"]


def test_jobs_of_a_pipeline_that_never_groups_run_alone_and_their_inputs_are_not_read_to_plan(
    stack: InProcessStack, monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[str] = []
    monkeypatch.setattr(FractalPipeline, "runs_in_groups", False)
    monkeypatch.setattr(FractalPipeline, "group_key", lambda self, params, job_input: asked.append("") or "x")
    worker = _queued_worker(stack, "never-groups")
    worker.group_size = 3
    try:
        stack.client.submit_batch(
            [build_request("fractal", _image(48, seed), {"box_sizes": "3-21"}) for seed in range(3)]
        )
        units = worker.start_units(worker.claim(3, block_ms=100), free=3)
        assert [len(unit) for unit in units] == [1, 1, 1]
        assert asked == []
    finally:
        worker.services.close()


def test_a_worker_reads_each_grouped_image_once_and_its_results_equal_the_jobs_alone(
    stack: InProcessStack, monkeypatch: pytest.MonkeyPatch,
) -> None:
    worker = _queued_worker(stack, "read-once")
    worker.group_size = 3
    png = tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=encode_png(_image(48, 1)), format="png"))
    requests = [build_request("fractal", image, {"box_sizes": "3-21"})  # type: ignore[arg-type]
                for image in (_image(48, 0), png, _image(48, 2))]
    reads: list[str] = []
    original = images.read_image

    def counted(image: tensor_pb2.Image, field: str = "image", *args: object, **kwargs: object) -> object:
        reads.append(field)
        return original(image, field, *args, **kwargs)  # type: ignore[arg-type]

    try:
        batch = stack.client.submit_batch(requests)
        units = worker.start_units(worker.claim(3, block_ms=100), free=1)
        assert [len(unit) for unit in units] == [3]
        monkeypatch.setattr(images, "read_image", counted)  # decode_image's
        monkeypatch.setattr(pipelines_base, "read_image", counted)  # read_input's
        worker.process_group(units[0], worker.services)
        monkeypatch.undo()
        assert len(reads) == 3  # one read per job: its warnings, provenance and stacked pixels
        grouped = [stack.client.result(job_id) for job_id in batch.job_ids]
        with stack.service_clients() as services:
            pipeline = FractalPipeline()
            alone = [pipeline.run(RunContext(f"job-{i}", pipeline.validate(dict(r.params), r.input),
                                             r.input, services, lambda *_: None))
                     for i, r in enumerate(requests)]
        for got, expected in zip(grouped, alone, strict=True):
            assert got.tables == expected.tables and got.tensors == expected.tensors
            assert got.scalars == expected.scalars
    finally:
        worker.services.close()


def test_a_grouped_png_that_does_not_decode_fails_alone_and_the_others_finish(
    stack: InProcessStack,
) -> None:
    worker = _queued_worker(stack, "corrupt-png")
    worker.group_size = 3
    try:
        data = bytearray(encode_png(_image(48, 1)))
        data[60:] = bytes(len(data) - 60)  # the header holds; the pixel data does not decode
        corrupt = tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=bytes(data), format="png"))
        requests = [build_request("fractal", image, {"box_sizes": "3-21"})  # type: ignore[arg-type]
                    for image in (_image(48, 0), corrupt, _image(48, 2))]
        batch = stack.client.submit_batch(requests)  # accepted: submit reads headers only
        units = worker.start_units(worker.claim(3, block_ms=100), free=1)
        assert [len(unit) for unit in units] == [3]
        worker.process_group(units[0], worker.services)
        jobs = [stack.client.get(job_id) for job_id in batch.job_ids]
        assert [job.status for job in jobs] == [pb.JOB_STATUS_DONE, pb.JOB_STATUS_FAILED, pb.JOB_STATUS_DONE]
        assert "INVALID_ARGUMENT" in jobs[1].error and "PNG" in jobs[1].error
    finally:
        worker.services.close()


def test_a_group_that_fails_runs_each_job_alone_to_its_own_outcome(
    stack: InProcessStack, redis_for: redis.Redis,
) -> None:
    worker = _queued_worker(stack, "fallback")
    try:
        batch = stack.client.submit_batch(
            [build_request("fractal", _image(48, seed), {"box_sizes": "3-21"}) for seed in range(3)]
        )
        units = worker.start_units(worker.claim(3, block_ms=100), free=1)
        assert [len(unit) for unit in units] == [3]
        units[0][1].raw_input = None  # this job's input is unreadable: the group fails
        worker.process_group(units[0], worker.services)
        jobs = [stack.client.get(job_id) for job_id in batch.job_ids]
        assert [job.status for job in jobs] == [
            pb.JOB_STATUS_DONE, pb.JOB_STATUS_FAILED, pb.JOB_STATUS_DONE
        ]
        assert "input is missing" in jobs[1].error
        keys = RedisKeys(stack.settings.key_prefix)
        assert redis_for.xpending(keys.stream("normal"), "workers")["pending"] == 0
    finally:
        worker.services.close()


def test_jobs_claimed_beyond_the_free_slots_wait_and_go_back_to_the_stream_at_stop(
    stack: InProcessStack, redis_for: redis.Redis,
) -> None:
    worker = _queued_worker(stack, "backlog")
    worker.group_size = 2
    try:
        stack.client.submit_batch([build_request("fractal", TINY, {"box_sizes": "3"}) for _ in range(5)])
        units = worker.start_units(worker.claim(5, block_ms=100), free=1)
        assert [len(unit) for unit in units] == [2]
        assert len(worker._backlog) == 3
        keys = RedisKeys(stack.settings.key_prefix)
        assert redis_for.xpending(keys.stream("normal"), "workers")["pending"] == 5
        worker._release_backlog()
        assert redis_for.xpending(keys.stream("normal"), "workers")["pending"] == 2
        assert len(worker.claim(5, block_ms=100)) == 3  # anyone's to claim again, unstarted
    finally:
        worker.services.close()


def test_compute_fractal_batch_answers_each_image_as_compute_fractal_does(
    stack: InProcessStack,
) -> None:
    requests = [features_pb2.ComputeFractalRequest(
        image=build_request("fractal", _image(side, seed), {}).input.image, box_sizes=sizes)
        for side, seed, sizes in ((64, 1, []), (48, 2, [3, 5, 9]), (40, 3, [3]))]
    with grpc.insecure_channel(stack.features.address) as channel:
        stub = features_grpc.FeatureServiceStub(channel)
        answer = stub.ComputeFractalBatch(features_pb2.ComputeFractalBatchRequest(requests=requests))
        assert list(answer.responses) == [stub.ComputeFractal(request) for request in requests]
        assert not stub.ComputeFractalBatch(features_pb2.ComputeFractalBatchRequest()).responses


def _too_many(request: features_pb2.ComputeFractalBatchRequest) -> None:
    request.requests.extend([request.requests[0]] * 64)


def _too_large(request: features_pb2.ComputeFractalBatchRequest) -> None:
    request.requests[1].image.CopyFrom(build_request("fractal", _image(512), {}).input.image)
    del request.requests[1].box_sizes[:]  # 3-41: 3e9 box-pixel comparisons


def _descending_sides(request: features_pb2.ComputeFractalBatchRequest) -> None:
    request.requests[1].box_sizes.extend([5, 3])


def _no_image(request: features_pb2.ComputeFractalBatchRequest) -> None:
    request.requests[0].ClearField("image")


@pytest.mark.parametrize(("change", "named"), [
    (_too_many, "at most 64"),
    (_too_large, "requests[1]: 512x512 pixels"),
    (_descending_sides, "requests[1]: "),
    (_no_image, "requests[0].image"),
])
def test_compute_fractal_batch_refuses_a_bad_request_naming_it(
    stack: InProcessStack, change: Callable[[features_pb2.ComputeFractalBatchRequest], object],
    named: str,
) -> None:
    image = build_request("fractal", _image(48), {}).input.image
    request = features_pb2.ComputeFractalBatchRequest(requests=[
        features_pb2.ComputeFractalRequest(image=image, box_sizes=[3]) for _ in range(2)])
    change(request)
    with grpc.insecure_channel(stack.features.address) as channel, \
            pytest.raises(grpc.RpcError) as raised:
        features_grpc.FeatureServiceStub(channel).ComputeFractalBatch(request)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert named in raised.value.details()


def test_probabilities_false_leaves_the_matrix_out_and_every_feature_as_it_was(
    stack: InProcessStack,
) -> None:
    stack.start_worker()
    images = [_image(64, seed) for seed in range(3)] + [_image(300, 9)]  # small ones grouped; one streamed
    kept = stack.client.submit_batch([build_request("fractal", image, {}) for image in images])
    left = stack.client.submit_batch([build_request("fractal", image, {"probabilities": "false"})
                                      for image in images])
    full = [result for _, result in stack.client.ended_results(kept.batch_id, timeout_s=300)[0]]
    lean = [result for _, result in stack.client.ended_results(left.batch_id, timeout_s=300)[0]]
    assert len(full) == len(lean) == len(images)
    for with_matrix, without in zip(full, lean, strict=True):
        matrix = {name for name in with_matrix.tensors if name.startswith("probability_r")}
        assert len(matrix) == 20 and not any(name.startswith("probability_r") for name in without.tensors)
        assert set(without.tensors) == set(with_matrix.tensors) - matrix
        for name in without.tensors:
            assert without.tensors[name] == with_matrix.tensors[name]
        assert dict(without.scalars) == dict(with_matrix.scalars)
        assert dict(without.tables) == dict(with_matrix.tables)
    assert lean[0].ByteSize() * 20 < full[0].ByteSize()  # 64² at sides 3-41: ~100 KB of ~103 KB


def test_a_worker_gives_its_freed_heap_back_once_no_job_has_run_for_a_while(
    stack: InProcessStack, worker_thread: Callable[..., RunningWorker],
) -> None:
    """Its malloc keeps freed job buffers for reuse (labsight.runtime.cpus.BULK_BUFFER_MALLOC);
    an idle worker trims them, as an idle server does."""
    trims = threading.Semaphore(0)
    trimmer = IdleTrimmer(0.2, trim=trims.release)
    assert trims.acquire(timeout=30)  # the trimmer's first trim, at its start
    worker_thread("trims", _trimmer=trimmer)
    assert not trims.acquire(timeout=1.0)  # no job ran: nothing freed
    job = stack.client.submit("fractal", _image(48), {"box_sizes": "3-21"})
    assert stack.client.wait(job.job_id, timeout_s=60).status == pb.JOB_STATUS_DONE
    assert trims.acquire(timeout=30)
    assert not trims.acquire(timeout=1.0)  # once per quiet spell
