"""The asyncio SDK against a real in-process stack: typed errors, concurrent runs, batches as frames."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from labsight.aio import AsyncLabSightClient
from labsight.client import build_request
from labsight.demo import demo_image
from labsight.errors import InvalidArgumentError, NotFoundError
from labsight.v1 import gateway_pb2 as pb

from .conftest import InProcessStack

FAST = {"box_sizes": "3-11"}


def test_refusals_are_the_sync_clients_typed_errors(stack: InProcessStack) -> None:
    async def refusals() -> list[BaseException]:
        async with AsyncLabSightClient(stack.gateway.address, token="") as lab:
            calls = [lab.get("no-such-job"), lab.result("no-such-job"), lab.wait("no-such-job"),
                     lab.submit("fractal", demo_image(), {"box_sizes": "x"})]
            return await asyncio.gather(*calls, return_exceptions=True)

    missing_get, missing_result, missing_wait, bad = asyncio.run(refusals())
    for error, rpc in ((missing_get, "GetJob"), (missing_result, "GetJobResult"), (missing_wait, "GetJob")):
        assert isinstance(error, NotFoundError) and error.rpc == rpc
        assert error.address == stack.gateway.address and "no-such-job" in error.details()
    assert isinstance(bad, InvalidArgumentError) and "box_sizes" in bad.details()


def test_concurrent_runs_and_a_batch_frame_match_the_sync_client(stack: InProcessStack) -> None:
    stack.start_worker()
    images = [np.roll(demo_image(), 9 * index, axis=0) for index in range(3)]

    async def work() -> tuple[list[np.ndarray], object, list[str]]:
        async with AsyncLabSightClient(stack.gateway.address, token="") as lab:
            results = await asyncio.gather(*(lab.run("fractal", image, FAST, timeout_s=120)
                                             for image in images))
            batch = await lab.submit_batch([build_request("fractal", image, FAST, name=f"img{i}")
                                            for i, image in enumerate(images)], batch_id="async-1")
            frame = await lab.batch_to_pandas("async-1", timeout_s=120)
            states = [job.status async for job in lab.watch(batch.job_ids[0])]
            return [result.to_numpy() for result in results], frame, states

    tables, frame, states = asyncio.run(work())
    for image, table in zip(images, tables, strict=True):
        same = stack.client.run("fractal", image, FAST, timeout_s=120)
        np.testing.assert_array_equal(table, same.to_numpy())
    assert list(frame["input_name"]) == ["img0", "img1", "img2"]
    assert frame.index.names == ["job_id", "id"] and frame.attrs["batch_id"] == "async-1"
    np.testing.assert_array_equal(frame.drop(columns="input_name").to_numpy(), np.vstack(tables))
    assert states[-1] == pb.JOB_STATUS_DONE  # the watch of an ended job gives its last state


def test_an_unknown_batch_is_not_found(stack: InProcessStack) -> None:
    async def unknown() -> None:
        async with AsyncLabSightClient(stack.gateway.address, token="") as lab:
            await lab.batch("no-such-batch")

    with pytest.raises(NotFoundError):
        asyncio.run(unknown())
