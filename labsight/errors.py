"""Exceptions that carry their gRPC status code, raised by cores and servicers alike."""

from __future__ import annotations

import grpc
import redis

ECHO_CHARS = 100
"""Most characters of a client's value an error message quotes (see ``echo``)."""


class LabSightError(Exception):
    """Base of errors that map to a specific gRPC status code."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidArgument(LabSightError, ValueError):
    """A request field is malformed; the message names the field."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(LabSightError, LookupError):
    """An unknown (or foreign, or expired) job, batch, model or layer."""

    code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(LabSightError):
    """The request is valid but the system is not in a state to serve it."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(LabSightError):
    """Backpressure: a queue or size limit is reached."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(LabSightError):
    """A dependency (Redis, a model service) cannot be reached."""

    code = grpc.StatusCode.UNAVAILABLE


class Unauthenticated(LabSightError):
    """No or an unknown bearer token."""

    code = grpc.StatusCode.UNAUTHENTICATED


class Cancelled(LabSightError):
    """The client cancelled the call (or its deadline passed) before it was done."""

    code = grpc.StatusCode.CANCELLED


class Unimplemented(LabSightError):
    """The RPC is part of the contract but its algorithm is not served yet."""

    code = grpc.StatusCode.UNIMPLEMENTED


def status_code_for(error: BaseException) -> grpc.StatusCode:
    """The gRPC status a handler should answer with for ``error``.

    LabSight errors carry their own code; a plain ``ValueError`` raised by an
    algorithm core at its input check is the caller's fault
    (INVALID_ARGUMENT); Redis being unreachable is UNAVAILABLE; everything
    else is INTERNAL.
    """
    if isinstance(error, LabSightError):
        return error.code
    if isinstance(error, redis.ConnectionError | redis.TimeoutError):
        return grpc.StatusCode.UNAVAILABLE
    if isinstance(error, ValueError):
        return grpc.StatusCode.INVALID_ARGUMENT
    return grpc.StatusCode.INTERNAL


def echo(value: str | bytes) -> str:
    """``value`` quoted for an error message, cut to ``ECHO_CHARS`` characters.

    Messages name the value a client sent, but a status message has to fit in
    the response headers (16 KiB by default), so a 20 KB id would turn the
    answer into RESOURCE_EXHAUSTED: a long value is cut and its length said.

    Examples
    --------
    >>> echo("plate-1")
    "'plate-1'"
    >>> echo("x" * 1000)[-20:]
    "'… (1000 characters)"
    """
    if len(value) <= ECHO_CHARS:
        return repr(value)
    unit = "characters" if isinstance(value, str) else "bytes"
    return f"{value[:ECHO_CHARS]!r}… ({len(value)} {unit})"
