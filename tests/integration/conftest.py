"""An in-process LabSight stack on loopback: features, segmentation and gateway servers, worker threads."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import redis

from labsight.catalog import FEATURES, GATEWAY, SEGMENTATION
from labsight.client import LabSightClient
from labsight.config import Settings
from labsight.runtime.server import RunningServer
from services.features.servicer import register as register_features
from services.gateway.servicer import register as register_gateway
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
