"""Large inputs go to the blob store, jobs carry a reference, and the blob goes when the job ends."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import redis
import tifffile
from prometheus_client import REGISTRY

from labsight.client import build_request
from labsight.config import Settings
from labsight.tables import table_values
from labsight.tensors import from_tensor
from labsight.v1 import gateway_pb2 as pb
from labsight.v1 import tensor_pb2
from services.features.fractal import gliding_box
from services.gateway.keys import RedisKeys
from tests.integration.conftest import InProcessStack

THRESHOLD = 20_000


@pytest.fixture
def blob_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A blob store directory and a low threshold for the stack this test starts (ask for it first)."""
    directory = tmp_path / "blobs"
    monkeypatch.setenv("LABSIGHT_BLOB_URL", f"file://{directory}")
    monkeypatch.setenv("LABSIGHT_BLOB_THRESHOLD_BYTES", str(THRESHOLD))
    return directory


def _noise_tiff(side: int, seed: int = 0) -> tensor_pb2.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side), dtype=np.uint8)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, pixels)
    return tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=buffer.getvalue()))


def _upload(request: pb.SubmitJobRequest, chunk: int = 4096) -> Iterator[pb.UploadJobRequest]:
    header = pb.SubmitJobRequest()
    header.CopyFrom(request)
    data = request.input.image.encoded.data
    header.input.image.encoded.data = b""
    yield pb.UploadJobRequest(job=header)
    for start in range(0, len(data), chunk):
        yield pb.UploadJobRequest(image_chunk=data[start : start + chunk])


def _blobs(directory: Path) -> list[Path]:
    return [path for path in directory.iterdir() if not path.name.startswith(".")] \
        if directory.exists() else []


def _blobs_after_ack(directory: Path) -> list[Path]:
    """The blobs left once the worker acknowledged its job (it does so just after marking it done)."""
    deadline = time.monotonic() + 30
    while _blobs(directory) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _blobs(directory)


@pytest.mark.parametrize("call", ["UploadJob", "SubmitJob"])
def test_an_input_over_the_threshold_waits_in_the_blob_store_and_leaves_with_the_job(
    blob_dir: Path, stack: InProcessStack, redis_for: redis.Redis, call: str
) -> None:
    image = _noise_tiff(200)  # 40 kB: over the threshold
    request = build_request("fractal", image, {"box_sizes": "3,5,7"}, name="big.tif")
    if call == "UploadJob":
        job = stack.client.stub.UploadJob(_upload(request))
    else:
        job = stack.client.stub.SubmitJob(request)

    keys = RedisKeys(stack.settings.key_prefix)
    stored_input = redis_for.get(keys.job_input(job.job_id))
    assert stored_input is not None and len(stored_input) < 1000  # a reference, not the image
    reference = redis_for.hget(keys.job(job.job_id), "input_blob").decode()
    [blob] = _blobs(blob_dir)
    assert blob.name == reference and blob.read_bytes() == image.encoded.data

    stack.start_worker()
    done = stack.client.wait(job.job_id, timeout_s=120)
    assert done.status == pb.JOB_STATUS_DONE, done.error
    assert _blobs_after_ack(blob_dir) == []
    assert stack.client.result(job.job_id).tables["fractal"].row_ids == ["big.tif"]


def test_a_blob_job_gives_the_numbers_of_the_same_image_kept_in_redis(
    blob_dir: Path, stack: InProcessStack
) -> None:
    image = _noise_tiff(200, seed=3)
    stack.start_worker()
    big = stack.client.stub.SubmitJob(build_request("fractal", image, {"box_sizes": "3,5"}))
    pixels = tifffile.imread(io.BytesIO(image.encoded.data))  # a tensor stays in Redis
    small = stack.client.stub.SubmitJob(build_request("fractal", pixels, {"box_sizes": "3,5"}))
    results = []
    for job in (big, small):
        assert stack.client.wait(job.job_id, timeout_s=120).status == pb.JOB_STATUS_DONE
        table = stack.client.result(job.job_id).tables["fractal"]
        results.append(table_values(table))
    np.testing.assert_array_equal(results[0], results[1])


def test_a_refused_or_duplicate_blob_submission_leaves_no_blob(
    blob_dir: Path, stack: InProcessStack
) -> None:
    image = _noise_tiff(200)
    bad = build_request("fractal", image, {"box_sizes": "2"})
    with pytest.raises(grpc.RpcError) as error:
        stack.client.stub.UploadJob(_upload(bad))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _blobs(blob_dir) == []

    keyed = build_request("fractal", image, {"box_sizes": "3"}, idempotency_key="slide-1")
    first = stack.client.stub.UploadJob(_upload(keyed))
    again = stack.client.stub.UploadJob(_upload(keyed))
    assert again.job_id == first.job_id
    assert len(_blobs(blob_dir)) == 1


def test_clients_cannot_name_a_blob(blob_dir: Path, stack: InProcessStack) -> None:
    request = build_request("fractal", _noise_tiff(20), {})
    request.input.image.blob = "0" * 64 + "." + "0" * 32
    with pytest.raises(grpc.RpcError) as error:
        stack.client.stub.SubmitJob(request)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "only the gateway sets blob references" in error.value.details()


def test_a_blob_a_pipeline_would_send_whole_must_fit_the_decoded_limit(
    blob_dir: Path, stack: InProcessStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LABSIGHT_MAX_IMAGE_BYTES", str(30_000))
    with pytest.raises(grpc.RpcError) as error:
        stack.client.stub.UploadJob(_upload(build_request("deep-features", _noise_tiff(200), {})))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "LABSIGHT_MAX_IMAGE_BYTES" in error.value.details()
    assert _blobs(blob_dir) == []


def _extract_patches_calls() -> float:
    return REGISTRY.get_sample_value(
        "labsight_grpc_requests_total",
        {"method": "/labsight.v1.SegmentationService/ExtractPatches", "code": "OK"},
    ) or 0.0


@pytest.mark.parametrize("edge", ["pad-reflect", "pad-constant"])
def test_spots_on_a_blob_tiff_are_cut_from_its_tiles_as_the_service_cuts_them(
    blob_dir: Path, stack: InProcessStack, edge: str
) -> None:
    rng = np.random.default_rng(11)
    pixels = rng.integers(0, 256, (600, 500, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, pixels, tile=(128, 128), compression="zlib")
    slide = tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=buffer.getvalue()))
    centres = np.array([[10.0, 12.0], [250.5, 300.2], [490.0, 590.0], [130.0, 127.6]])
    params = {"model": "efficientnet-lite0", "spot_diameter": 60, "spot_edge": edge}
    stack.start_worker()
    before = _extract_patches_calls()
    by_regions = stack.client.stub.SubmitJob(
        build_request("spot-features", slide, params, tensors={"spot_centres": centres})
    )
    assert stack.client.wait(by_regions.job_id, timeout_s=180).status == pb.JOB_STATUS_DONE
    assert _extract_patches_calls() == before  # the worker cut them: the slide never travelled
    whole = stack.client.stub.SubmitJob(
        build_request("spot-features", pixels, params, tensors={"spot_centres": centres})
    )
    assert stack.client.wait(whole.job_id, timeout_s=180).status == pb.JOB_STATUS_DONE
    got, expected = (stack.client.result(job.job_id) for job in (by_regions, whole))
    assert got.provenance["image_read"] == "by regions from the blob store"
    np.testing.assert_allclose(
        table_values(got.tables["features"]), table_values(expected.tables["features"]),
        atol=1e-5,
    )
    for name in ("coordinates", "edge"):
        np.testing.assert_array_equal(from_tensor(got.tensors[name]), from_tensor(expected.tensors[name]))
    assert from_tensor(got.tensors["edge"]).tolist() == [1, 0, 1, 0]
    assert _blobs_after_ack(blob_dir) == []


@pytest.fixture
def small_messages(settings: Settings) -> int:
    """A 200 kB message limit for the stack this test starts (ask for it before the stack)."""
    settings.max_message_bytes = 200_000
    return settings.max_message_bytes


def test_a_blob_a_pipeline_would_send_whole_must_fit_a_message(
    blob_dir: Path, small_messages: int, stack: InProcessStack
) -> None:
    slide = _noise_tiff(460)  # 212 kB: over 90% of the message limit, sent in chunks
    with pytest.raises(grpc.RpcError) as error:
        stack.client.stub.UploadJob(_upload(build_request("deep-features", slide, {})))
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "LABSIGHT_MAX_MESSAGE_BYTES" in error.value.details()
    assert _blobs(blob_dir) == []


def test_a_fractal_image_over_the_message_limit_is_read_by_the_service_from_the_blob_store(
    blob_dir: Path, small_messages: int, stack: InProcessStack
) -> None:
    slide = _noise_tiff(460, seed=3)  # 212 kB: no message of this stack could carry it
    params = {"box_sizes": "3,5,9"}
    job = stack.client.stub.UploadJob(_upload(build_request("fractal", slide, params)))
    stack.start_worker()
    assert stack.client.wait(job.job_id, timeout_s=120).status == pb.JOB_STATUS_DONE
    got = stack.client.result(job.job_id)
    pixels = tifffile.imread(io.BytesIO(slide.encoded.data))
    expected = gliding_box(pixels, box_sizes=[3, 5, 9])
    np.testing.assert_allclose(from_tensor(got.tensors["lacunarity"]), expected.lacunarity, rtol=1e-12)
    np.testing.assert_allclose(from_tensor(got.tensors["box_count"]), expected.box_count, rtol=1e-12)
    assert _blobs_after_ack(blob_dir) == []


def test_a_fractal_image_over_the_pixel_limit_is_refused_at_submit(
    blob_dir: Path, stack: InProcessStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LABSIGHT_MAX_FRACTAL_PIXELS", str(200 * 200 - 1))
    with pytest.raises(grpc.RpcError) as error:
        stack.client.stub.UploadJob(_upload(build_request("fractal", _noise_tiff(200), {})))
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "fractal job on 200x200 pixels costs 4e+04 pixels" in error.value.details()
    assert "LABSIGHT_MAX_FRACTAL_PIXELS" in error.value.details()
    assert _blobs(blob_dir) == []


@pytest.fixture
def no_blob_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """No LABSIGHT_BLOB_URL (a deployment that configured none), with the low threshold."""
    monkeypatch.delenv("LABSIGHT_BLOB_URL", raising=False)
    monkeypatch.setenv("LABSIGHT_BLOB_THRESHOLD_BYTES", str(THRESHOLD))


def test_without_a_blob_store_large_inputs_stay_in_redis(
    no_blob_store: None, stack: InProcessStack, redis_for: redis.Redis
) -> None:
    image = _noise_tiff(200)
    job = stack.client.stub.UploadJob(_upload(build_request("fractal", image, {"box_sizes": "3"})))
    keys = RedisKeys(stack.settings.key_prefix)
    assert len(redis_for.get(keys.job_input(job.job_id))) > len(image.encoded.data)
    assert redis_for.hget(keys.job(job.job_id), "input_blob") == b""
    stack.start_worker()
    assert stack.client.wait(job.job_id, timeout_s=120).status == pb.JOB_STATUS_DONE


def test_batch_images_over_the_threshold_wait_in_the_blob_store_too(
    blob_dir: Path, stack: InProcessStack, redis_for: redis.Redis
) -> None:
    big, small = _noise_tiff(200, seed=5), _noise_tiff(40, seed=6)  # 40 kB and 2 kB
    params = {"box_sizes": "3,5"}
    reply = stack.client.submit_batch([build_request("fractal", image, params, name=name)
                                       for name, image in (("big.tif", big), ("small.tif", small))])
    keys = RedisKeys(stack.settings.key_prefix)
    stored = [redis_for.get(keys.job_input(job_id)) for job_id in reply.job_ids]
    assert len(stored[0]) < 1000 < len(big.encoded.data)  # a reference, not the image
    assert len(stored[1]) > len(small.encoded.data)
    assert len(_blobs(blob_dir)) == 1
    stack.start_worker()
    for job_id, image in zip(reply.job_ids, (big, small), strict=True):
        assert stack.client.wait(job_id, timeout_s=120).status == pb.JOB_STATUS_DONE
        expected = gliding_box(tifffile.imread(io.BytesIO(image.encoded.data)), box_sizes=[3, 5])
        np.testing.assert_allclose(
            from_tensor(stack.client.result(job_id).tensors["lacunarity"]), expected.lacunarity)
    assert _blobs_after_ack(blob_dir) == []


def test_a_refused_batch_leaves_no_blob_and_clients_cannot_name_one_in_a_batch(
    blob_dir: Path, stack: InProcessStack
) -> None:
    good = build_request("fractal", _noise_tiff(200), {"box_sizes": "3"}, name="good.tif")
    bad = build_request("fractal", _noise_tiff(200, seed=1), {"box_sizes": "4"}, name="bad.tif")
    with pytest.raises(grpc.RpcError) as error:
        stack.client.submit_batch([good, bad])
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "image 'bad.tif'" in error.value.details()
    assert _blobs(blob_dir) == []
    named = build_request("fractal", _noise_tiff(20), {}, name="named.tif")
    named.input.image.blob = "0" * 64
    with pytest.raises(grpc.RpcError) as error:
        stack.client.submit_batch([named])
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "jobs[0] of batch" in error.value.details()
    assert "only the gateway sets blob references" in error.value.details()
    assert stack.client.list_jobs() == []


def test_a_small_file_that_decodes_over_the_image_limit_runs_fractal_from_the_blob_store(
    blob_dir: Path, stack: InProcessStack, monkeypatch: pytest.MonkeyPatch, redis_for: redis.Redis
) -> None:
    monkeypatch.setenv("LABSIGHT_MAX_IMAGE_BYTES", str(30_000))
    pixels = np.tile(np.arange(200, dtype=np.uint8), (200, 1))  # 40 kB decoded, 1 kB as zlib TIFF
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, pixels, compression="zlib")
    assert len(buffer.getvalue()) < THRESHOLD
    image = tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=buffer.getvalue()))
    job = stack.client.stub.SubmitJob(build_request("fractal", image, {"box_sizes": "3,5"}))
    keys = RedisKeys(stack.settings.key_prefix)
    assert redis_for.hget(keys.job(job.job_id), "input_blob") != b""
    with pytest.raises(grpc.RpcError) as error:  # a pipeline that sends the image whole cannot
        stack.client.stub.SubmitJob(build_request("deep-features", image, {}))
    assert "LABSIGHT_MAX_IMAGE_BYTES" in error.value.details()
    stack.start_worker()
    assert stack.client.wait(job.job_id, timeout_s=120).status == pb.JOB_STATUS_DONE
    expected = gliding_box(pixels, box_sizes=[3, 5])
    np.testing.assert_allclose(
        from_tensor(stack.client.result(job.job_id).tensors["box_count"]), expected.box_count)
    assert _blobs_after_ack(blob_dir) == []
