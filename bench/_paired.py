"""Paired benchmark rounds in rotating order, and their min/median/max with the machine's load.

Every side of a comparison runs once per round; the order rotates from round to
round (baseline first, then LabSight first, ...), so drift in a shared
machine's speed falls on both sides alike. Ratios are taken round by round.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence

import psutil


def paired_rounds(sides: Mapping[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Each side's figures over ``rounds`` rounds, every side once per round in rotating order.

    Parameters
    ----------
    sides : mapping of str to callable
        Name of a side -> a call that runs it once and returns its figure (seconds, a rate...).
        Round i starts with the side at position i modulo the number of sides.
    rounds : int
        Rounds to run (at least 1).

    Returns
    -------
    dict of str to list of float
        The figures of each side, round by round, in the order of ``sides``.
    """
    names = list(sides)
    figures: dict[str, list[float]] = {name: [] for name in names}
    for index in range(max(1, rounds)):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            figures[name].append(sides[name]())
    return figures


def timed(run: Callable[[], object]) -> Callable[[], float]:
    """A call that runs ``run`` once and returns its wall time in seconds."""

    def seconds() -> float:
        start = time.perf_counter()
        run()
        return time.perf_counter() - start

    return seconds


def timed_twice(run: Callable[[], object], firsts: list[float]) -> Callable[[], float]:
    """A call that runs ``run`` twice in a row and returns the second run's wall time in seconds,
    appending the first's to ``firsts``.

    On the sandboxed VMs these benches run on, the first touch of a page after a few tens of
    milliseconds without it costs far more than a cache miss (a 64-byte read: 4 µs after 20 ms,
    136 µs after 150 ms, 339 µs after 0.5 s; the next line of the same page 1-2 µs), so a call
    of a few milliseconds right after another side ran pays up to twice its own time. The second
    run is what a side costs when it is called again and again; the first is kept for the record.
    """

    def seconds() -> float:
        start = time.perf_counter()
        run()
        firsts.append(time.perf_counter() - start)
        start = time.perf_counter()
        run()
        return time.perf_counter() - start

    return seconds


def round_ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Ratios of two sides' figures round by round."""
    return [top / bottom for top, bottom in zip(numerators, denominators, strict=True)]


def spread(values: Sequence[float], fmt: str = ".3f", unit: str = "") -> str:
    """``min / median / max`` of the values, each formatted by ``fmt``, then the unit."""
    low, middle, high = min(values), statistics.median(values), max(values)
    text = f"{low:{fmt}} / {middle:{fmt}} / {high:{fmt}}"
    return f"{text} {unit}" if unit else text


def load_text() -> str:
    """The load average over 1, 5 and 15 minutes and the CPUs this process may use."""
    one, five, fifteen = os.getloadavg()
    cpus = len(os.sched_getaffinity(0))
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min) on {cpus} CPUs"


def process_cpu_s(process: psutil.Process) -> float:
    """CPU seconds ``process`` has used (user + system, all its threads)."""
    times = process.cpu_times()
    return times.user + times.system
