"""Entry point shared by ``python -m services.<name>`` and ``labsight serve <name>``."""

from __future__ import annotations

import importlib

from labsight.catalog import SERVERS, ProcessSpec
from labsight.config import Settings
from labsight.runtime.cpus import limit_thread_pools
from labsight.runtime.logs import configure_logging
from labsight.runtime.server import run_forever


def run_service(spec: ProcessSpec) -> None:
    """Configure logging, then serve ``spec``'s servicers until SIGTERM/SIGINT.

    Each service package has a ``servicer`` module with ``register(server, settings)``.
    Thread pools loaded by it (numba, OpenMP) are sized by the CPUs the process may use.
    """
    limit_thread_pools()
    settings = Settings.from_env(spec)
    configure_logging(settings.log_level, spec.name)
    servicer_module = importlib.import_module(f"{spec.module}.servicer")
    run_forever(servicer_module.register, spec.grpc_services, settings)


def run_service_named(name: str) -> None:
    """``run_service`` for a name from the catalog; ValueError for an unknown one."""
    if name not in SERVERS:
        raise ValueError(f"unknown service {name!r}; expected one of {sorted(SERVERS)}")
    run_service(SERVERS[name])
