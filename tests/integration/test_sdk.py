"""The SDK for notebooks: typed errors from a real gateway, results as pandas, batches as AnnData."""

from __future__ import annotations

import pickle
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anndata
import grpc
import numpy as np
import pytest

from labsight.catalog import GATEWAY
from labsight.client import LabSightClient, build_request
from labsight.config import Settings
from labsight.demo import demo_image
from labsight.errors import (
    SERVICE_ERRORS,
    InvalidArgument,
    InvalidArgumentError,
    JobFailedError,
    NotFoundError,
    ResourceExhaustedError,
    ServiceError,
    UnauthenticatedError,
    UnavailableError,
    service_error,
    status_code_for,
)
from labsight.export import write_table
from labsight.result import Result
from labsight.runtime.server import RunningServer
from labsight.tables import table_values
from labsight.tensors import from_tensor
from labsight.v1 import gateway_pb2 as pb
from services.gateway.auth import create_token
from services.gateway.servicer import register as register_gateway
from tests.conftest import RunningWorker
from tests.integration.conftest import InProcessStack

FAST = {"box_sizes": "3-11"}
"""Fractal parameters that keep each test job well under a second."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_unknown_job_is_not_found_for_unary_and_streamed_calls(stack: InProcessStack) -> None:
    for call, rpc in (
        (lambda: stack.client.get("no-such-job"), "GetJob"),
        (lambda: stack.client.result("no-such-job"), "GetJobResult"),
        (lambda: list(stack.client.watch("no-such-job")), "WatchJob"),
    ):
        with pytest.raises(NotFoundError) as caught:
            call()
        error = caught.value
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert "no-such-job" in error.details()
        assert error.rpc == rpc and error.address == stack.gateway.address
        assert f"NOT_FOUND from {rpc} at {stack.gateway.address}: " in str(error)
        assert isinstance(error, LookupError)  # as the server-side NotFound is


@pytest.mark.parametrize("code", [code for code in grpc.StatusCode if code != grpc.StatusCode.OK])
def test_every_status_becomes_its_typed_error(code: grpc.StatusCode) -> None:
    """A real server answering each status: the code's own class, or a plain ServiceError."""

    def refuse(request: bytes, context: grpc.ServicerContext) -> bytes:
        context.abort(code, f"refused with {code.name}")

    server = grpc.server(ThreadPoolExecutor(1))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "test.Refuser", {"Refuse": grpc.unary_unary_rpc_method_handler(refuse)})])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.RpcError) as raw:
                channel.unary_unary("/test.Refuser/Refuse")(b"", timeout=10)
    finally:
        server.stop(0)
    error = service_error(raw.value, rpc="Refuse", address=f"127.0.0.1:{port}")
    assert type(error) is SERVICE_ERRORS.get(code, ServiceError)
    assert error.code() == code and error.details() == f"refused with {code.name}"
    assert status_code_for(error) == code  # a handler that re-raises it answers the same status


def test_code_written_for_raw_grpc_errors_still_catches_them(stack: InProcessStack) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stack.client.get("no-such-job")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert isinstance(caught.value, ServiceError)


def test_bad_parameters_are_invalid_argument_with_the_details(stack: InProcessStack) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        stack.client.submit("fractal", demo_image(), {"box_sizes": "three"})
    assert "box_sizes" in caught.value.details() and "three" in caught.value.details()
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, InvalidArgument)
    assert stack.client.list_jobs() == []


def test_bad_token_is_unauthenticated(
    serve: Callable[..., RunningServer], settings: Settings, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    create_token(tokens, "lab-a")
    secured = Settings(**{**vars(settings), "allow_anonymous": False, "tokens_file": str(tokens)})
    gateway = serve(register_gateway, GATEWAY.grpc_services, secured)
    with LabSightClient(gateway.address, token="not-a-token") as wrong:
        with pytest.raises(UnauthenticatedError) as caught:
            wrong.pipelines()
    assert caught.value.details() == "invalid bearer token"


def test_full_queue_is_resource_exhausted(
    stack: InProcessStack, serve: Callable[..., RunningServer]
) -> None:
    stack.client.submit("fractal", demo_image(), FAST)
    limited = Settings(**{**vars(stack.settings), "max_queue_depth": 1})
    small_gateway = serve(register_gateway, GATEWAY.grpc_services, limited)
    with LabSightClient(small_gateway.address, token="") as client:
        with pytest.raises(ResourceExhaustedError) as caught:
            client.submit("fractal", demo_image(), FAST)
    assert "(limit 1)" in caught.value.details()


def test_gateway_down_is_unavailable_naming_its_address() -> None:
    address = f"127.0.0.1:{_free_port()}"
    with LabSightClient(address, token="", timeout_s=10) as client:
        with pytest.raises(UnavailableError) as caught:
            client.get("some-job")
    assert f"UNAVAILABLE from GetJob at {address}: " in str(caught.value)
    assert caught.value.address == address


def test_result_of_a_job_that_ended_without_one_is_job_failed(stack: InProcessStack) -> None:
    job = stack.client.submit("fractal", demo_image(), FAST)  # no worker: it stays queued
    stack.client.cancel(job.job_id)
    with pytest.raises(JobFailedError) as caught:
        stack.client.result(job.job_id)
    error = caught.value
    assert error.job_id == job.job_id and error.job.status == pb.JOB_STATUS_CANCELLED
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"job {job.job_id} is cancelled" in str(error)


def test_run_of_a_job_that_died_raises_job_failed_with_its_error(
    serve: Callable[..., RunningServer], settings: Settings,
    worker_thread: Callable[..., RunningWorker],
) -> None:
    settings.max_attempts = 1
    settings.service_wait_s = 0.1  # the features service never answers: the one attempt fails
    settings.service_addresses = {"features": f"127.0.0.1:{_free_port()}",
                                  "segmentation": "127.0.0.1:1", "classifier": "127.0.0.1:1"}
    gateway = serve(register_gateway, GATEWAY.grpc_services, settings)
    worker_thread()
    with LabSightClient(gateway.address, token="") as client:
        with pytest.raises(JobFailedError) as caught:
            client.run("fractal", demo_image(), FAST, timeout_s=60)
    error = caught.value
    assert error.job.status == pb.JOB_STATUS_DEAD and "UNAVAILABLE" in error.error
    assert error.error in str(error) and f"job {error.job_id} is dead: " in str(error)
    copy = pickle.loads(pickle.dumps(error))  # e.g. raised in a joblib or dask worker
    assert (type(copy), str(copy), copy.details(), copy.job) == (
        JobFailedError, str(error), error.details(), error.job)


def test_result_is_a_frame_with_ids_as_index_and_named_columns(
    stack: InProcessStack, tmp_path: Path
) -> None:
    stack.start_worker()
    result = stack.client.run("fractal", demo_image(), FAST, timeout_s=120)
    assert isinstance(result, Result) and result.main_table == "fractal"
    message = result.message.tables["fractal"]
    frame = result.to_pandas()
    assert frame.index.name == "id" and list(frame.index) == list(message.row_ids)
    assert list(frame.columns) == list(message.columns)
    np.testing.assert_array_equal(frame.to_numpy(), table_values(message))
    np.testing.assert_array_equal(result.to_numpy(), table_values(message))
    assert frame.attrs["provenance"] == dict(result.provenance) and frame.attrs["table"] == "fractal"
    other = next(name for name in sorted(result.tables) if name != "fractal")  # the Weka columns
    assert list(result.to_pandas(other).columns) == list(result.tables[other].columns)
    assert set(result.tables_to_pandas()) == set(result.tables)
    np.testing.assert_array_equal(result.tensor("lacunarity"),
                                  from_tensor(result.tensors["lacunarity"]))
    assert result.ByteSize() == result.message.ByteSize()  # other message attributes read through
    write_table([result], "fractal", tmp_path / "fractal.h5ad", "h5ad")  # where a JobResult goes
    np.testing.assert_array_equal(anndata.read_h5ad(tmp_path / "fractal.h5ad").obsm["features"],
                                  result.to_anndata().obsm["features"])
    with pytest.raises(KeyError, match="no table 'nope'"):
        result.to_pandas("nope")


def test_batch_to_anndata_holds_every_job_with_ids_labels_and_provenance(
    stack: InProcessStack,
) -> None:
    stack.start_worker()
    rng = np.random.default_rng(3)
    images = {f"well-{i}.png": rng.integers(0, 256, (48, 48), dtype=np.uint8) for i in range(3)}
    requests = [build_request("fractal", image, FAST, labels={"group": "ab"[i % 2]}, name=name)
                for i, (name, image) in enumerate(images.items())]
    batch = stack.client.submit_batch(requests, batch_id="plate-1")
    adata = stack.client.batch_to_anndata(batch.batch_id, timeout_s=120)  # waits for the jobs
    results = [stack.client.result(job.job_id) for job in stack.client.batch_jobs("plate-1")]
    assert adata.n_obs == 3 and list(adata.obs_names) == list(images)
    expected = np.concatenate([r.to_numpy() for r in results])
    np.testing.assert_array_equal(adata.X, expected.astype(np.float32))
    np.testing.assert_array_equal(adata.obsm["features"], expected)
    assert list(adata.var_names) == list(results[0].tables["fractal"].columns)
    assert list(adata.obs["group"]) == ["a", "b", "a"]
    assert list(adata.obs["job_id"]) == [r.job_id for r in results]
    assert adata.uns["provenance"] == dict(results[0].provenance) and adata.uns["batch_id"] == "plate-1"


def test_batch_to_anndata_refuses_a_failed_job_unless_told_to_skip_it(stack: InProcessStack) -> None:
    requests = [build_request("fractal", demo_image(), FAST) for _ in range(2)]
    stack.client.submit_batch(requests, batch_id="half")
    cancelled = stack.client.batch_jobs("half")[1]
    stack.client.cancel(cancelled.job_id)
    stack.start_worker()
    with pytest.raises(JobFailedError) as caught:
        stack.client.batch_to_anndata("half", timeout_s=120)
    assert caught.value.job_id == cancelled.job_id
    adata = stack.client.batch_to_anndata("half", skip_failed=True, timeout_s=120)
    assert adata.n_obs == 1 and list(adata.uns["failed_jobs"]) == [cancelled.job_id]
