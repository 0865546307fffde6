"""A baseline on one process per share of its inputs: spawned and warmed before the rounds, then
run at once and timed from here until the last share is done.

What a good engineer does with Python work on several CPUs (a multiprocessing pool): unlike
threads of one process, the shares hold no GIL in common. Each process builds its work with a
loader (a picklable call, e.g. a ``functools.partial`` of a module-level function, which loads
and warms what the work needs) and then runs it on every request, answering the CPU seconds it
took and what it returned.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

Work = Callable[..., Any]
"""A share's work: called with a request's arguments, returns what goes back to the caller."""

Loader = Callable[[], Work]
"""Builds (and warms) a share's work in its process."""


@contextmanager
def environment(variables: Mapping[str, str | None]) -> Iterator[None]:
    """This process's environment with ``variables`` set (None: unset) until the block ends, so
    that processes started meanwhile inherit them; as it was after."""
    saved = {name: os.environ.get(name) for name in variables}
    try:
        _set_environment(variables)
        yield
    finally:
        _set_environment(saved)


def _set_environment(variables: Mapping[str, str | None]) -> None:
    """Set each variable of this process's environment (None: unset it)."""
    for name, value in variables.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def share_process(conn: Connection, load: Loader, own_session: bool) -> None:
    """One process of :class:`ProcessShares`: builds its work with ``load``, answers "ready",
    then for each request (a tuple of arguments; None ends it) runs the work and answers the
    CPU seconds it took, then what it returned."""
    if own_session:
        os.setsid()
    work = load()
    conn.send("ready")
    while (arguments := conn.recv()) is not None:
        cpu = time.process_time()
        result = work(*arguments)
        conn.send(time.process_time() - cpu)
        conn.send(result)


class ProcessShares:
    """One spawned process per loader, each with the work its loader built.

    Parameters
    ----------
    loaders : sequence of callables
        One per process; picklable.
    variables : mapping, optional
        Environment variables the processes start with (None: unset), e.g. glibc malloc
        settings, which a process reads when it starts.
    own_session : bool
        Each process in a session of its own (as `labsight up`'s children are).
    """

    def __init__(self, loaders: Sequence[Loader], variables: Mapping[str, str | None] | None = None,
                 own_session: bool = False) -> None:
        context = multiprocessing.get_context("spawn")
        self.workers: list[tuple[Connection, BaseProcess]] = []
        try:
            with environment(variables or {}):
                for load in loaders:
                    parent, child = context.Pipe()
                    process = context.Process(target=share_process, args=(child, load, own_session))
                    process.start()
                    self.workers.append((parent, process))
            for conn, _ in self.workers:
                conn.recv()
        except BaseException:
            self.close()
            raise

    @property
    def processes(self) -> list[BaseProcess]:
        """The processes, in the loaders' order."""
        return [process for _, process in self.workers]

    def run(self, *arguments: object) -> tuple[float, float, list[Any]]:
        """Every share's work on ``arguments`` at once: (seconds from here until the last share
        finished, their CPU seconds summed, what each returned, in the loaders' order)."""
        start = time.perf_counter()
        for conn, _ in self.workers:
            conn.send(arguments)
        cpu = sum(conn.recv() for conn, _ in self.workers)
        seconds = time.perf_counter() - start
        return seconds, cpu, [conn.recv() for conn, _ in self.workers]

    def close(self) -> None:
        """End the processes (killed if one does not end within 30 s)."""
        for conn, process in self.workers:
            try:
                conn.send(None)
            except OSError:
                pass
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
                process.join()


@contextmanager
def process_shares(loaders: Sequence[Loader], variables: Mapping[str, str | None] | None = None,
                   own_session: bool = False) -> Iterator[ProcessShares]:
    """:class:`ProcessShares`, started and warm before the block, ended after."""
    shares = ProcessShares(loaders, variables, own_session)
    try:
        yield shares
    finally:
        shares.close()


def interleaved(parts: Sequence[Sequence[Any]]) -> list[Any]:
    """Results of inputs ``share::len(parts)`` back in input order."""
    merged: list[Any] = [None] * sum(len(part) for part in parts)
    for share, part in enumerate(parts):
        merged[share::len(parts)] = part
    return merged
