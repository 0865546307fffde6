"""``labsight up``: Redis, the four services and the workers as supervised children on one machine.

A child that exits on its own is restarted with backoff (``labsight.supervisor``);
none outlives `up`, even one killed by SIGKILL (parent-death signal); one `up`
owns a home at a time (``labsight.up_lock``). `up` serves its own /metrics:
restarts per child and whether each child is up, Redis included.
"""

from __future__ import annotations

import os
import secrets
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from wsgiref.simple_server import WSGIServer

import grpc
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import Counter, Gauge, start_http_server

from labsight.catalog import SERVERS, UP_METRICS_PORT, WORKER
from labsight.home import Endpoints, remove_endpoints, write_endpoints
from labsight.redis_server import (
    free_port,
    hide_password,
    port_is_free,
    private_dir,
    redis_command,
    redis_environment,
    redis_url,
    wait_for_redis,
    write_redis_config,
)
from labsight.runtime.cpus import StackSizing, size_stack
from labsight.supervisor import ChildSpec, EventKind, Supervisor
from labsight.up_lock import UpLock
from labsight.web import WEB_PORT_ENV, stack_web_port
from services.gateway.auth import create_token, hash_token

TOKENS_FILE = "tokens"
LOCAL_TOKEN_FILE = "local-token"
LOCAL_TENANT = "local"
REDIS_PASSWORD_FILE = "redis-password"
SERVICE_TOKEN_FILE = "service-token"
"""The token model services want from workers, so other local users cannot call them."""
REDIS = "redis"
UP = "up"

CHILD_RESTARTS = Counter(
    "labsight_up_child_restarts_total", "Restarts of a child of `labsight up`", ["child"]
)
CHILD_UP = Gauge(
    "labsight_up_child_up",
    "1 while a child of `labsight up` runs and answers (gRPC health SERVING, Redis PING)",
    ["child"],
)
HEALTHY = Gauge("labsight_up_healthy", "1 while every child of `labsight up` is up, else 0")

PROBE_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
"""A restarted service is seen within a second, not after gRPC's default backoff (up to 2 min)."""


def _private_file(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o600)


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
    _private_file(token_path, token + "\n")
    return token


def ensure_secret(home: Path, name: str) -> str:
    """A random secret kept in the home file ``name`` (mode 0600), generated on first use."""
    path = home / name
    if path.exists() and path.read_text().strip():
        return path.read_text().strip()
    secret = secrets.token_hex(24)
    _private_file(path, secret + "\n")
    return secret


REPLICA_PORT_STEP = 1000
"""Process k (from 0) of a model service run as several listens on the first one's gRPC and
metrics ports + k x this."""


def replica_name(service: str, index: int) -> str:
    """The child name of process ``index`` (from 0) of ``service``: the service's name, then
    ``service-2``, ``service-3``..."""
    return service if index == 0 else f"{service}-{index + 1}"


@dataclass
class StackLayout:
    """Ports and sizes of one ``up`` stack."""

    grpc_ports: dict[str, int]
    """Per server child: a service's first process under its name, the others as
    ``replica_name`` says."""
    metrics_ports: dict[str, int]
    """Per server child, the first worker's (the others follow it) and `up`'s own."""
    workers: int = 1
    servers: dict[str, str] = field(default_factory=dict)
    """The catalog server of each server child, in start order."""

    @classmethod
    def from_base_port(cls, base_port: int | None, workers: int | None = None,
                       replicas: dict[str, int] | None = None) -> StackLayout:
        """Catalog ports, or consecutive ports from ``base_port`` (metrics from base + 100,
        `up`'s own at base + 99); ``workers`` worker processes and ``replicas`` processes per
        model service (default: ``size_stack``'s), a service's further processes on ports
        REPLICA_PORT_STEP apart."""
        sizing = size_stack(workers=workers)
        workers = sizing.workers
        replicas = sizing.replicas if replicas is None else replicas
        names = list(SERVERS)
        if base_port is None:
            grpc_ports = {name: SERVERS[name].grpc_port or 0 for name in names}
            metrics = {name: SERVERS[name].metrics_port for name in names}
            metrics[WORKER.name] = WORKER.metrics_port
            metrics[UP] = UP_METRICS_PORT
        else:
            grpc_ports = {name: base_port + i for i, name in enumerate(names)}
            metrics = {name: base_port + 100 + i for i, name in enumerate(names)}
            metrics[WORKER.name] = base_port + 100 + len(names)
            metrics[UP] = base_port + 99
        servers = {name: name for name in names}
        for name in names:
            for index in range(1, replicas.get(name, 1)):
                child = replica_name(name, index)
                grpc_ports[child] = grpc_ports[name] + REPLICA_PORT_STEP * index
                metrics[child] = metrics[name] + REPLICA_PORT_STEP * index
                servers[child] = name
        return cls(grpc_ports, metrics, workers, servers)

    def ports(self) -> list[int]:
        """Every port the stack binds (Redis's is picked free at start)."""
        extra_workers = range(1, self.workers)
        worker_ports = [self.metrics_ports[WORKER.name] + index for index in extra_workers]
        return [*self.grpc_ports.values(), *self.metrics_ports.values(), *worker_ports]

    @property
    def replicas(self) -> dict[str, int]:
        """Processes of each model service run as more than one."""
        processes = list(self.servers.values())
        return {name: processes.count(name) for name in SERVERS if processes.count(name) > 1}

    def addresses(self, service: str) -> list[str]:
        """The loopback addresses of every process of ``service``."""
        return [f"127.0.0.1:{self.grpc_ports[child]}"
                for child, server in self.servers.items() if server == service]


def service_target(addresses: list[str]) -> str:
    """A gRPC target for a service's processes: the one address, or an ``ipv4:`` list of all of
    them (channels with the round_robin policy, as the workers' are, spread calls over them)."""
    return addresses[0] if len(addresses) == 1 else "ipv4:" + ",".join(addresses)


class HealthMonitor:
    """Probes every child once a second (gRPC health, Redis PING, a worker's process) and
    keeps the ``labsight_up_child_up`` / ``labsight_up_healthy`` gauges and the log current."""

    def __init__(self, stack: Stack, interval_s: float = 1.0) -> None:
        self.stack = stack
        self.interval_s = interval_s
        self.channels = {
            name: grpc.insecure_channel(f"127.0.0.1:{port}", options=PROBE_CHANNEL_OPTIONS)
            for name, port in stack.layout.grpc_ports.items()
        }
        self.redis = redis.Redis.from_url(
            stack.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0
        )
        self.state: dict[str, bool] = {}
        self.healthy = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health", daemon=True)

    def probe(self, name: str) -> str:
        """Why ``name`` is not up, or "" if it is."""
        supervised = name in self.stack.supervisor.children  # an external Redis is not
        if supervised and not self.stack.supervisor.is_running(name):
            return "not running"
        if name == REDIS:
            try:
                self.redis.ping()
            except redis.RedisError as error:
                return f"no answer to PING: {error}"
        elif name in self.channels:
            stub = health_pb2_grpc.HealthStub(self.channels[name])
            server = SERVERS[self.stack.layout.servers[name]]
            request = health_pb2.HealthCheckRequest(service=server.grpc_services[0])
            try:
                status = stub.Check(request, timeout=2.0).status
            except grpc.RpcError as error:
                return f"health check failed: {error.code().name}"  # type: ignore[attr-defined]
            if status != health_pb2.HealthCheckResponse.SERVING:
                return f"health is {health_pb2.HealthCheckResponse.ServingStatus.Name(status)}"
        return ""

    def check(self) -> bool:
        """Probe every child once, update the gauges, log changes; True if all are up."""
        for name in self.stack.child_names():
            why = self.probe(name)
            CHILD_UP.labels(name).set(0 if why else 1)
            was_up = self.state.get(name, True)
            if was_up and why:
                self.stack.report(f"{name} is down ({why}); the stack is degraded")
            elif not was_up and not why:
                self.stack.report(f"{name} is up again")
            self.state[name] = not why
        healthy = all(self.state.values())
        if healthy and not self.healthy:
            self.stack.report("every child is up")
        self.healthy = healthy
        HEALTHY.set(1 if healthy else 0)
        return healthy

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.check()

    def start(self) -> None:
        """Probe in a background thread until :meth:`stop`."""
        self._thread.start()

    def stop(self) -> None:
        """Stop probing and close the probes' connections."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        for channel in self.channels.values():
            channel.close()
        self.redis.close()


@dataclass
class Stack:
    """A running ``up`` stack: Redis (unless external) and the supervised child processes."""

    home: Path
    layout: StackLayout
    redis_url: str = ""
    supervisor: Supervisor = field(default_factory=Supervisor)
    token: str = ""
    service_token: str = ""
    serving: bool = False
    lock: UpLock | None = None
    monitor: HealthMonitor | None = None
    metrics_server: WSGIServer | None = None
    sizing: StackSizing = field(init=False)
    """Worker processes, jobs in flight and thread pools for the CPUs (see ``size_stack``)."""

    def __post_init__(self) -> None:
        self.sizing = replace(size_stack(workers=self.layout.workers), replicas=self.layout.replicas)

    @property
    def logs(self) -> Path:
        """Where the children's logs and `up`'s own (``up.log``) are written."""
        return self.home / "logs"

    def log_of(self, child: str) -> Path:
        """The log file of ``child``."""
        return self.logs / f"{child}.log"

    def report(self, message: str) -> None:
        """Say ``message`` on stderr and in ``logs/up.log``."""
        line = f"labsight up: {message}"
        print(line, file=sys.stderr, flush=True)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        with open(self.logs / "up.log", "a") as log_file:
            log_file.write(f"{stamp} {line}\n")

    def child_names(self) -> list[str]:
        """Every child `up` watches: Redis (its own or the external one), servers, workers."""
        workers = [f"worker-{index + 1}" for index in range(self.layout.workers)]
        return [REDIS, *self.layout.servers, *workers]

    def endpoints(self) -> Endpoints:
        """Where this stack can be reached."""
        services = {name: service_target(self.layout.addresses(name))
                    for name in SERVERS if name != "gateway"}
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
            # Large inputs wait in a directory every process of this machine shares.
            blob_url=os.environ.get("LABSIGHT_BLOB_URL") or (self.home / "blobs").as_uri(),
            service_token=self.service_token,
            pid=os.getpid(),
        )

    def _check_web_port(self) -> None:
        """Refuse to start when the web page's port is taken, naming what moves it: the gateway
        would otherwise come up without its page and only say so in its log."""
        web_port = stack_web_port(self.layout.metrics_ports[UP])
        if web_port < 0 or port_is_free(web_port):
            return
        moves = "" if os.environ.get(WEB_PORT_ENV) else " or with --base-port (the page is on base + 98)"
        raise RuntimeError(
            f"the web page's port {web_port} is in use (is another `labsight up` running?); "
            f"pick another with {WEB_PORT_ENV}=PORT ({WEB_PORT_ENV}=-1: no web page){moves}"
        )

    def start(self, external_redis_url: str | None, timeout_s: float = 120.0) -> None:
        """Take the home, start Redis (unless a URL is given), every service and the workers;
        wait for SERVING. A child that exits before then fails the start."""
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.home.chmod(0o700)  # tokens, the Redis password and every tenant's data live here
        private_dir(self.logs)
        self.lock = UpLock(self.home)
        for message in self.lock.acquire():
            self.report(message)
        remove_endpoints(self.home)  # a dead predecessor's, if any
        taken = [port for port in self.layout.ports() if not port_is_free(port)]
        if taken:
            raise RuntimeError(
                f"ports {taken} are in use (is another `labsight up` running?); "
                "pick others with --base-port"
            )
        self._check_web_port()
        self.metrics_server, _ = start_http_server(self.layout.metrics_ports[UP], addr="127.0.0.1")
        if external_redis_url:
            self.redis_url = external_redis_url
        else:
            self._start_redis()
        self.token = ensure_local_token(self.home)
        self.service_token = ensure_secret(self.home, SERVICE_TOKEN_FILE)
        endpoints = self.endpoints()
        base_env = {
            **os.environ,
            **endpoints.as_environment(),
            "LABSIGHT_HOST": "127.0.0.1",
            "LABSIGHT_TOKENS_FILE": str(self.home / TOKENS_FILE),
        }
        # Thread pools and allocators sized to the CPUs and the work (see size_stack) unless
        # the operator set them.
        gateway_env = {**self.sizing.gateway_environment(), **base_env}
        for child, name in self.layout.servers.items():
            env = {
                **(gateway_env if name == "gateway" else
                   {**self.sizing.service_environment(name), **base_env}),
                "LABSIGHT_PORT": str(self.layout.grpc_ports[child]),
                "LABSIGHT_METRICS_PORT": str(self.layout.metrics_ports[child]),
            }
            if name == "gateway":
                env[WEB_PORT_ENV] = str(stack_web_port(self.layout.metrics_ports[UP]))
            self._spawn(child, SERVERS[name].module, env)
        for index in range(self.layout.workers):
            metrics_port = self.layout.metrics_ports[WORKER.name] + index
            env = {**self.sizing.worker_environment(), **base_env,
                   "LABSIGHT_METRICS_PORT": str(metrics_port)}
            self._spawn(f"worker-{index + 1}", WORKER.module, env)
        self.monitor = HealthMonitor(self)
        self._wait_until_serving(timeout_s)
        write_endpoints(endpoints, self.home)
        self.serving = True
        self.monitor.start()

    def _start_redis(self) -> None:
        """redis-server with AOF and a password, on a port that stays the same across restarts."""
        data_dir = self.home / "redis"
        password = ensure_secret(self.home, REDIS_PASSWORD_FILE)
        port = free_port()
        config = write_redis_config(data_dir, port, password, self.log_of(REDIS))
        self.redis_url = redis_url(port, password)
        child = self.supervisor.spawn(ChildSpec(REDIS, redis_command(config), redis_environment(),
                                                    self.log_of(REDIS)))
        self._record()
        wait_for_redis(self.redis_url, child.process, self.log_of(REDIS))

    def _spawn(self, name: str, module: str, env: dict[str, str]) -> None:
        argv = [sys.executable, "-m", module]
        self.supervisor.spawn(ChildSpec(name, argv, env, self.log_of(name)))
        self._record()

    def _record(self) -> None:
        if self.lock is not None:
            self.lock.record(self.supervisor.pids())

    def _wait_until_serving(self, timeout_s: float) -> None:
        assert self.monitor is not None
        deadline = time.monotonic() + timeout_s
        for name in self.child_names():
            while why := self.monitor.probe(name):
                exited = self.supervisor.exited()
                if exited:
                    raise RuntimeError(
                        f"{exited[0]} exited while starting; see {self.log_of(exited[0])}"
                    )
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{name} is not up after {timeout_s:.0f} s ({why}); "
                        f"see {self.log_of(name)}"
                    )
                time.sleep(0.2)
        self.monitor.check()

    def supervise(self) -> None:
        """Restart children that exited (call from the main thread, see labsight.supervisor)."""
        events = self.supervisor.tick()
        for event in events:
            self.report(event.message)
            if event.kind is EventKind.RESTARTED:
                CHILD_RESTARTS.labels(event.child).inc()
        if events:
            self._record()

    def stop(self, grace_s: float = 15.0) -> None:
        """Stop workers first, then services (SIGTERM, then SIGKILL after ``grace_s``), then
        Redis (SIGTERM: it flushes its AOF); then let the next `up` take the home."""
        if self.serving:  # never remove the endpoints of another `up` in the same home
            remove_endpoints(self.home)
        if self.monitor is not None:
            self.monitor.stop()
        workers = [name for name in self.supervisor.children if name.startswith("worker")]
        self.supervisor.stop([workers, list(self.layout.servers), [REDIS]], grace_s)
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
        if self.lock is not None:
            self.lock.release()


def describe(stack: Stack) -> str:
    """A human-readable table of the stack's endpoints (the Redis password hidden)."""
    endpoints = stack.endpoints()
    lines = [f"gateway       {endpoints.gateway}   (gRPC, the public API)"]
    web_port = stack_web_port(stack.layout.metrics_ports[UP])
    if web_port >= 0:
        lines += [f"web page      http://127.0.0.1:{web_port}/   (sign in with the token)"]
    lines += [f"{name:<13} {addr}" for name, addr in endpoints.services.items()]
    lines += [f"redis         {hide_password(endpoints.redis_url)}"]
    lines += [f"metrics       {url}" for url in endpoints.metrics.values()]
    lines += [f"logs          {stack.logs}", f"endpoints     {stack.home / 'endpoints.json'}"]
    lines += [f"sizing        {stack.sizing.describe()}"]
    return "\n".join(lines)


def serve_until(stack: Stack, stop: threading.Event, tick_s: float = 0.2) -> int:
    """Supervise the children until ``stop`` is set; exit status 0.

    A child that keeps crashing is given up on, but `up` keeps serving the rest.
    """
    while not stop.wait(tick_s):
        stack.supervise()
    return 0
