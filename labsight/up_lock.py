"""One ``labsight up`` per home: a lock, a record of its processes, and cleanup after a crash.

The lock is an ``flock`` on ``up.lock``, which the kernel releases when its
holder dies however it dies, so "is the recorded `up` alive?" has a race-free
answer. The record (``up.json``) lists the pids of `up` and its children with
their start times, so an `up` that finds a dead predecessor stops what the
predecessor left running (an orphaned redis-server on the same AOF directory,
a service still shutting down) and never a process that merely reuses a pid.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

LOCK_FILE = "up.lock"
RECORD_FILE = "up.json"


class AlreadyRunning(RuntimeError):
    """Another ``labsight up`` holds the home."""


def _stat_fields(path: Path) -> list[str] | None:
    try:
        stat = path.read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()  # the command name may hold spaces and parens


def process_start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot, from /proc), or None if it is gone.

    A zombie whose threads have all exited counts as gone: it holds no port and
    no file. While another thread still runs (a main thread that exited first
    shows as a zombie), its sockets may still be open, so it is not gone.
    """
    fields = _stat_fields(Path(f"/proc/{pid}/stat"))
    if fields is None:
        return None
    if fields[0] in ("Z", "X"):
        tasks = Path(f"/proc/{pid}/task")
        states = [_stat_fields(task / "stat") for task in tasks.glob("*")]
        if all(state is None or state[0] in ("Z", "X") for state in states):
            return None
    return int(fields[19])


@dataclass(frozen=True)
class RecordedProcess:
    """A process of an ``up``, identified by pid and start time."""

    pid: int
    start: int

    @classmethod
    def of(cls, pid: int) -> RecordedProcess | None:
        """The record of a running ``pid``; None if it is gone."""
        start = process_start_ticks(pid)
        return None if start is None else cls(pid, start)

    def alive(self) -> bool:
        """True if this very process (not a later one with the same pid) still runs."""
        return process_start_ticks(self.pid) == self.start


class UpLock:
    """The lock and process record of the ``up`` that owns ``home``."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self._fd: int | None = None

    @property
    def record_path(self) -> Path:
        """Where the pids of `up` and its children are recorded."""
        return self.home / RECORD_FILE

    def acquire(self) -> list[str]:
        """Take the home, or raise AlreadyRunning naming the pid of the `up` that has it.

        Processes left by a dead predecessor are stopped; returns what was
        cleaned up, one line each, for the log.
        """
        fd = os.open(self.home / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 32).decode().strip() or "unknown"
            os.close(fd)
            raise AlreadyRunning(
                f"another `labsight up` (pid {owner}) is running on {self.home}; "
                f"stop it first (kill {owner}) or use another LABSIGHT_HOME"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self._clean_leftovers()

    def _read(self) -> dict:
        try:
            return json.loads(self.record_path.read_text())
        except (OSError, ValueError):
            return {}

    def _clean_leftovers(self, grace_s: float = 10.0) -> list[str]:
        owner = self._read().get("pid", "unknown")
        alive = {
            name: proc for name, proc in recorded_processes(self.home).items() if proc.alive()
        }
        for proc in alive.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while any(proc.alive() for proc in alive.values()) and time.monotonic() < deadline:
            time.sleep(0.1)
        for proc in alive.values():
            if proc.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
        # SIGKILL is delivered, not awaited: the ports are free only once the process is gone
        deadline = time.monotonic() + grace_s
        while any(proc.alive() for proc in alive.values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.record_path.unlink(missing_ok=True)
        return [
            f"stopped {name} (pid {proc.pid}) left running by a `labsight up` "
            f"(pid {owner}) that is gone"
            for name, proc in alive.items()
        ]

    def record(self, children: dict[str, int]) -> None:
        """Record this process and its running ``children`` (name → pid)."""
        entries = {}
        for name, pid in children.items():
            proc = RecordedProcess.of(pid)
            if proc is not None:
                entries[name] = [proc.pid, proc.start]
        tmp = self.record_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "children": entries}, indent=2))
        tmp.replace(self.record_path)

    def release(self) -> None:
        """Forget the record and let the next `up` take the home (no-op unless acquired)."""
        if self._fd is not None:
            self.record_path.unlink(missing_ok=True)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def recorded_processes(home: Path) -> dict[str, RecordedProcess]:
    """The children recorded in ``home`` by its `up` (name → process), for tools and tests."""
    try:
        record = json.loads((home / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {name: RecordedProcess(*entry) for name, entry in record.get("children", {}).items()}
