"""What can go wrong in relay, as one tree. Whether a retry can help is a property of the class.

::

    RelayError                  code                 reason             retryable
    │
    ├── Refused                 a job relay did not run, or did not finish; the caller is told
    │   ├── InvalidRequest      INVALID_ARGUMENT     INVALID_JOB_ID,    no
    │   │                                            MISSING_KIND,
    │   │                                            UNREADABLE_REQUEST
    │   ├── UnknownKind         NOT_FOUND            UNKNOWN_KIND       no
    │   ├── PayloadTooLarge     RESOURCE_EXHAUSTED   PAYLOAD_TOO_LARGE  no
    │   ├── IdConflict          ALREADY_EXISTS       JOB_ID_REUSED      no
    │   ├── Overloaded          RESOURCE_EXHAUSTED   OVERLOADED         yes, after retry_after
    │   ├── Draining            UNAVAILABLE          DRAINING           yes, on another relay
    │   ├── DeadlineExceeded    DEADLINE_EXCEEDED    DEADLINE_EXCEEDED  yes, with a longer deadline
    │   ├── Interrupted         UNAVAILABLE          INTERRUPTED        yes, on another relay
    │   └── StoreUnavailable    UNAVAILABLE          STORE_UNAVAILABLE  yes, once the store is back
    │
    └── StartupError            relay cannot start: ``relay serve`` logs the message, exits 1
        ├── ListenError         the address is invalid, in use, or not this host's
        ├── TlsError            a certificate, key or CA file is missing, unreadable or wrong
        └── StoreError          the idempotency store cannot be opened; while serving, a store
                                that stops answering refuses the job (StoreUnavailable) instead

A refusal of a unary call ends the call with the code, the message,
``google.rpc.ErrorInfo`` (and ``RetryInfo``) status details, and
``grpc-retry-pushback-ms`` when relay knows how long to wait; inside a stream
the same becomes the job's ``JobError``. A failure of the job itself (the
handler says it cannot succeed) is not an error of relay's: it is a normal
result, told in :mod:`relay.kinds.job`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import ClassVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from bunnyrelay.v1.jobs_pb2 import JobError, JobResult, JobStatus

ERROR_DOMAIN = "relay.bunnyrelay.v1"
"""``google.rpc.ErrorInfo.domain`` of every error relay reports."""

PUSHBACK_KEY = "grpc-retry-pushback-ms"

Metadata = tuple[tuple[str, str | bytes], ...]


class RelayError(Exception):
    """Base of everything relay raises on purpose; ``str(exc)`` is for people."""

    retryable: ClassVar[bool] = False
    """True when the same request may succeed if made again."""


# --- refusals: what a caller is told --------------------------------------------------


class Refused(RelayError):  # noqa: N818 - the tree reads as verdicts: Refused, Overloaded
    """A job that relay did not run, or did not finish."""

    code: ClassVar[grpc.StatusCode]
    reason: ClassVar[str]

    def __init__(
        self,
        message: str,
        *,
        details: Mapping[str, str] | None = None,
        retry_after_ms: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}
        self.retry_after_ms = retry_after_ms

    def trailing_metadata(self) -> Metadata:
        """The rich status (and pushback) that a unary call ends with."""
        info = error_details_pb2.ErrorInfo(
            reason=self.reason, domain=ERROR_DOMAIN, metadata=self.details
        )
        status = status_pb2.Status(code=self.code.value[0], message=self.message)
        status.details.append(_pack(info))
        if self.retry_after_ms is None:
            return tuple(rpc_status.to_status(status).trailing_metadata)
        retry = error_details_pb2.RetryInfo(retry_delay=_duration(self.retry_after_ms))
        status.details.append(_pack(retry))
        return (
            *rpc_status.to_status(status).trailing_metadata,
            (PUSHBACK_KEY, str(self.retry_after_ms)),
        )

    def job_error(self) -> JobError:
        error = JobError(
            code=self.code.value[0],
            reason=self.reason,
            message=self.message,
            retryable=self.retryable,
        )
        if self.retry_after_ms is not None:
            error.retry_after.CopyFrom(_duration(self.retry_after_ms))
        return error

    def job_result(self, job_id: str, instance: str) -> JobResult:
        """This refusal as the job's own result, for a stream that goes on."""
        return JobResult(
            job_id=job_id,
            status=JobStatus.JOB_STATUS_FAILED,
            error=self.job_error(),
            relay_instance=instance,
        )


def _pack(message: error_details_pb2.ErrorInfo | error_details_pb2.RetryInfo) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _duration(millis: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=millis // 1000, nanos=(millis % 1000) * 1_000_000)


class InvalidRequest(Refused):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"

    @classmethod
    def job_id(cls, job_id: str) -> InvalidRequest:
        if not job_id:
            return _InvalidJobId("job_id is required: 1-128 characters of [A-Za-z0-9._:-]")
        shown = job_id if len(job_id) <= 40 else job_id[:40] + "..."
        return _InvalidJobId(
            f"job_id {shown!r} ({len(job_id)} characters) is invalid: "
            "it must be 1-128 characters of [A-Za-z0-9._:-]",
            details={"field": "job_id"},
        )

    @classmethod
    def unreadable(cls) -> InvalidRequest:
        return _Unreadable("the request is not a valid bunnyrelay.v1.JobRequest message")

    @classmethod
    def missing_kind(cls) -> InvalidRequest:
        return _MissingKind("kind is required, e.g. 'echo'", details={"field": "kind"})


class _InvalidJobId(InvalidRequest):
    reason = "INVALID_JOB_ID"


class _Unreadable(InvalidRequest):
    reason = "UNREADABLE_REQUEST"


class _MissingKind(InvalidRequest):
    reason = "MISSING_KIND"


class UnknownKind(Refused):
    code = grpc.StatusCode.NOT_FOUND
    reason = "UNKNOWN_KIND"

    @classmethod
    def of(cls, kind: str, known: tuple[str, ...]) -> UnknownKind:
        shown = kind if len(kind) <= 64 else kind[:64] + "..."
        return cls(
            f"unknown job kind {shown!r}; this relay knows: {', '.join(known)}",
            details={"known_kinds": ",".join(known)},
        )


class PayloadTooLarge(Refused):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "PAYLOAD_TOO_LARGE"

    @classmethod
    def of(cls, size: int, limit: int) -> PayloadTooLarge:
        return cls(
            f"payload is {size} bytes, over this relay's limit of {limit} bytes "
            "(--max-payload-bytes, RELAY_MAX_PAYLOAD_BYTES)",
            details={"size_bytes": str(size), "limit_bytes": str(limit)},
        )


class IdConflict(Refused):
    code = grpc.StatusCode.ALREADY_EXISTS
    reason = "JOB_ID_REUSED"

    @classmethod
    def of(cls, job_id: str) -> IdConflict:
        return cls(
            f"job_id {job_id!r} was already used for a different request "
            "(kind, payload or attributes differ); use a new job_id for a new job",
            details={"job_id": job_id},
        )


class Overloaded(Refused):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "OVERLOADED"
    retryable = True

    @classmethod
    def of(cls, in_flight: int, limit: int, retry_after_ms: int) -> Overloaded:
        return cls(
            f"relay is running {in_flight} jobs, its limit (--max-in-flight); "
            f"retry after {retry_after_ms} ms or on another relay",
            details={"in_flight": str(in_flight), "limit": str(limit)},
            retry_after_ms=retry_after_ms,
        )


class Draining(Refused):
    code = grpc.StatusCode.UNAVAILABLE
    reason = "DRAINING"
    retryable = True

    def __init__(self) -> None:
        super().__init__("relay is draining and takes no new jobs; resubmit to another relay")


class DeadlineExceeded(Refused):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "DEADLINE_EXCEEDED"
    retryable = True

    @classmethod
    def of(cls, job_id: str, seconds: float | None) -> DeadlineExceeded:
        limit = "" if seconds is None else f" of {seconds:.3f} s"
        return cls(f"job {job_id!r} did not finish within the caller's deadline{limit}")


class Interrupted(Refused):
    code = grpc.StatusCode.UNAVAILABLE
    reason = "INTERRUPTED"
    retryable = True

    @classmethod
    def of(cls, job_id: str) -> Interrupted:
        return cls(
            f"job {job_id!r} was still running when relay's drain grace period ended and was "
            "cancelled before it finished; resubmit it to another relay"
        )


class StoreUnavailable(Refused):
    """The idempotency store could not be asked whether the job ran before: running it
    blind could double its effect, so relay refuses it and the client retries."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "STORE_UNAVAILABLE"
    retryable = True

    @classmethod
    def of(cls, job_id: str, problem: str) -> StoreUnavailable:
        return cls(
            f"job {job_id!r} was not run: relay's idempotency store is unavailable ({problem}); "
            "retry later or on another relay"
        )


# --- relay itself cannot serve -------------------------------------------------------


class StartupError(RelayError):
    """relay cannot start; the message says what is wrong and how to fix it."""

    event: ClassVar[str] = "relay.start_failed"
    """The ``event`` of the log line ``relay serve`` writes before it exits 1."""


class ListenError(StartupError):
    """The address cannot be listened on (invalid, in use, not local, no permission)."""

    event = "relay.listen_failed"


class TlsError(StartupError):
    """The certificate, key or CA cannot be used (missing, unreadable, not PEM, mismatched)."""

    event = "relay.tls_failed"


class StoreError(StartupError):
    """The idempotency store cannot be opened or does not answer (disk, permissions, network).

    Raised by ``IdempotencyStore.open`` at start-up, when relay must not serve,
    and by ``reserve``/``complete`` while serving, when relay refuses the job
    (:class:`StoreUnavailable`, retryable) rather than run it without the store.
    """

    event = "relay.store_failed"


def failure_type(error: BaseException) -> str:
    """The ``error.type`` a job that ended in ``error`` is counted and traced with: a
    refusal's reason, CANCELLED, or the exception's class."""
    if isinstance(error, Refused):
        return error.reason
    if isinstance(error, asyncio.CancelledError):
        return "CANCELLED"
    return type(error).__qualname__
