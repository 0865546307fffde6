"""The supervisor of `labsight up` and its home lock, on real child processes.

The supervisor's clock is a stand-in that the tests move by hand, so backoff and
crash-loop decisions are checked exactly without depending on the machine's speed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from labsight.supervisor import (
    ChildSpec,
    ChildState,
    EventKind,
    RestartPolicy,
    Supervisor,
    describe_exit,
)
from labsight.up_lock import AlreadyRunning, RecordedProcess, UpLock, process_start_ticks

EXIT_3 = [sys.executable, "-c", "import sys; sys.exit(3)"]
SLEEP = [sys.executable, "-c", "import time; time.sleep(600)"]


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def supervisor(clock: Clock) -> Iterator[Supervisor]:
    supervisor = Supervisor(RestartPolicy(), clock=clock)
    yield supervisor
    supervisor.stop([], grace_s=5)


def _gone(pid: int, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while process_start_ticks(pid) is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_exits_are_described_by_code_or_signal_name() -> None:
    assert describe_exit(3) == "exited with code 3"
    assert describe_exit(-signal.SIGKILL) == "was killed by SIGKILL"
    assert describe_exit(-signal.SIGSEGV) == "was killed by SIGSEGV"


def test_backoff_doubles_from_half_a_second_up_to_its_cap() -> None:
    policy = RestartPolicy()
    assert [policy.delay(n) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 16, 16]


def test_a_child_that_exits_is_restarted_after_its_backoff(
    supervisor: Supervisor, clock: Clock
) -> None:
    child = supervisor.spawn(ChildSpec("crashy", EXIT_3))
    first_pid = child.process.pid
    child.process.wait()
    [event] = supervisor.tick()
    assert event.kind is EventKind.EXITED
    assert event.message == "crashy exited with code 3; restart 1 in 0.5 s"
    assert not supervisor.is_running("crashy")

    clock.now += 0.4
    assert supervisor.tick() == []  # not yet due
    clock.now += 0.1
    [event] = supervisor.tick()
    assert event.kind is EventKind.RESTARTED
    assert child.process.pid != first_pid and child.restarts == 1
    assert supervisor.is_running("crashy")

    child.process.wait()
    clock.now += 0.1
    [event] = supervisor.tick()
    assert event.message == "crashy exited with code 3; restart 2 in 1 s"  # doubled


def test_a_killed_child_is_named_with_its_signal(supervisor: Supervisor) -> None:
    child = supervisor.spawn(ChildSpec("sleeper", SLEEP))
    child.process.kill()
    child.process.wait()
    [event] = supervisor.tick()
    assert event.message == "sleeper was killed by SIGKILL; restart 1 in 0.5 s"


def test_exits_spread_wider_than_the_window_are_no_crash_loop(
    supervisor: Supervisor, clock: Clock
) -> None:
    child = supervisor.spawn(ChildSpec("crashy", EXIT_3))
    for _ in range(8):  # one exit every 20 s: at most 4 within any 60 s
        child.process.wait()
        [exited] = supervisor.tick()
        assert exited.kind is EventKind.EXITED
        clock.now += 20
        [restarted] = supervisor.tick()
        assert restarted.kind is EventKind.RESTARTED
    assert child.restarts == 8


def test_a_crash_loop_is_given_up_while_the_others_keep_running(
    supervisor: Supervisor, clock: Clock
) -> None:
    supervisor.spawn(ChildSpec("steady", SLEEP))
    child = supervisor.spawn(ChildSpec("crashy", EXIT_3))
    delays = []
    while child.state is not ChildState.GAVE_UP:
        child.process.wait()
        [event] = supervisor.tick()
        if event.kind is EventKind.EXITED:
            delays.append(event.delay_s)
            clock.now += event.delay_s
            assert supervisor.tick()[0].kind is EventKind.RESTARTED
    assert delays == [0.5, 1, 2, 4] and child.restarts == 4
    assert event.message == (
        "crashy exited with code 3: 5 exits within 60 s, giving up on it; "
        "the rest keeps serving"
    )
    clock.now += 3600
    assert supervisor.tick() == []  # never restarted again
    assert supervisor.is_running("steady") and not supervisor.is_running("crashy")


def test_a_stable_run_starts_the_backoff_over(supervisor: Supervisor, clock: Clock) -> None:
    child = supervisor.spawn(ChildSpec("crashy", EXIT_3))
    for expected in (0.5, 1, 2):
        child.process.wait()
        [event] = supervisor.tick()
        assert event.delay_s == expected
        clock.now += event.delay_s
        supervisor.tick()
    clock.now += 31  # the restarted child "ran" longer than stable_after_s
    child.process.wait()
    [event] = supervisor.tick()
    assert event.delay_s == 0.5


def test_stop_terminates_every_child_and_restarts_none(
    supervisor: Supervisor, clock: Clock
) -> None:
    first = supervisor.spawn(ChildSpec("a", SLEEP))
    second = supervisor.spawn(ChildSpec("b", SLEEP))
    supervisor.stop([["a"], ["b"]], grace_s=10)
    assert first.process.returncode == -signal.SIGTERM
    assert second.process.returncode == -signal.SIGTERM
    clock.now += 100
    assert supervisor.tick() == []


def test_child_output_goes_to_a_private_log(supervisor: Supervisor, tmp_path: Path) -> None:
    log, made = tmp_path / "talker.log", tmp_path / "made"
    code = "import sys; print('hello'); open(sys.argv[1], 'w')"
    child = supervisor.spawn(ChildSpec("talker", [sys.executable, "-c", code, str(made)],
                                       log_path=log))
    child.process.wait()
    assert log.read_text() == "hello\n"
    assert log.stat().st_mode & 0o777 == 0o600
    assert made.stat().st_mode & 0o777 == 0o600  # the children's umask is 0077


HOLDER = """
import sys, time
from labsight.supervisor import ChildSpec, Supervisor
supervisor = Supervisor()
child = supervisor.spawn(ChildSpec("sleeper", [sys.argv[1], "600"]))
print(child.process.pid, flush=True)
time.sleep(600)
"""


def test_no_child_outlives_a_supervisor_killed_by_sigkill() -> None:
    """Even a child that is not Python (here `sleep`, like redis-server) dies with its parent."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, "/bin/sleep"],
                              stdout=subprocess.PIPE, text=True)
    child_pid = int(holder.stdout.readline())
    assert process_start_ticks(child_pid) is not None
    holder.kill()
    holder.wait()
    assert _gone(child_pid), f"child {child_pid} outlived its supervisor"


def test_a_second_lock_on_a_home_is_refused_naming_the_holder(tmp_path: Path) -> None:
    first = UpLock(tmp_path)
    assert first.acquire() == []
    with pytest.raises(AlreadyRunning, match=rf"another `labsight up` \(pid {os.getpid()}\)"):
        UpLock(tmp_path).acquire()
    first.release()
    second = UpLock(tmp_path)
    assert second.acquire() == []
    second.release()


def test_leftovers_of_a_dead_up_are_stopped_but_not_a_reused_pid(tmp_path: Path) -> None:
    orphan = subprocess.Popen(SLEEP)
    bystander = subprocess.Popen(SLEEP)
    try:
        dead = UpLock(tmp_path)
        dead.acquire()
        dead.record({"redis": orphan.pid})
        os.close(dead._fd)  # noqa: SLF001 - what a SIGKILL does to the holder's lock
        # a record of the bystander with another start time: its pid was reused
        recorded = (tmp_path / "up.json").read_text()
        start = RecordedProcess.of(bystander.pid).start
        (tmp_path / "up.json").write_text(recorded.replace(
            '"children": {', f'"children": {{"old": [{bystander.pid}, {start - 1}], ', 1
        ))

        successor = UpLock(tmp_path)
        cleaned = successor.acquire()
        assert orphan.wait(timeout=15) == -signal.SIGTERM
        assert cleaned == [
            f"stopped redis (pid {orphan.pid}) left running by a `labsight up` "
            f"(pid {os.getpid()}) that is gone"
        ]
        assert bystander.poll() is None
        successor.release()
    finally:
        for process in (orphan, bystander):
            process.kill()
            process.wait()
