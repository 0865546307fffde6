"""Ids a client sends are checked before they reach a Redis key; tenants keep their own names."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from labsight.catalog import GATEWAY
from labsight.client import LabSightClient, build_request
from labsight.config import Settings
from labsight.demo import demo_image
from labsight.runtime.server import RunningServer
from labsight.v1 import gateway_pb2 as pb
from services.gateway.auth import create_token, parse_token_env
from services.gateway.servicer import register as register_gateway

from .conftest import InProcessStack


def _refusal(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as error:
        call()
    return error.value


@pytest.mark.parametrize("suffix", [":input", ":result", "/../x", " ", "é"])
def test_job_ids_that_are_not_ids_are_invalid_argument_for_every_rpc(
    stack: InProcessStack, suffix: str
) -> None:
    job = stack.client.submit("fractal", demo_image(), {"box_sizes": "3"})
    bad = job.job_id + suffix  # ":input" names the job's input, a string key, while it is queued
    stub = stack.client.stub
    for call in (
        lambda: stack.client.get(bad),
        lambda: list(stack.client.watch(bad, timeout_s=10)),
        lambda: stack.client.cancel(bad),
        lambda: list(stub.GetJobResult(pb.GetJobResultRequest(job_id=bad))),
    ):
        error = _refusal(call)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        assert error.details().startswith("job_id: ") and "is not an id" in error.details()
    assert stack.client.get(job.job_id).status == pb.JOB_STATUS_QUEUED  # nothing was touched


def test_empty_job_id_is_invalid_argument(stack: InProcessStack) -> None:
    error = _refusal(lambda: stack.client.get(""))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "job_id: is empty; an id is required"


def test_batch_ids_and_idempotency_keys_that_are_not_ids_are_invalid_argument(
    stack: InProcessStack,
) -> None:
    good = build_request("fractal", demo_image(), {"box_sizes": "3"})
    error = _refusal(lambda: stack.client.submit_batch([good], batch_id="plate-1:jobs"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("header.batch_id: 'plate-1:jobs' is not an id")
    for call in (
        lambda: stack.client.batch("plate-1:jobs"),
        lambda: list(stack.client.watch_batch("plate-1:jobs")),
        lambda: stack.client.list_jobs(batch_id="plate-1:jobs"),
    ):
        error = _refusal(call)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.details().startswith("batch_id: 'plate-1:jobs' is not an id")
    error = _refusal(
        lambda: stack.client.submit("fractal", demo_image(), {"box_sizes": "3"},
                                    idempotency_key="a:b")
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("idempotency_key: 'a:b' is not an id")
    assert stack.client.list_jobs() == []


def test_huge_ids_are_refused_with_a_short_message(stack: InProcessStack) -> None:
    huge = "p" * 20_000
    for call, field in (
        (lambda: stack.client.submit_batch([], batch_id=huge), "header.batch_id"),
        (lambda: stack.client.get(huge), "job_id"),
        (lambda: stack.client.batch(huge), "batch_id"),
    ):
        error = _refusal(call)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()[:200]
        assert error.details().startswith(f"{field}: 'ppp")
        assert "… (20000 characters)" in error.details() and len(error.details()) < 400


@pytest.mark.parametrize("token", ["99999999999999999999", "-1", "1e3", "abc", "٣"])
def test_page_tokens_that_no_gateway_gave_are_invalid_argument(
    stack: InProcessStack, token: str
) -> None:
    stack.client.submit("fractal", demo_image(), {"box_sizes": "3"})
    stub = stack.client.stub
    error = _refusal(lambda: stub.ListJobs(pb.ListJobsRequest(page_token=token)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("page_token: ")


def test_page_tokens_page_through_every_job(stack: InProcessStack) -> None:
    submitted = {stack.client.submit("fractal", demo_image(), {"box_sizes": "3"}).job_id
                 for _ in range(5)}
    stub, seen, token = stack.client.stub, [], ""
    while True:
        page = stub.ListJobs(pb.ListJobsRequest(page_size=2, page_token=token))
        seen += [job.job_id for job in page.jobs]
        if not page.next_page_token:
            break
        token = page.next_page_token
    assert sorted(seen) == sorted(submitted)


def test_page_sizes_beyond_the_limit_are_served_a_page_at_a_time(stack: InProcessStack) -> None:
    requests = [build_request("fractal", demo_image(), {"box_sizes": "3"})] * 1001
    submitted = stack.client.submit_batch(requests, batch_id="big").job_ids
    stub = stack.client.stub
    first = stub.ListJobs(pb.ListJobsRequest(batch_id="big", page_size=2**31 - 1))
    assert len(first.jobs) == 1000 and first.next_page_token
    rest = stub.ListJobs(pb.ListJobsRequest(batch_id="big", page_size=2**31 - 1,
                                            page_token=first.next_page_token))
    assert [job.job_id for job in [*first.jobs, *rest.jobs]] == list(submitted)


def test_tenants_keep_their_own_batch_names(
    serve: Callable[..., RunningServer], settings: Settings, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    token_a, token_b = create_token(tokens, "lab-a"), create_token(tokens, "lab-b")
    secured = Settings(**{**vars(settings), "allow_anonymous": False, "tokens_file": str(tokens)})
    gateway = serve(register_gateway, GATEWAY.grpc_services, secured)
    job = build_request("fractal", demo_image(), {"box_sizes": "3"})
    with LabSightClient(gateway.address, token=token_a) as lab_a, \
            LabSightClient(gateway.address, token=token_b) as lab_b:
        lab_a.submit_batch([job], batch_id="plate-X")
        _refusal(lambda: lab_a.submit_batch([job], batch_id="plate-X:jobs"))
        reply = lab_b.submit_batch([job, job], batch_id="plate-X")
        assert reply.batch_id == "plate-X" and len(reply.job_ids) == 2
        assert lab_b.batch("plate-X").total == 2
        assert lab_a.batch("plate-X").total == 1
        assert sorted(j.job_id for j in lab_b.list_jobs(batch_id="plate-X")) == sorted(reply.job_ids)
        assert len(lab_a.list_jobs()) == 1
        # The same idempotency key in two tenants names two jobs.
        first_a = lab_a.submit("fractal", demo_image(), {"box_sizes": "3"}, idempotency_key="k-1")
        first_b = lab_b.submit("fractal", demo_image(), {"box_sizes": "3"}, idempotency_key="k-1")
        assert first_a.job_id != first_b.job_id


@pytest.mark.parametrize("tenant", ["lab:a", "lab a", "", "x" * 129])
def test_tenant_names_that_are_not_ids_are_refused(tmp_path: Path, tenant: str) -> None:
    with pytest.raises(ValueError, match="tenant"):
        create_token(tmp_path / "tokens", tenant)
    with pytest.raises(ValueError, match="LABSIGHT_TOKENS"):
        parse_token_env(f"{tenant}=secret") if tenant else parse_token_env("=secret")
