"""Exceptions that carry their gRPC status code.

Two families share the base ``LabSightError``: cores and servicers raise the
short names (``InvalidArgument``, ``NotFound``, ...), which handlers turn into
that status; the SDK raises the ``...Error`` names (``InvalidArgumentError``,
``NotFoundError``, ...), made from the status a service answered. Each SDK
error is also the server-side exception of its code (where there is one) and
a ``grpc.RpcError`` with ``code()`` and ``details()``, so ``except
ValueError``, ``except NotFound`` and code written against raw grpc errors all
keep working.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import grpc

if TYPE_CHECKING:
    from labsight.v1 import gateway_pb2 as pb

ECHO_CHARS = 100
"""Most characters of a client's value an error message quotes (see ``echo``)."""


class LabSightError(Exception):
    """Base of errors that map to a specific gRPC status code."""

    status_code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def code(self) -> grpc.StatusCode:
        """The gRPC status code this error stands for (as ``grpc.RpcError.code()``)."""
        return self.status_code

    def details(self) -> str:
        """The status message (as ``grpc.RpcError.details()``)."""
        return str(self)


class InvalidArgument(LabSightError, ValueError):
    """A request field is malformed; the message names the field."""

    status_code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(LabSightError, LookupError):
    """An unknown (or foreign, or expired) job, batch, model or layer."""

    status_code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(LabSightError):
    """The request is valid but the system is not in a state to serve it."""

    status_code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(LabSightError):
    """Backpressure: a queue or size limit is reached."""

    status_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(LabSightError):
    """A dependency (Redis, a model service) cannot be reached."""

    status_code = grpc.StatusCode.UNAVAILABLE


class Unauthenticated(LabSightError):
    """No or an unknown bearer token."""

    status_code = grpc.StatusCode.UNAUTHENTICATED


class Cancelled(LabSightError):
    """The client cancelled the call (or its deadline passed) before it was done."""

    status_code = grpc.StatusCode.CANCELLED


class Unimplemented(LabSightError):
    """The RPC is part of the contract but its algorithm is not served yet."""

    status_code = grpc.StatusCode.UNIMPLEMENTED


def status_code_for(error: BaseException) -> grpc.StatusCode:
    """The gRPC status a handler should answer with for ``error``.

    LabSight errors carry their own code; a plain ``ValueError`` raised by an
    algorithm core at its input check is the caller's fault
    (INVALID_ARGUMENT); Redis being unreachable is UNAVAILABLE; everything
    else is INTERNAL.
    """
    if isinstance(error, LabSightError):
        return error.code()
    # Looked up, not imported: the light client ships without redis, and a redis error
    # can only exist where redis was imported.
    redis = sys.modules.get("redis")
    if redis is not None and isinstance(error, redis.ConnectionError | redis.TimeoutError):
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


class ServiceError(LabSightError, grpc.RpcError):
    """A status other than OK that a LabSight service answered to an SDK call.

    Raised by every ``LabSightClient`` method instead of a raw ``grpc.RpcError``;
    the subclass says which status (a code without one of its own, such as
    INTERNAL, gives a plain ``ServiceError``). ``code()`` and ``details()``
    are those of the answer; ``rpc`` names the call and ``address`` the
    gateway it went to, which the message repeats so a notebook's traceback
    says where the call failed.
    """

    def __init__(
        self,
        details: str,
        *,
        code: grpc.StatusCode | None = None,
        rpc: str = "",
        address: str = "",
    ) -> None:
        if code is not None:
            self.status_code = code
        self.rpc = rpc
        self.address = address
        self._details = details
        super().__init__(self.status_code.name + (f" from {rpc}" if rpc else "")
                         + (f" at {address}" if address else "") + f": {details}")

    def details(self) -> str:
        """The status message the service answered, without the call and address."""
        return self._details

    def __reduce__(self) -> tuple[object, ...]:
        # Exceptions unpickle as cls(*args), which keyword-built errors (and JobFailedError's
        # job) do not survive; this rebuilds without __init__ so they cross processes intact.
        return _restore, (type(self), self.args), self.__dict__


def _restore(kind: type[ServiceError], args: tuple[object, ...]) -> ServiceError:
    error = kind.__new__(kind)
    error.args = args
    return error


class InvalidArgumentError(ServiceError, InvalidArgument):
    """The service refused a field of the request; ``details()`` names it and what was wrong."""


class NotFoundError(ServiceError, NotFound):
    """No such job, batch, model or layer for this tenant (or its result has expired)."""


class FailedPreconditionError(ServiceError, FailedPrecondition):
    """The request is valid but not now, e.g. the result of a job that has not finished."""


class ResourceExhaustedError(ServiceError, ResourceExhausted):
    """A limit was reached (queue depth, job cost, watch streams); the message says which."""


class UnavailableError(ServiceError, Unavailable):
    """The gateway (or a service behind it) does not answer; the message says which address."""


class GatewayNotFoundError(UnavailableError, ConnectionError):
    """No gateway address was given and no running ``labsight up`` was found; the message
    says how to start one (an UnavailableError that no call was made for)."""


class UnauthenticatedError(ServiceError, Unauthenticated):
    """No token, or a token the gateway does not know."""


class PermissionDeniedError(ServiceError):
    """The token is known but may not make this call."""

    status_code = grpc.StatusCode.PERMISSION_DENIED


class UnimplementedError(ServiceError, Unimplemented):
    """The call or pipeline is part of the contract but not served yet."""


class CancelledError(ServiceError, Cancelled):
    """The call was cancelled before it was answered."""


class DeadlineExceededError(ServiceError, TimeoutError):
    """The call did not finish within its timeout."""

    status_code = grpc.StatusCode.DEADLINE_EXCEEDED


class JobFailedError(FailedPreconditionError):
    """A job ended without a result (failed, dead or cancelled); ``job.error`` says why.

    Raised when the result of such a job is asked for: ``job`` is its final
    state, ``job_id`` and ``error`` its id and error message.
    """

    def __init__(self, job: pb.Job, *, rpc: str = "", address: str = "") -> None:
        from labsight.v1 import gateway_pb2 as pb

        self.job = job
        self.job_id = job.job_id
        self.error = job.error
        status = pb.JobStatus.Name(job.status).removeprefix("JOB_STATUS_").lower()
        super().__init__(f"job {job.job_id} is {status}: {job.error or 'no error recorded'}",
                         rpc=rpc, address=address)


SERVICE_ERRORS: dict[grpc.StatusCode, type[ServiceError]] = {
    error.status_code: error
    for error in (InvalidArgumentError, NotFoundError, FailedPreconditionError,
                  ResourceExhaustedError, UnavailableError, UnauthenticatedError,
                  PermissionDeniedError, UnimplementedError, CancelledError, DeadlineExceededError)
}
"""The SDK error raised for each status code that has its own class."""


def service_error(error: grpc.RpcError, *, rpc: str = "", address: str = "") -> ServiceError:
    """The typed SDK error for a ``grpc.RpcError`` answered to ``rpc`` by the service at ``address``."""
    if isinstance(error, ServiceError):
        return error
    # An answered call has code() and details(): a grpc.Call, or grpc.aio's AioRpcError (no Call).
    answered = callable(getattr(error, "code", None)) and callable(getattr(error, "details", None))
    code = error.code() if answered else grpc.StatusCode.UNKNOWN
    details = (error.details() if answered else "") or str(error)
    kind = SERVICE_ERRORS.get(code, ServiceError)
    return kind(details, code=code, rpc=rpc, address=address)
