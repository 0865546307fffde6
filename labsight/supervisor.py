"""Keeps child processes running: restarts with exponential backoff, gives up on a crash loop.

Every child is a long-running server, so any exit is a failure: it is restarted
like systemd's ``Restart=always`` with ``RestartSec`` doubling up to a cap
(Kubernetes' CrashLoopBackOff); a child that ran stably for a while starts its
backoff from the beginning again, and a child that exits too often in a short
window is given up on so that the rest keeps serving.

The supervisor never sleeps or runs threads of its own: the owner calls
:meth:`Supervisor.tick` from its loop and logs or counts the returned events.
Children get a parent-death signal (``labsight.orphan_guard``), which Linux
sends when the *thread* that started them exits, so spawn and tick from the
main thread, which lives as long as the process.
"""

from __future__ import annotations

import enum
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class RestartPolicy:
    """When a child that exited is restarted, and when it is given up on."""

    initial_delay_s: float = 0.5
    """Delay before the first restart after a stable run."""
    max_delay_s: float = 16.0
    """The delay doubles on each restart in a row up to this cap."""
    stable_after_s: float = 30.0
    """A child that ran this long before exiting starts from ``initial_delay_s`` again."""
    crash_loop_exits: int = 5
    """This many exits within ``crash_loop_window_s`` and the child is given up on."""
    crash_loop_window_s: float = 60.0

    def delay(self, restart: int) -> float:
        """Seconds to wait before the ``restart``-th restart in a row (1 for the first)."""
        return min(self.max_delay_s, self.initial_delay_s * 2 ** (restart - 1))


def describe_exit(returncode: int) -> str:
    """``exited with code 3`` or ``was killed by SIGKILL`` for a Popen return code."""
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        return f"was killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"was killed by signal {-returncode}"


@dataclass(frozen=True)
class ChildSpec:
    """How to start one supervised child."""

    name: str
    argv: Sequence[str]
    env: dict[str, str] | None = None
    log_path: Path | None = None
    """stdout and stderr are appended here (mode 0600); None discards them."""


class ChildState(enum.Enum):
    """Where a supervised child stands."""

    RUNNING = "running"
    BACKOFF = "backoff"
    """Exited; restarts at ``Child.restart_at``."""
    GAVE_UP = "gave up"
    STOPPED = "stopped"


@dataclass
class Child:
    """One supervised child and its restart history."""

    spec: ChildSpec
    process: subprocess.Popen[bytes]
    started_at: float
    state: ChildState = ChildState.RUNNING
    restarts: int = 0
    """Restarts so far (for the metrics)."""
    streak: int = 0
    """Restarts since the child last ran stably (drives the backoff)."""
    exits: deque[float] = field(default_factory=deque)
    """When it exited within the crash-loop window."""
    restart_at: float = 0.0


class EventKind(enum.Enum):
    """What happened to a child."""

    EXITED = "exited"
    RESTARTED = "restarted"
    GAVE_UP = "gave up"


@dataclass(frozen=True)
class Event:
    """One thing the owner should log (and count)."""

    child: str
    kind: EventKind
    message: str
    delay_s: float = 0.0
    """For EXITED: seconds until the restart."""


class Supervisor:
    """Starts children, restarts those that exit on their own, stops them all in order."""

    def __init__(
        self,
        policy: RestartPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        umask: int = 0o077,
    ) -> None:
        self.policy = policy or RestartPolicy()
        self.clock = clock
        self.umask = umask
        self.children: dict[str, Child] = {}

    def spawn(self, spec: ChildSpec) -> Child:
        """Start ``spec`` now (from the main thread) and supervise it."""
        process = self._popen(spec)
        child = Child(spec, process, self.clock())
        self.children[spec.name] = child
        return child

    def _popen(self, spec: ChildSpec) -> subprocess.Popen[bytes]:
        output: int = subprocess.DEVNULL
        if spec.log_path is not None:
            output = os.open(spec.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            return subprocess.Popen(
                [sys.executable, "-m", "labsight.orphan_guard", str(os.getpid()), *spec.argv],
                env=spec.env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C reaches `up`, which stops the children in order
                umask=self.umask,
            )
        finally:
            if spec.log_path is not None:
                os.close(output)

    def tick(self) -> list[Event]:
        """Notice children that exited, schedule their restart or give up, restart those due."""
        now = self.clock()
        events: list[Event] = []
        for name, child in self.children.items():
            if child.state is ChildState.RUNNING and child.process.poll() is not None:
                events.append(self._exited(name, child, now))
            if child.state is ChildState.BACKOFF and now >= child.restart_at:
                child.process = self._popen(child.spec)
                child.started_at = now
                child.state = ChildState.RUNNING
                child.restarts += 1
                events.append(Event(name, EventKind.RESTARTED,
                                    f"{name} restarted (pid {child.process.pid})"))
        return events

    def _exited(self, name: str, child: Child, now: float) -> Event:
        policy = self.policy
        how = describe_exit(child.process.returncode)
        if now - child.started_at >= policy.stable_after_s:
            child.streak = 0
        child.exits.append(now)
        while child.exits and now - child.exits[0] > policy.crash_loop_window_s:
            child.exits.popleft()
        if len(child.exits) >= policy.crash_loop_exits:
            child.state = ChildState.GAVE_UP
            log_hint = f"; see {child.spec.log_path}" if child.spec.log_path else ""
            return Event(name, EventKind.GAVE_UP,
                         f"{name} {how}: {len(child.exits)} exits within "
                         f"{policy.crash_loop_window_s:g} s, giving up on it; the rest keeps "
                         f"serving{log_hint}")
        child.streak += 1
        delay = policy.delay(child.streak)
        child.state = ChildState.BACKOFF
        child.restart_at = now + delay
        return Event(name, EventKind.EXITED,
                     f"{name} {how}; restart {child.restarts + 1} in {delay:g} s", delay)

    def is_running(self, name: str) -> bool:
        """True while ``name``'s process is started and was not seen to exit."""
        child = self.children.get(name)
        return child is not None and child.state is ChildState.RUNNING

    def exited(self) -> list[str]:
        """Running children whose process has exited (not yet seen by :meth:`tick`)."""
        return [name for name, child in self.children.items()
                if child.state is ChildState.RUNNING and child.process.poll() is not None]

    def pids(self) -> dict[str, int]:
        """Process ids of the children that are running now."""
        return {name: child.process.pid for name, child in self.children.items()
                if child.state is ChildState.RUNNING}

    def stop(self, groups: Sequence[Sequence[str]], grace_s: float = 15.0) -> None:
        """Stop the children group by group: SIGTERM, then SIGKILL after ``grace_s``.

        No child is restarted afterwards; children not named in ``groups`` are
        stopped last.
        """
        named = {name for group in groups for name in group}
        rest = [name for name in self.children if name not in named]
        for group in [*groups, rest]:
            members = [self.children[name] for name in group if name in self.children]
            for child in members:
                child.state = ChildState.STOPPED
                if child.process.poll() is None:
                    child.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            for child in members:
                try:
                    child.process.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.process.kill()
                    child.process.wait()
