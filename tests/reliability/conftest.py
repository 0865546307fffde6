"""Worker processes for reliability tests: real `python -m services.gateway.worker` children."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

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


def worker_warnings(log_dir: Path, text: str) -> list[str]:
    """The lines of every worker log in ``log_dir`` (see ``worker_process``) that hold ``text``."""
    return [line for path in sorted(log_dir.glob("worker-*.log"))
            for line in path.read_text(errors="replace").splitlines() if text in line]


@pytest.fixture
def worker_process(settings: Settings, tmp_path: Path) -> Iterator[WorkerFactory]:
    """Start worker processes on the test's settings, each logging its warnings to
    ``tmp_path/worker-<n>.log``; all are stopped after the test."""
    started: list[subprocess.Popen[bytes]] = []

    def start(**overrides: str) -> subprocess.Popen[bytes]:
        with (tmp_path / f"worker-{len(started)}.log").open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "services.gateway.worker"],
                env=worker_environment(settings, **overrides),
                stdout=subprocess.DEVNULL,
                stderr=log_file,
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
