"""Admission: whether relay takes a job, and the errors that say why it did not.

Every reason a job ends without a result of its own is a :class:`Refused`;
the class fixes the gRPC status code, the machine-readable reason and whether
resubmitting the same job can help::

    Refused                 code                 reason             retryable
    ├── InvalidRequest      INVALID_ARGUMENT     INVALID_JOB_ID,    no
    │                                            MISSING_KIND,
    │                                            UNREADABLE_REQUEST
    ├── UnknownKind         NOT_FOUND            UNKNOWN_KIND       no
    ├── PayloadTooLarge     RESOURCE_EXHAUSTED   PAYLOAD_TOO_LARGE  no
    ├── IdConflict          ALREADY_EXISTS       JOB_ID_REUSED      no
    ├── Overloaded          RESOURCE_EXHAUSTED   OVERLOADED         yes, after retry_after
    ├── Draining            UNAVAILABLE          DRAINING           yes, on another relay
    ├── DeadlineExceeded    DEADLINE_EXCEEDED    DEADLINE_EXCEEDED  yes, with a longer deadline
    ├── Interrupted         UNAVAILABLE          INTERRUPTED        yes, on another relay
    └── StoreUnavailable    UNAVAILABLE          STORE_UNAVAILABLE  yes, once the store is back

A unary call ends with the code, the message, ``google.rpc.ErrorInfo`` (and
``RetryInfo``) status details, and ``grpc-retry-pushback-ms`` when relay knows
how long to wait; inside a stream the same becomes the job's ``JobError``.
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

MIN_PUSHBACK_MS = 50
MAX_PUSHBACK_MS = 5_000

Metadata = tuple[tuple[str, str | bytes], ...]


class Refused(Exception):  # noqa: N818 - the tree reads as verdicts: Refused, Overloaded
    """A job that relay did not run, or did not finish; ``str(exc)`` is for people."""

    code: ClassVar[grpc.StatusCode]
    reason: ClassVar[str]
    retryable: ClassVar[bool] = False

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
            "(--max-payload-bytes)",
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


class Admission:
    """The in-flight limit, and the switch that closes relay to new jobs when it drains."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self.limit = limit
        self.in_flight = 0
        self.closed = False
        self._mean_duration = 0.0
        self._idle_waiters: list[asyncio.Future[None]] = []

    def enter(self) -> None:
        """Take a slot, or raise :class:`Draining` or :class:`Overloaded`."""
        if self.closed:
            raise Draining()
        if self.in_flight >= self.limit:
            raise Overloaded(
                f"relay is running {self.in_flight} jobs, its limit (--max-in-flight); "
                f"retry after {self.pushback_ms()} ms or on another relay",
                details={"in_flight": str(self.in_flight), "limit": str(self.limit)},
                retry_after_ms=self.pushback_ms(),
            )
        self.in_flight += 1

    def leave(self, duration: float) -> None:
        """Give the slot back; ``duration`` (seconds) feeds the pushback estimate."""
        self.in_flight -= 1
        # An exponential average follows a change of workload within a few dozen jobs.
        self._mean_duration += 0.1 * (duration - self._mean_duration)
        if self.in_flight == 0 and self._idle_waiters:
            for waiter in self._idle_waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self._idle_waiters.clear()

    def pushback_ms(self) -> int:
        """How long until a slot is likely to be free: with every slot busy, one
        frees about every ``mean duration / limit``."""
        estimate = int(self._mean_duration * 1000 / self.limit)
        return max(MIN_PUSHBACK_MS, min(MAX_PUSHBACK_MS, estimate))

    def close(self) -> None:
        """Refuse new jobs from now on; those in flight go on."""
        self.closed = True

    async def wait_idle(self) -> None:
        """Return once no job holds a slot."""
        if self.in_flight == 0:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._idle_waiters.append(waiter)
        await waiter
