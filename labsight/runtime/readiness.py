"""Health that follows a dependency: NOT_SERVING while the dependency does not answer."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from grpc_health.v1 import health, health_pb2

log = logging.getLogger(__name__)

ReadinessProbe = Callable[[], bool]
"""True while everything a server needs to answer calls (e.g. its Redis) answers."""

PROBE_INTERVAL_S = 1.0
"""How often a server asks its readiness probe."""


def follow_readiness(
    health_servicer: health.HealthServicer,
    names: Sequence[str],
    probe: ReadinessProbe,
    stop: threading.Event,
    interval_s: float = PROBE_INTERVAL_S,
) -> threading.Thread:
    """Set ``names`` NOT_SERVING while ``probe`` fails and SERVING again once it passes.

    Runs in a daemon thread until ``stop`` is set; a server in graceful
    shutdown stays NOT_SERVING (the health servicer ignores later changes).
    """

    def follow() -> None:
        serving = True
        while not stop.wait(interval_s):
            ready = probe()
            if ready == serving:
                continue
            serving = ready
            status = health_pb2.HealthCheckResponse.SERVING if ready else (
                health_pb2.HealthCheckResponse.NOT_SERVING
            )
            for name in names:
                health_servicer.set(name, status)
            if ready:
                log.info("dependencies answer again: SERVING", extra={"services": list(names)})
            else:
                log.warning("a dependency does not answer: NOT_SERVING",
                            extra={"services": list(names)})

    thread = threading.Thread(target=follow, name="readiness", daemon=True)
    thread.start()
    return thread
