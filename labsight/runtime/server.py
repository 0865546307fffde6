"""Builds, starts and gracefully stops a LabSight gRPC server with health, reflection and metrics."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from labsight.catalog import MODEL_SERVICES
from labsight.config import Settings
from labsight.runtime.idle_trim import process_trimmer
from labsight.runtime.interceptors import StatusInterceptor
from labsight.runtime.readiness import ReadinessProbe, follow_readiness
from labsight.runtime.service_token import ServiceTokenInterceptor

log = logging.getLogger(__name__)

HANDLER_THREAD_PREFIX = "grpc-handler"
"""Name prefix of the threads that run a server's call handlers."""

HANDLER_EXIT_S = 5.0
"""How long a stopped service's handler threads get, after the grace, to notice their calls
were cancelled before the process ends without them."""

SIGNAL_POLL_S = 0.5
"""How often a service's main thread wakes to run the signal handlers. A signal the kernel
hands to another thread (gRPC's, ONNX Runtime's) only marks itself pending, and Python runs
the handler when the main thread next runs: an untimed wait never wakes, so the process kept
serving after SIGTERM (seen in CI: no "stopping" 60 s after it)."""

Registrar = Callable[[grpc.Server, Settings], ReadinessProbe | None]
"""Adds a service's servicers to a server (e.g. ``add_FeatureServiceServicer_to_server``);
returns the readiness probe its health follows, if it depends on something (e.g. Redis)."""


@dataclass
class RunningServer:
    """A started server and the handles needed to observe and stop it."""

    server: grpc.Server
    port: int
    health: health.HealthServicer
    service_names: tuple[str, ...]
    handlers: futures.ThreadPoolExecutor
    stopping: threading.Event = field(default_factory=threading.Event)

    @property
    def address(self) -> str:
        """``host:port`` a client on this machine can dial."""
        return f"127.0.0.1:{self.port}"

    def stop(self, grace_s: float = 5.0) -> None:
        """Report NOT_SERVING, let in-flight calls finish for ``grace_s``, then stop."""
        self.stopping.set()
        self.health.enter_graceful_shutdown()
        self.server.stop(grace_s).wait()


def start_server(
    register: Registrar, service_names: Sequence[str], settings: Settings
) -> RunningServer:
    """Start a gRPC server on ``settings.host:settings.port`` (0 picks a free port).

    TLS is on when ``settings.tls_cert`` and ``settings.tls_key`` name PEM
    files. The server serves ``grpc.health.v1`` (overall and per service, SERVING once
    started; when the registrar returned a readiness probe, each service's status
    follows it while the overall one stays SERVING), server reflection, and the
    status/metrics interceptor, with the configured message size limit.
    """
    handlers = futures.ThreadPoolExecutor(
        max_workers=settings.max_workers, thread_name_prefix=HANDLER_THREAD_PREFIX
    )
    server = grpc.server(
        handlers,
        interceptors=[
            StatusInterceptor(model_service_names(service_names), process_trimmer()),
            *token_interceptors(service_names, settings),
        ],
        options=settings.server_options(),
    )
    readiness = register(server, settings)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = (*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server)
    address = f"{settings.host}:{settings.port}"
    if settings.tls_cert and settings.tls_key:
        credentials = grpc.ssl_server_credentials(
            [(Path(settings.tls_key).read_bytes(), Path(settings.tls_cert).read_bytes())]
        )
        port = server.add_secure_port(address, credentials)
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot bind gRPC port {settings.host}:{settings.port}")
    server.start()
    for name in ("", *service_names):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("serving", extra={"services": list(service_names), "port": port})
    running = RunningServer(server, port, health_servicer, tuple(service_names), handlers)
    if readiness is not None:
        # The overall status ("") stays SERVING: it is the process's liveness, and a
        # dependency being down is no reason to restart the process.
        follow_readiness(health_servicer, service_names, readiness, running.stopping)
    return running


def model_service_names(service_names: Sequence[str]) -> list[str]:
    """The model services (segmentation, features, classifier) among ``service_names``."""
    model_services = {name for spec in MODEL_SERVICES for name in spec.grpc_services}
    return [name for name in service_names if name in model_services]


def token_interceptors(
    service_names: Sequence[str], settings: Settings
) -> list[grpc.ServerInterceptor]:
    """The shared-token check for the model services among ``service_names``, when
    ``settings.service_token`` is set (the gateway has its tenants' tokens instead)."""
    protected = model_service_names(service_names)
    if not settings.service_token or not protected:
        return []
    return [ServiceTokenInterceptor(settings.service_token, protected)]


def start_metrics(settings: Settings) -> int | None:
    """Serve Prometheus /metrics on ``settings.metrics_port``; returns the bound port."""
    if settings.metrics_port is None:
        return None
    httpd, _ = start_http_server(settings.metrics_port, addr=settings.host)
    port = int(httpd.server_address[1])
    log.info("metrics", extra={"metrics_port": port})
    return port


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT; install it before anything reports SERVING."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return stop


def run_forever(register: Registrar, service_names: Sequence[str], settings: Settings) -> None:
    """Run a service process: metrics, server, then a graceful stop on SIGTERM/SIGINT, and
    the process's end even when a handler outlives the grace (:func:`end_handlers`)."""
    stop = stop_on_signals()
    start_metrics(settings)
    running = start_server(register, service_names, settings)
    while not stop.wait(SIGNAL_POLL_S):
        pass
    log.info("stopping", extra={"grace_s": settings.shutdown_grace_s})
    running.stop(settings.shutdown_grace_s)
    end_handlers(running.handlers, HANDLER_EXIT_S)


def end_handlers(handlers: futures.ThreadPoolExecutor, timeout_s: float) -> None:
    """Let the handler threads of a stopped server end for ``timeout_s``, then end the
    process if any is still running.

    After the grace the server has cancelled every call, but a handler computing
    (a numba kernel, a model run) only notices at its next check, and the
    interpreter's exit waits for every handler thread: a process told to stop
    could run on for a whole computation, or forever for a handler that waits on
    something that will not come. Calls past their grace have no client left to
    answer, and jobs are the queue's to retry, so the process ends (status 0)
    after logging the threads it left.
    """
    handlers.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + timeout_s
    for thread in _handler_threads():
        thread.join(max(0.0, deadline - time.monotonic()))
    left = [thread.name for thread in _handler_threads()]
    if left:
        log.warning("handlers still running after the grace; ending the process without them",
                    extra={"threads": left})
        logging.shutdown()
        os._exit(0)


def _handler_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate()
            if thread.name.startswith(HANDLER_THREAD_PREFIX) and thread.is_alive()]
