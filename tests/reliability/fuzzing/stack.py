"""The processes under fuzz: gateway, model services and a worker as real children on free
loopback ports, with their health, liveness and resident memory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from labsight.catalog import ALL_PROCESSES, MODEL_SERVICES
from labsight.config import address_env_var
from labsight.redis_server import free_port
from labsight.runtime.cpus import PROCESS_MALLOC
from labsight.runtime.idle_trim import IDLE_TRIM_ENV
from services.segmentation.models.flow_models import builtin_flow_manifests

IDLE_TRIM_S = 1.0
"""Quiet seconds after which the fuzzed stack's processes give their freed heap back."""

ENGINE_CACHE_BYTES = 256 * 1024 * 1024


@dataclass
class Child:
    """One child process and how to start it again."""

    name: str
    env: dict[str, str]
    log: Path
    address: str | None
    process: subprocess.Popen[bytes] | None = None
    exits: list[int] = field(default_factory=list)
    """Exit codes (negative: signal) of earlier incarnations that died."""

    def start(self) -> None:
        """Spawn the process, appending its output to its log; it dies with this one, even
        when a run is killed (labsight.orphan_guard arms the parent-death signal)."""
        command = [sys.executable, "-m", ALL_PROCESSES[self.name].module]
        guarded = [sys.executable, "-m", "labsight.orphan_guard", str(os.getpid()), *command]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(guarded, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        """The running incarnation's pid."""
        assert self.process is not None
        return self.process.pid


def _memory_field(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) * 1024
    return 0


class Stack:
    """Gateway, features, segmentation, classifier and one worker on the given Redis, with
    two tenants' tokens and a shared service token, so the model services require one too."""

    def __init__(self, redis_url: str, key_prefix: str, workdir: Path,
                 tokens: dict[str, str], service_token: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        ports = {name: free_port() for name, spec in ALL_PROCESSES.items() if spec.grpc_port}
        base = {
            **os.environ,
            "REDIS_URL": redis_url,
            "LABSIGHT_KEY_PREFIX": key_prefix,
            "LABSIGHT_HOST": "127.0.0.1",
            "LABSIGHT_METRICS_PORT": "0",
            "LABSIGHT_LOG_LEVEL": "WARNING",
            "LABSIGHT_TOKENS": ",".join(f"{tenant}={token}" for tenant, token in tokens.items()),
            "LABSIGHT_SERVICE_TOKEN": service_token,
            # the features service's engine cache gets a budget below the RSS bound, so a cache
            # that keeps every layer it ever loaded shows as growth
            "LABSIGHT_ENGINE_CACHE_BYTES": str(ENGINE_CACHE_BYTES),
            # ONNX Runtime's arena hands back what a batch took, so growth is what stays: a
            # leak, not the peak of the batches the worker's jobs and the fuzz calls ran at once
            "LABSIGHT_ORT_ARENA_SHRINK": "1",
            # as `labsight up` and the images run services: 2 glibc arenas, so memory freed by
            # one thread is reused by the next instead of counting as growth (+339 MiB with 8
            # per core, +23 with 2, in one run of these calls)
            "MALLOC_ARENA_MAX": "2",
            # an idle process gives its freed heap back after this long (labsight.runtime.
            # idle_trim; 30 s by default): growth is measured on an idle stack at both ends
            IDLE_TRIM_ENV: str(IDLE_TRIM_S),
            # the segmentation service's default method loads its flow networks before it
            # serves, so their weights count in the starting size, not as growth
            "LABSIGHT_SEGMENTATION_PRELOAD": ",".join(m.name for m in builtin_flow_manifests()),
            # a home of its own: nothing read from or written to a real `labsight up`'s home
            "LABSIGHT_HOME": str(workdir / "home"),
            "LABSIGHT_BLOB_URL": (workdir.resolve() / "blobs").as_uri(),
            "LABSIGHT_MODEL_CACHE": os.environ.get("LABSIGHT_MODEL_CACHE",
                                                   str(workdir / "models")),
            **{address_env_var(spec.name): f"127.0.0.1:{ports[spec.name]}"
               for spec in MODEL_SERVICES},
        }
        # every process with the allocator settings `labsight up` gives it
        self.children = {
            name: Child(name, {**base, **PROCESS_MALLOC.get(name, {}),
                               "LABSIGHT_PORT": str(ports.get(name, 0))},
                        workdir / f"{name}.log",
                        f"127.0.0.1:{ports[name]}" if name in ports else None)
            for name in ALL_PROCESSES
        }

    def address(self, name: str) -> str:
        """The gRPC address of a served process."""
        address = self.children[name].address
        assert address is not None, f"{name} serves no gRPC"
        return address

    def start(self, timeout_s: float = 300.0) -> None:
        """Start every process at once and wait until each server reports SERVING."""
        for child in self.children.values():
            child.start()
        deadline = time.monotonic() + timeout_s
        for name, child in self.children.items():
            while child.address and not self.serving(name):
                assert child.process is not None and child.process.poll() is None, (
                    f"{name} exited with {child.process.returncode} while starting:\n"
                    + self.log_tail(name))
                assert time.monotonic() < deadline, f"{name} not SERVING:\n{self.log_tail(name)}"
                time.sleep(0.3)

    def serving(self, name: str, timeout_s: float = 5.0) -> bool:
        """Whether the process answers the overall health check with SERVING."""
        with grpc.insecure_channel(self.address(name)) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=timeout_s)
            except grpc.RpcError:
                return False
            return reply.status == health_pb2.HealthCheckResponse.SERVING

    def died(self) -> list[tuple[str, int]]:
        """Processes that exited since the last look, with their exit codes; each is restarted
        so the run goes on, and the death is remembered in ``Child.exits``."""
        dead = []
        for name, child in self.children.items():
            assert child.process is not None
            code = child.process.poll()
            if code is not None:
                child.exits.append(code)
                dead.append((name, code))
                child.start()
        for name, _ in dead:
            deadline = time.monotonic() + 120
            while self.children[name].address and not self.serving(name):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.3)
        return dead

    def resident(self) -> dict[str, tuple[int, int]]:
        """(VmRSS, VmHWM) bytes of each process: resident now and the peak since the last
        ``reset_peaks``."""
        return {name: (_memory_field(child.pid, "VmRSS"), _memory_field(child.pid, "VmHWM"))
                for name, child in self.children.items()}

    def resident_now(self) -> dict[str, int]:
        """VmRSS bytes of each process (0 for one that is gone)."""
        now = {}
        for name, child in self.children.items():
            try:
                now[name] = _memory_field(child.pid, "VmRSS")
            except OSError:
                now[name] = 0
        return now

    def reset_peaks(self) -> None:
        """Restart each process's peak-RSS counter (Linux clear_refs 5), so VmHWM measures
        the fuzz run and not the start-up."""
        for child in self.children.values():
            try:
                Path(f"/proc/{child.pid}/clear_refs").write_text("5")
            except OSError:
                pass  # an older kernel: VmHWM then includes the start-up

    def log_tail(self, name: str, lines: int = 30) -> str:
        """The last lines a process wrote."""
        log = self.children[name].log
        text = log.read_text(errors="replace") if log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM every process (worker first), SIGKILL what is left after ``grace_s``."""
        order = ["worker", *(name for name in self.children if name != "worker")]
        for name in order:
            process = self.children[name].process
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for name in order:
            process = self.children[name].process
            if process is None:
                continue
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
