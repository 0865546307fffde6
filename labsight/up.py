"""``labsight up``: Redis, the four services and the workers as child processes on one machine."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from labsight.catalog import SERVERS, WORKER, ProcessSpec
from labsight.home import Endpoints, remove_endpoints, write_endpoints
from labsight.redis_server import port_is_free, start_redis, stop_redis
from services.gateway.auth import create_token, hash_token

log = logging.getLogger(__name__)


TOKENS_FILE = "tokens"
LOCAL_TOKEN_FILE = "local-token"
LOCAL_TENANT = "local"


def ensure_local_token(home: Path) -> str:
    """The token of the ``local`` tenant, created on first use, so the CLI works without set-up.

    The tokens file holds only hashes; the plain token is kept for the owner
    in ``local-token`` (mode 0600) and recorded in the endpoints file.
    """
    token_path = home / LOCAL_TOKEN_FILE
    tokens_path = home / TOKENS_FILE
    if token_path.exists() and tokens_path.exists():
        token = token_path.read_text().strip()
        if hash_token(token) in tokens_path.read_text():
            return token
    token = create_token(tokens_path, LOCAL_TENANT)
    token_path.write_text(token + "\n")
    token_path.chmod(0o600)
    return token


def _die_with_parent() -> None:
    """In a child before exec: get SIGTERM if `up` dies, even by SIGKILL (Linux only)."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


@dataclass
class StackLayout:
    """Ports and sizes of one ``up`` stack."""

    grpc_ports: dict[str, int]
    metrics_ports: dict[str, int]
    workers: int = 1

    @classmethod
    def from_base_port(cls, base_port: int | None, workers: int = 1) -> StackLayout:
        """Catalog ports, or consecutive ports from ``base_port`` (metrics from base + 100)."""
        names = list(SERVERS)
        if base_port is None:
            grpc_ports = {name: SERVERS[name].grpc_port or 0 for name in names}
            metrics = {name: SERVERS[name].metrics_port for name in names}
            metrics[WORKER.name] = WORKER.metrics_port
        else:
            grpc_ports = {name: base_port + i for i, name in enumerate(names)}
            metrics = {name: base_port + 100 + i for i, name in enumerate(names)}
            metrics[WORKER.name] = base_port + 100 + len(names)
        return cls(grpc_ports, metrics, workers)


@dataclass
class Stack:
    """A running ``up`` stack: Redis (unless external) and the child processes."""

    home: Path
    layout: StackLayout
    redis_url: str = ""
    redis_process: subprocess.Popen[bytes] | None = None
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    token: str = ""
    serving: bool = False

    def endpoints(self) -> Endpoints:
        """Where this stack can be reached."""
        services = {
            name: f"127.0.0.1:{port}"
            for name, port in self.layout.grpc_ports.items()
            if name != "gateway"
        }
        return Endpoints(
            redis_url=self.redis_url,
            key_prefix="labsight",
            gateway=f"127.0.0.1:{self.layout.grpc_ports['gateway']}",
            services=services,
            metrics={
                name: f"http://127.0.0.1:{port}/metrics"
                for name, port in self.layout.metrics_ports.items()
            },
            token=self.token,
            pid=os.getpid(),
        )

    def start(self, redis_url: str | None, timeout_s: float = 120.0) -> None:
        """Start Redis (if no URL is given), every service and the workers; wait for SERVING."""
        taken = [
            port
            for port in [*self.layout.grpc_ports.values(), *self.layout.metrics_ports.values()]
            if not port_is_free(port)
        ]
        if taken:
            raise RuntimeError(
                f"ports {taken} are in use (is another `labsight up` running?); "
                "pick others with --base-port"
            )
        if redis_url:
            self.redis_url = redis_url
        else:
            self.redis_process, self.redis_url = start_redis(self.home / "redis")
        self.token = ensure_local_token(self.home)
        endpoints = self.endpoints()
        base_env = {
            **os.environ,
            **endpoints.as_environment(),
            "LABSIGHT_HOST": "127.0.0.1",
            "LABSIGHT_TOKENS_FILE": str(self.home / TOKENS_FILE),
        }
        logs = self.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for name, spec in SERVERS.items():
            env = {
                **base_env,
                "LABSIGHT_PORT": str(self.layout.grpc_ports[name]),
                "LABSIGHT_METRICS_PORT": str(self.layout.metrics_ports[name]),
            }
            self._spawn(name, spec, env, logs)
        for index in range(self.layout.workers):
            metrics_port = self.layout.metrics_ports[WORKER.name] + index
            env = {**base_env, "LABSIGHT_METRICS_PORT": str(metrics_port)}
            self._spawn(f"worker-{index + 1}", WORKER, env, logs)
        self._wait_until_serving(timeout_s)
        write_endpoints(endpoints, self.home)
        self.serving = True

    def _spawn(self, name: str, spec: ProcessSpec, env: dict[str, str], logs: Path) -> None:
        log_file = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        self.children[name] = subprocess.Popen(
            [sys.executable, "-m", spec.module],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        log_file.close()

    def _wait_until_serving(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for name, spec in SERVERS.items():
            address = f"127.0.0.1:{self.layout.grpc_ports[name]}"
            with grpc.insecure_channel(address) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                while True:
                    self.check_children()
                    try:
                        reply = stub.Check(
                            health_pb2.HealthCheckRequest(service=spec.grpc_services[0]),
                            timeout=1.0,
                        )
                        if reply.status == health_pb2.HealthCheckResponse.SERVING:
                            break
                    except grpc.RpcError:
                        pass
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"{name} did not report SERVING on {address} within {timeout_s:.0f} s; "
                            f"see {self.home / 'logs' / (name + '.log')}"
                        )
                    time.sleep(0.2)

    def check_children(self) -> None:
        """Raise if a child process has exited."""
        for name, process in self.children.items():
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with code {process.returncode}; "
                    f"see {self.home / 'logs' / (name + '.log')}"
                )

    def stop(self, grace_s: float = 15.0) -> None:
        """Stop workers first, then services (SIGTERM, then SIGKILL after ``grace_s``), then Redis."""
        if self.serving:  # never remove the endpoints of another `up` in the same home
            remove_endpoints(self.home)
        workers = [name for name in self.children if name.startswith("worker")]
        services = [name for name in self.children if name not in workers]
        for group in (workers, services):
            for name in group:
                if self.children[name].poll() is None:
                    self.children[name].send_signal(signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            for name in group:
                try:
                    self.children[name].wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    self.children[name].kill()
                    self.children[name].wait()
        if self.redis_process is not None:
            stop_redis(self.redis_process, self.redis_url)


def describe(stack: Stack) -> str:
    """A human-readable table of the stack's endpoints."""
    endpoints = stack.endpoints()
    lines = [f"gateway       {endpoints.gateway}   (gRPC, the public API)"]
    lines += [f"{name:<13} {addr}" for name, addr in endpoints.services.items()]
    lines += [f"redis         {endpoints.redis_url}"]
    lines += [f"metrics       {url}" for url in endpoints.metrics.values()]
    lines += [f"logs          {stack.home / 'logs'}", f"endpoints     {stack.home / 'endpoints.json'}"]
    return "\n".join(lines)


def wait_for_stop(stack: Stack, stop: threading.Event) -> int:
    """Block until ``stop`` is set (exit 0) or a child dies (exit 1)."""
    while not stop.wait(0.5):
        try:
            stack.check_children()
        except RuntimeError as error:
            print(f"labsight up: {error}; stopping", file=sys.stderr)
            return 1
    return 0

