"""Starting and stopping a real `labsight up` in tests, on free ports and a temporary home."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from labsight.home import Endpoints, read_endpoints
from labsight.redis_server import port_is_free
from labsight.up import StackLayout

STARTUP_TIMEOUT_S = 180


def free_base_port() -> int:
    """A base port whose stack ports are free: the gRPC block (base..base+3), web page
    (base+98), metrics block (base+99..+104) and those of further service processes."""
    for base in range(21000 + os.getpid() % 500 * 10, 40000, 10):
        ports = [*StackLayout.from_base_port(base).ports(), base + 98]
        if all(port_is_free(p) for p in ports):
            return base
    raise RuntimeError("no free port block")


def up_environment(home: Path, **overrides: str) -> dict[str, str]:
    """The environment of an `up` with its own Redis (no REDIS_URL) in ``home``."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["LABSIGHT_HOME"] = str(home)
    env.update(overrides)
    return env


@dataclass
class UpProcess:
    """A running `labsight up` and where it records its endpoints."""

    process: subprocess.Popen[bytes]
    home: Path
    env: dict[str, str]
    endpoints: Endpoints
    output: Path
    """Its stdout and stderr."""

    def output_text(self) -> str:
        """Everything it printed so far."""
        return self.output.read_text(errors="replace")


def start_up(home: Path, base_port: int, env: dict[str, str], output: Path) -> UpProcess:
    """Start `labsight up --base-port base_port`; return once it recorded its endpoints."""
    with open(output, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "labsight.cli", "up", "--base-port", str(base_port)],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        endpoints = read_endpoints(home)
        if endpoints is not None and endpoints.pid == process.pid:
            return UpProcess(process, home, env, endpoints, output)
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise AssertionError(f"labsight up did not come up:\n{output.read_text()}")
        time.sleep(0.1)


def stop_up(process: subprocess.Popen[bytes], timeout_s: float = 60) -> int:
    """SIGTERM, as Ctrl-C would; SIGKILL if it does not stop in time. Returns its exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode
