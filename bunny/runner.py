"""Running one job end to end: lookup, call relay (retrying what can succeed), report.

Each job is one trace. Its root span ``job.submit`` holds, in order, the DNS
lookup (``dns.lookup`` with a ``dns.query`` child per query and attempt, or the
one query that answered it on its own span, made by the resolver, when the
answer was not in bunny's cache; a cache hit is told
by attributes on ``job.submit`` itself, see :meth:`RelayPool.lookup`), then one
CLIENT span per RPC attempt, under which relay puts its server and job spans.

:class:`UnaryRunner` uses ``JobService/Run``; :mod:`bunny.streaming` reuses
this skeleton for ``RunBatches``.
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field

import grpc
from grpc_status import rpc_status
from opentelemetry import context, metrics, trace
from opentelemetry.trace import Status, StatusCode
from opentelemetry.util.types import AttributeValue

from bunny.errors import (
    BunnyError,
    DnsLookupFailed,
    JobDeadlineExceeded,
    JobRejected,
    RelayCallFailed,
    RelayOverloaded,
    RelayTlsFailed,
    RelayUnavailable,
)
from bunny.outcome import FAILED, SUCCEEDED, JobOutcome, OutcomeError
from bunny.relaypool import Endpoint, RelayPool
from bunny.retry import RetryPolicy, call_with_retries
from bunny.rpcspans import LazyTracer, client_attempt
from bunnyrelay import semconv
from bunnyrelay.tally import Tally
from bunnyrelay.v1 import jobs_pb2

_tracer = LazyTracer("bunny.runner")
_jobs = Tally(
    metrics.get_meter("bunny.runner"),
    semconv.METRIC_JOBS,
    unit="{job}",
    description="Jobs bunny submitted, by kind and final status",
)
# Per (kind, status): built once; kinds come from callers, so the set is bounded anyway.
_counted: dict[tuple[str, str], dict[str, AttributeValue]] = {}
_MAX_COUNTED = 1024


def _count(kind: str, status: str) -> None:
    key = (kind, status)
    attributes = _counted.get(key)
    if attributes is None:
        if len(_counted) >= _MAX_COUNTED:
            kind = "_other"
            key = (kind, status)
        attributes = _counted[key] = {semconv.JOB_KIND: kind, semconv.JOB_STATUS: status}
    _jobs.add(key, attributes)


_PUSHBACK_KEY = "grpc-retry-pushback-ms"
_REJECTED = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)


# How gRPC's channel reports a certificate that failed bunny's own checks.
_TLS_FAILURES = (
    "Hostname Verification Check failed",
    "CERTIFICATE_VERIFY_FAILED",
    "handshake failed",
)


def _error_reason(exc: grpc.aio.AioRpcError) -> str:
    """relay's ``google.rpc.ErrorInfo`` reason, when the status carries one."""
    try:
        status = rpc_status.from_call(exc)
    except ValueError:
        return ""
    if status is None:
        return ""
    from google.rpc import error_details_pb2

    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    return ""


def _pushback_seconds(exc: grpc.aio.AioRpcError) -> float | None:
    """``grpc-retry-pushback-ms`` from the trailers; a negative value means "do not retry"."""
    for key, value in exc.trailing_metadata() or ():
        if key == _PUSHBACK_KEY:
            try:
                return int(value) / 1000.0
            except (TypeError, ValueError):
                return None
    return None


# grpc.aio's own status for a stream whose write failed because the call had already
# ended underneath it (a reset connection, a relay that stopped): the real status is lost.
_WRITE_FAILED_IN_CORE = "Internal error from Core"


def _call_broke(code: grpc.StatusCode, details: str) -> bool:
    """The call was cut off, not refused: the job may well succeed on another try.

    bunny never cancels a call it still waits for (a cancelled caller gets
    CancelledError, not a status), so CANCELLED comes from the other side: a
    grpc.aio server cancels the calls that reach it while it stops (grpc/grpc#41785),
    which is what every relay does at the end of its drain.
    """
    return code is grpc.StatusCode.CANCELLED or (
        code is grpc.StatusCode.INTERNAL and details == _WRITE_FAILED_IN_CORE
    )


def classify_rpc_error(exc: grpc.aio.AioRpcError, peer: str) -> RelayCallFailed:
    """Turn a failed call into bunny's typed error; retryability follows from the type."""
    code = exc.code()
    details = exc.details() or code.name
    message = f"{peer}: {code.name}: {details}"
    reason = _error_reason(exc)
    if _call_broke(code, details):
        return RelayUnavailable(message, code=code, peer=peer, reason=reason)
    if code is grpc.StatusCode.UNAVAILABLE:
        if any(marker in details for marker in _TLS_FAILURES):
            return RelayTlsFailed(message, code=code, peer=peer, reason=reason)
        return RelayUnavailable(message, code=code, peer=peer, reason=reason)
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        pushback = _pushback_seconds(exc)
        if pushback is not None and pushback >= 0:
            return RelayOverloaded(
                message, code=code, peer=peer, reason=reason, pushback_s=pushback
            )
        return JobRejected(message, code=code, peer=peer, reason=reason)
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return JobDeadlineExceeded(message, code=code, peer=peer, reason=reason)
    if code in _REJECTED:
        return JobRejected(message, code=code, peer=peer, reason=reason)
    return RelayCallFailed(message, code=code, peer=peer, reason=reason)


@dataclass(frozen=True, slots=True)
class RunSettings:
    """How bunny runs each job."""

    timeout_s: float = 30.0
    """Each job's deadline, from the moment it starts (lookup included)."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    """RPC retries; DNS retries are the resolver's own."""


@dataclass(slots=True)
class _Progress:
    """What the last attempt of a job got to, for the outcome."""

    attempts: int = 0
    peer: str | None = None


class JobRunner(abc.ABC):
    """Runs one job: the skeleton shared by the unary and the stream runners."""

    def __init__(self, pool: RelayPool, settings: RunSettings) -> None:
        self.pool = pool
        self.settings = settings

    async def run(self, request: jobs_pb2.JobRequest) -> JobOutcome:
        """Run ``request`` to a final outcome; never raises for a job's failure."""
        started = time.monotonic()
        deadline = started + self.settings.timeout_s
        progress = _Progress()
        dns_source: str | None = None
        # start_span and attach rather than start_as_current_span, whose two
        # generator-based context managers are a noticeable part of a job's cost.
        span = _tracer.get().start_span(
            "job.submit",
            attributes={semconv.JOB_ID: request.job_id, semconv.JOB_KIND: request.kind},
        )
        token = context.attach(trace.set_span_in_context(span))
        try:
            trace_id = f"{span.get_span_context().trace_id:032x}"
            try:

                async def attempt(number: int) -> jobs_pb2.JobResult:
                    nonlocal dns_source
                    # Every attempt looks the name up (from the cache unless it expired),
                    # so a retry follows a relay that moved; and a lookup that failed in a
                    # way that can pass (a dropped query, a SERVFAIL) is retried with the
                    # call, inside the same deadline, instead of failing the job.
                    resolution = await self.pool.lookup(deadline=deadline)
                    dns_source = resolution.source
                    progress.attempts += 1
                    # A retry prefers another address than the one that just failed.
                    endpoint = self.pool.pick(avoid=progress.peer)
                    progress.peer = endpoint.peer
                    return await self.call(endpoint, request, progress.attempts, deadline)

                result = await call_with_retries(
                    attempt, policy=self.settings.retry, deadline=deadline
                )
            except BunnyError as exc:
                outcome = self._failed(request, exc, progress, trace_id, started, dns_source)
            else:
                outcome = self._finished(request, result, progress, trace_id, started, dns_source)
            if span.is_recording():
                span.set_attribute(semconv.JOB_STATUS, outcome.status)
                if outcome.error is not None:
                    span.set_status(Status(StatusCode.ERROR, outcome.error.message))
                    span.set_attribute(semconv.ERROR_TYPE, outcome.error.type)
        finally:
            context.detach(token)
            span.end()
        _count(request.kind, outcome.status)
        return outcome

    @abc.abstractmethod
    async def call(
        self, endpoint: Endpoint, request: jobs_pb2.JobRequest, attempt: int, deadline: float
    ) -> jobs_pb2.JobResult:
        """One attempt; raises a BunnyError (retryable or not) when it fails."""

    async def close(self) -> None:  # noqa: B027 - most runners hold nothing to release
        """Release what the runner holds beyond the pool (streams)."""

    @staticmethod
    def _finished(
        request: jobs_pb2.JobRequest,
        result: jobs_pb2.JobResult,
        progress: _Progress,
        trace_id: str,
        started: float,
        dns_source: str | None,
    ) -> JobOutcome:
        ok = result.status == jobs_pb2.JOB_STATUS_SUCCEEDED
        return JobOutcome(
            job_id=request.job_id,
            kind=request.kind,
            status=SUCCEEDED if ok else FAILED,
            output=result.output,
            relay_address=progress.peer,
            relay_instance=result.relay_instance,
            attempts=progress.attempts,
            trace_id=trace_id,
            replayed=result.replayed,
            duration_ms=(time.monotonic() - started) * 1000.0,
            dns_source=dns_source,
            error=None if ok else OutcomeError.from_result(result.error),
        )

    @staticmethod
    def _failed(
        request: jobs_pb2.JobRequest,
        exc: BunnyError,
        progress: _Progress,
        trace_id: str,
        started: float,
        dns_source: str | None,
    ) -> JobOutcome:
        return JobOutcome(
            job_id=request.job_id,
            kind=request.kind,
            status=FAILED,
            output=b"",
            relay_address=progress.peer,
            relay_instance="",
            attempts=progress.attempts,
            trace_id=trace_id,
            replayed=False,
            duration_ms=(time.monotonic() - started) * 1000.0,
            dns_source=None if isinstance(exc, DnsLookupFailed) else dns_source,
            error=OutcomeError.from_exception(exc),
        )


async def call_unary(
    endpoint: Endpoint, request: jobs_pb2.JobRequest, attempt: int, deadline: float
) -> jobs_pb2.JobResult:
    """One ``JobService/Run`` call for ``request``: its result, or the typed error."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise JobDeadlineExceeded(
            f"{request.job_id}: the job's deadline passed before attempt {attempt}",
            code=grpc.StatusCode.DEADLINE_EXCEEDED,
            peer=endpoint.peer,
        )
    with client_attempt("Run", endpoint, attempt) as record:
        try:
            return await endpoint.stub.Run(
                request, timeout=remaining, metadata=tuple(record.metadata)
            )
        except grpc.aio.AioRpcError as exc:
            record.code = exc.code()
            raise classify_rpc_error(exc, endpoint.peer) from None


class UnaryRunner(JobRunner):
    """One ``JobService/Run`` call per attempt."""

    async def call(
        self, endpoint: Endpoint, request: jobs_pb2.JobRequest, attempt: int, deadline: float
    ) -> jobs_pb2.JobResult:
        return await call_unary(endpoint, request, attempt, deadline)
