"""Worker processes for reliability tests: real `python -m services.gateway.worker` children."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from labsight.config import Settings, address_env_var

WorkerFactory = Callable[..., subprocess.Popen[bytes]]


def worker_environment(settings: Settings, **overrides: str) -> dict[str, str]:
    """Environment that points a worker process at the test's Redis, prefix and services."""
    env = {
        **os.environ,
        "REDIS_URL": settings.redis_url,
        "LABSIGHT_KEY_PREFIX": settings.key_prefix,
        "LABSIGHT_METRICS_PORT": "0",
        "LABSIGHT_CLAIM_IDLE_MS": str(settings.claim_idle_ms),
        "LABSIGHT_MAX_ATTEMPTS": str(settings.max_attempts),
        "LABSIGHT_RETRY_BASE_S": str(settings.retry_base_s),
        "LABSIGHT_RETRY_MAX_S": str(settings.retry_max_s),
        "LABSIGHT_LOG_LEVEL": "WARNING",
    }
    env.update({address_env_var(name): addr for name, addr in settings.service_addresses.items()})
    env.update(overrides)
    return env


@pytest.fixture
def worker_process(settings: Settings) -> Iterator[WorkerFactory]:
    """Start worker processes on the test's settings; all are stopped after the test."""
    started: list[subprocess.Popen[bytes]] = []

    def start(**overrides: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.gateway.worker"],
            env=worker_environment(settings, **overrides),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in started:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
