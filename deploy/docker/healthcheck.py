#!/opt/venv/bin/python
"""Container health check of a LabSight process: gRPC health for servers, /metrics for workers.

Usage: ``labsight-healthcheck [PROCESS]`` (exit 0 healthy, 1 not). Without PROCESS it
finds the ``python -m <module>`` running in the container and looks it up in
``labsight.catalog``, so one image's HEALTHCHECK fits every process. Ports come
from LABSIGHT_PORT / LABSIGHT_METRICS_PORT, else the catalog's defaults, exactly
as the process itself chooses them.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path

from labsight.catalog import ALL_PROCESSES, ProcessSpec

TIMEOUT_S = 3.0


def process_from_cmdlines(cmdlines: list[list[str]]) -> ProcessSpec | None:
    """The catalog entry whose module one of ``cmdlines`` runs with ``python -m``."""
    by_module = {spec.module: spec for spec in ALL_PROCESSES.values()}
    for argv in cmdlines:
        for flag, module in zip(argv, argv[1:], strict=False):
            if flag == "-m" and module in by_module:
                return by_module[module]
    return None


def running_cmdlines(proc: Path = Path("/proc")) -> list[list[str]]:
    """Argument vectors of the processes visible in this container, PID 1 first."""
    pids = sorted((entry for entry in proc.iterdir() if entry.name.isdigit()), key=lambda p: int(p.name))
    cmdlines = []
    for pid in pids:
        try:
            raw = (pid / "cmdline").read_bytes()
        except OSError:
            continue
        cmdlines.append([part.decode(errors="replace") for part in raw.split(b"\0") if part])
    return cmdlines


def grpc_serving(address: str, service: str = "") -> bool:
    """True if ``grpc.health.v1.Health/Check`` at ``address`` answers SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT_S
            )
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def metrics_answer(port: int) -> bool:
    """True if the Prometheus endpoint on ``port`` answers 200."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=TIMEOUT_S) as reply:
            return reply.status == 200
    except OSError:
        return False


def healthy(spec: ProcessSpec, environ: dict[str, str]) -> bool:
    """Probe ``spec`` the way its Kubernetes probes do: gRPC health, or /metrics for workers."""
    if spec.grpc_port is not None:
        port = environ.get("LABSIGHT_PORT") or spec.grpc_port
        return grpc_serving(f"127.0.0.1:{port}")
    return metrics_answer(int(environ.get("LABSIGHT_METRICS_PORT") or spec.metrics_port))


def main(argv: list[str]) -> int:
    if argv:
        spec = ALL_PROCESSES.get(argv[0])
        if spec is None:
            print(f"unknown process {argv[0]!r}; expected one of {sorted(ALL_PROCESSES)}", file=sys.stderr)
            return 1
    else:
        spec = process_from_cmdlines(running_cmdlines())
        if spec is None:
            print("no LabSight process (python -m <module>) found in this container", file=sys.stderr)
            return 1
    return 0 if healthy(spec, dict(os.environ)) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
