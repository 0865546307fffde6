"""Progress inside long jobs and cancellation that stops a service's work, on a real stack."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
import numpy as np
import pytest
import redis

from labsight.catalog import FEATURES
from labsight.client import build_request
from labsight.config import Settings
from labsight.runtime.progress_stream import WORK_STOPPED
from labsight.runtime.server import RunningServer
from labsight.v1 import features_pb2
from labsight.v1 import features_pb2_grpc as features_grpc
from labsight.v1 import gateway_pb2 as pb
from services.features.extractor import DeepFeatureExtractor, ExtractorConfig
from services.features.models import feature_repository
from services.features.servicer import register as register_features
from services.gateway.jobs import JobStore
from services.gateway.keys import RedisKeys
from services.gateway.pipelines import deep_features
from services.gateway.pipelines.fractal import FractalPipeline

from .conftest import InProcessStack


def _image(side: int, seed: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)


def test_fractal_job_publishes_progress_band_by_band(
    stack: InProcessStack, redis_for: redis.Redis
) -> None:
    job = stack.client.submit("fractal", _image(512), {"box_sizes": "3-41"})
    keys = RedisKeys(stack.settings.key_prefix)
    events = redis_for.pubsub()
    events.subscribe(keys.job_events(job.job_id))
    assert events.get_message(timeout=5.0)["type"] == "subscribe"  # subscribed before it runs
    stack.start_worker()
    done = stack.client.wait(job.job_id, 120)
    assert done.status == pb.JOB_STATUS_DONE
    rows = 512 - 2
    assert done.progress_message == f"gliding box: {rows}/{rows} rows"
    assert done.progress_unit == "rows" and done.progress_rate > 0
    assert done.eta_seconds == 0.0  # only a running job has an estimate
    progress = []
    while (message := events.get_message(timeout=1.0)) is not None:
        if message["data"] == b"progress":
            progress.append(message)
    events.close()
    # 0 at the start, one per band of box-centre rows (32), 1 at the end
    assert len(progress) >= 30


def test_fractal_pipeline_reports_rising_progress_and_streams_the_one_call_result(
    stack: InProcessStack, redis_for: redis.Redis
) -> None:
    request = build_request("fractal", _image(160), {"box_sizes": "3-21", "percolation": "true"})
    result, reports = stack.run_in_worker(FractalPipeline(), request)
    fractions = [report[0] for report in reports]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert fractions == sorted(fractions) and len(set(fractions)) > 40  # 2 steps x up to 32 bands
    rows = 160 - 2  # centres of the smallest box, 3
    assert ("gliding box", rows, rows, "rows") in [report[1:] for report in reports]
    assert reports[-1][1:] == ("percolation", rows, rows, "rows")
    with grpc.insecure_channel(stack.features.address) as channel:
        whole = features_grpc.FeatureServiceStub(channel).ComputeFractal(
            features_pb2.ComputeFractalRequest(image=request.input.image,
                                               box_sizes=list(range(3, 22, 2)), percolation=True)
        )
    assert result.tables["fractal"] == whole.features
    assert result.scalars["fractal_dimension"] == whole.fractal_dimension.dimension


def test_cancelled_long_job_stops_the_features_services_work(
    stack: InProcessStack, redis_for: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # percolation on 1024x1024 RGB: tens of seconds of work, allowed by a raised cost limit
    monkeypatch.setenv("LABSIGHT_MAX_FRACTAL_COST", "1e13")
    job = stack.client.submit("fractal", _image(1024), {"percolation": "true"})
    stopped = WORK_STOPPED.labels("fractal")._value.get()
    worker = stack.start_worker()
    store = JobStore(redis_for, RedisKeys(stack.settings.key_prefix))
    deadline = time.monotonic() + 120
    while store.load(job.job_id).progress == 0.0:  # the service is streaming its progress
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert stack.client.cancel(job.job_id).status == pb.JOB_STATUS_CANCELLED
    keys = RedisKeys(stack.settings.key_prefix)
    deadline = time.monotonic() + 60  # generous: the whole job takes far longer on this machine
    while (WORK_STOPPED.labels("fractal")._value.get() == stopped
           or redis_for.xpending(keys.stream("normal"), "workers")["pending"]):
        assert time.monotonic() < deadline, "the service's work or the worker did not stop"
        time.sleep(0.05)
    final = stack.client.get(job.job_id)
    assert final.status == pb.JOB_STATUS_CANCELLED and final.progress < 1.0
    assert not redis_for.exists(keys.job_result(job.job_id))
    assert worker.queue.depth() == 0


class Stop(Exception):
    """Raised by a callback to stop the work."""


def test_deep_features_stop_before_the_next_batch_when_told(monkeypatch: pytest.MonkeyPatch) -> None:
    # what ExtractDeepFeatures passes: raise_if_gone, raising once its caller has cancelled
    monkeypatch.setenv("LABSIGHT_MAX_BATCH_SIZE", "1")
    monkeypatch.setenv("LABSIGHT_MODEL_INSTANCES", "1")
    extractor = DeepFeatureExtractor(feature_repository(), ExtractorConfig.from_env())
    calls: list[int] = []

    def stop_at_the_second() -> None:
        calls.append(len(calls))
        if len(calls) == 2:
            raise Stop

    images = [_image(64, seed) for seed in range(4)]
    assert len(extractor.extract(images, before_batch=lambda: None).values) == 4
    with pytest.raises(Stop):
        extractor.extract(images, before_batch=stop_at_the_second)
    assert len(calls) == 2  # one batch of one image ran; the other three never did


def test_cancelled_deep_features_job_stops_the_call_in_flight(
    stack: InProcessStack, serve: Callable[..., RunningServer], settings: Settings,
    redis_for: redis.Redis, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A features server running one image per batch, and calls of 256 images, so each call has
    # 256 steps and lasts seconds: the cancel (noticed within 0.5 s) lands inside a call.
    monkeypatch.setenv("LABSIGHT_MAX_BATCH_SIZE", "1")
    monkeypatch.setenv("LABSIGHT_MODEL_INSTANCES", "1")
    monkeypatch.setattr(deep_features, "CHUNK_IMAGES", 256)
    settings.service_addresses["features"] = serve(
        register_features, FEATURES.grpc_services, settings).address
    patches = np.random.default_rng(3).integers(0, 256, (1024, 64, 64, 3), dtype=np.uint8)
    job = stack.client.submit("deep-features", _image(64), {}, tensors={"patches": patches})
    stopped = WORK_STOPPED.labels("deep features")._value.get()
    stack.start_worker()
    store = JobStore(redis_for, RedisKeys(stack.settings.key_prefix))
    deadline = time.monotonic() + 180
    while store.load(job.job_id).progress == 0.0:  # a call is done, the next ones in flight
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert stack.client.cancel(job.job_id).status == pb.JOB_STATUS_CANCELLED
    deadline = time.monotonic() + 120  # generous: the calls in flight hold hundreds of steps
    while WORK_STOPPED.labels("deep features")._value.get() == stopped:
        assert time.monotonic() < deadline, "the features service finished a cancelled job's call"
        time.sleep(0.05)
    assert stack.client.get(job.job_id).status == pb.JOB_STATUS_CANCELLED


def test_progress_is_written_in_one_step_except_for_a_cancelled_or_missing_job(
    stack: InProcessStack, redis_for: redis.Redis
) -> None:
    job = stack.client.submit("fractal", _image(32), {"box_sizes": "3-5"})
    keys = RedisKeys(stack.settings.key_prefix)
    store = JobStore(redis_for, keys)
    events = redis_for.pubsub()
    events.subscribe(keys.job_events(job.job_id))
    assert store.set_progress(job.job_id, 0.25, "gliding box: 8/32 rows", 40.0, "rows", 1.5) == "queued"
    record = store.load(job.job_id)
    assert (record.progress, record.progress_message) == (0.25, "gliding box: 8/32 rows")
    assert (record.progress_rate, record.progress_unit, record.eta_seconds) == (40.0, "rows", 1.5)
    assert stack.client.cancel(job.job_id).status == pb.JOB_STATUS_CANCELLED
    assert store.set_progress(job.job_id, 0.5, "later") == "cancelled"
    assert store.load(job.job_id).progress == 0.25  # not written after the cancel
    published = []
    deadline = time.monotonic() + 10
    while len(published) < 2 and time.monotonic() < deadline:
        message = events.get_message(timeout=0.5)
        if message and message["type"] == "message":
            published.append(message["data"])
    assert published == [b"progress", b"cancelled"]  # one announcement per write, none after
    assert store.set_progress("no-such-job", 0.5, "x") == ""
    assert not redis_for.exists(keys.job("no-such-job"))
