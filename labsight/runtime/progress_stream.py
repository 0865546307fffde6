"""Streams the progress of a long core function to a gRPC caller, and stops it once the caller
is gone (cancelled, or past its deadline) instead of computing for nobody."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

import grpc
from prometheus_client import Counter

from labsight.errors import Cancelled

Result = TypeVar("Result")

WORK_STOPPED = Counter(
    "labsight_work_stopped_total",
    "Long computations stopped between steps because their caller had gone",
    ["work"],
)


@dataclass(frozen=True)
class Progress:
    """``done`` of ``total`` ``unit`` of the step ``step``."""

    step: str
    done: int
    total: int
    unit: str


Report = Callable[[Progress], None]
"""What a core's progress callback calls; raises Cancelled once the caller is gone."""


@dataclass(frozen=True)
class _Finished(Generic[Result]):
    value: Result


@dataclass(frozen=True)
class _Failed:
    error: BaseException


def raise_if_gone(context: grpc.ServicerContext, name: str) -> None:
    """Raise Cancelled, counting ``name`` in labsight_work_stopped_total, once the call is no
    longer active (cancelled, or past its deadline): long work calls this between its steps."""
    if not context.is_active():
        WORK_STOPPED.labels(name).inc()
        raise Cancelled(f"{name}: the caller cancelled the call")


def stream_progress(
    work: Callable[[Report], Result], context: grpc.ServicerContext, name: str
) -> Iterator[Progress | Result]:
    """Yield every Progress that ``work`` reports, then what it returns.

    ``work`` runs in a thread of its own so that its progress can be sent while
    it computes; the report function it is given raises Cancelled (and counts
    ``name`` in labsight_work_stopped_total) once the call is no longer active,
    so the work stops at its next report. What ``work`` raises is raised here,
    for the servicer's interceptor to answer with its status.
    """
    events: queue.Queue[Progress | _Finished[Result] | _Failed] = queue.Queue()

    def report(progress: Progress) -> None:
        raise_if_gone(context, name)
        events.put(progress)

    def run() -> None:
        try:
            events.put(_Finished(work(report)))
        except BaseException as error:  # noqa: BLE001 - handed to the streaming thread
            events.put(_Failed(error))

    threading.Thread(target=run, name=f"{name}-work", daemon=True).start()
    while True:
        event = events.get()
        if isinstance(event, _Failed):
            raise event.error
        if isinstance(event, _Finished):
            yield event.value
            return
        yield event
