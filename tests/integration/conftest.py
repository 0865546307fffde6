"""An in-process LabSight stack on loopback: features, segmentation and gateway servers, worker threads."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from labsight.catalog import FEATURES, GATEWAY, SEGMENTATION
from labsight.client import LabSightClient
from labsight.config import Settings
from labsight.runtime.server import RunningServer
from labsight.v1 import gateway_pb2 as pb
from services.features.servicer import register as register_features
from services.gateway.pipelines.base import Pipeline, RunContext
from services.gateway.servicer import register as register_gateway
from services.gateway.services import ServiceClients
from services.gateway.worker import Worker
from services.segmentation.servicer import register as register_segmentation
from tests.conftest import RunningWorker


@dataclass
class InProcessStack:
    """Handles of a running in-process stack."""

    settings: Settings
    gateway: RunningServer
    features: RunningServer
    client: LabSightClient
    start_worker: Callable[[], Worker]
    segmentation: RunningServer | None = None

    @contextmanager
    def service_clients(self) -> Iterator[ServiceClients]:
        """A worker's clients of this stack's features service (no classifier; segmentation
        unreachable), closed after the block."""
        services = ServiceClients({"features": self.features.address, "segmentation": "127.0.0.1:1",
                                   "classifier": "127.0.0.1:1"})
        try:
            yield services
        finally:
            services.close()

    def run_in_worker(self, pipeline: Pipeline, request: pb.SubmitJobRequest
                      ) -> tuple[pb.JobResult, list[tuple[Any, ...]]]:
        """``request`` validated and run by ``pipeline`` as a worker runs it, on this stack's
        features service; its result and every progress report, in order."""
        params = pipeline.validate(dict(request.params), request.input)
        reports: list[tuple[Any, ...]] = []
        with self.service_clients() as services:
            result = pipeline.run(RunContext("job", params, request.input, services,
                                             lambda *report: reports.append(report)))
        return result, reports


@pytest.fixture
def stack(
    serve: Callable[..., RunningServer],
    settings: Settings,
    worker_thread: Callable[..., RunningWorker],
) -> Iterator[InProcessStack]:
    """Gateway, features and segmentation servers on free ports, workers on demand, a unique key prefix."""
    features = serve(register_features, FEATURES.grpc_services, settings)
    segmentation = serve(register_segmentation, SEGMENTATION.grpc_services, settings)
    settings.service_addresses = {
        "features": features.address,
        "segmentation": segmentation.address,
        "classifier": "127.0.0.1:1",
    }
    gateway = serve(register_gateway, GATEWAY.grpc_services, settings)

    def start_worker() -> Worker:
        return worker_thread().worker

    client = LabSightClient(gateway.address, token="")
    try:
        yield InProcessStack(settings, gateway, features, client, start_worker, segmentation)
    finally:
        client.close()


@pytest.fixture
def redis_for(settings: Settings) -> redis.Redis:
    """A Redis client on the stack's Redis."""
    return redis.Redis.from_url(settings.redis_url)
