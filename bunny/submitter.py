"""Submitting one job end to end: look relay up, call it (retrying what can pass), report.

A job is retried, inside its deadline, when its failure can pass: relay
unreachable or restarting (UNAVAILABLE, connection refused), draining, or
overloaded with a pushback, and a DNS lookup that failed in a way that can pass.
Every attempt looks the name up again (from the cache unless it expired), so a
retry follows a relay that moved. A failure that cannot pass (a rejected job, a
name that does not exist) ends the job at once.

:class:`UnarySubmitter` sends each attempt as a ``JobService/Run`` call;
:mod:`bunny.streaming` reuses this skeleton for ``RunBatches``. Telemetry is
wrapped around the job from outside (:mod:`bunny.tracing`).
"""

from __future__ import annotations

import abc
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from functools import partial

import grpc

from bunny.dns.model import Resolution
from bunny.errors import BunnyError, DnsLookupFailed, JobDeadlineExceeded
from bunny.outcome import FAILED, SUCCEEDED, JobOutcome, OutcomeError
from bunny.relaypool import RelayEndpoint, RelayPool
from bunny.retry import RetryPolicy, retry_after_first
from bunny.rpcerrors import classify_rpc_error
from bunny.tracing import BunnyTelemetry, Job
from bunnyrelay.v1 import jobs_pb2


@dataclass(frozen=True, slots=True)
class SubmitSettings:
    """How bunny submits each job."""

    timeout_s: float = 30.0
    """Each job's deadline, from the moment it starts (lookups included)."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    """Retries of the job (its lookup and its call); by default bounded by the deadline
    only. A lookup's own query retries are the resolver's."""


@dataclass(slots=True)
class _Progress:
    """What a job got to, for its outcome."""

    tries: int = 0
    """Attempts of the job, lookups that failed included."""
    attempts: int = 0
    """RPC attempts."""
    peer: str | None = None
    resolution: Resolution | None = None
    passing: BunnyError | None = None
    """The last failure that could have passed (what kept the job from succeeding)."""


class JobSubmitter(abc.ABC):
    """Submits one job: the skeleton shared by the unary and the stream submitters."""

    run: Job
    """Run ``request`` to a final outcome, inside its trace; never raises for a job's failure."""

    def __init__(
        self,
        pool: RelayPool,
        settings: SubmitSettings,
        telemetry: BunnyTelemetry | None = None,
    ) -> None:
        """``telemetry`` defaults to one of its own on the global providers."""
        self.pool = pool
        self.settings = settings
        self.telemetry = telemetry or BunnyTelemetry()
        self.rpc = self.telemetry.rpc
        self.run = self.telemetry.jobs.wrap(self._submit)

    async def _submit(self, request: jobs_pb2.JobRequest, trace_id: str) -> JobOutcome:
        started = time.monotonic()
        deadline = started + self.settings.timeout_s
        pool = self.pool
        # The first attempt is made here, not through an attempt coroutine and the retry
        # function: nearly every job has only this one, and would pay for both.
        resolution: Resolution | None = None
        peer: str | None = None
        attempts = 0
        try:
            # From the cache without a coroutine of its own: nearly every attempt.
            resolution = pool.cached()
            if resolution is None:
                resolution = await pool.lookup(deadline=deadline)
            attempts = 1
            endpoint = pool.pick()
            peer = endpoint.peer
            result = await self.call(endpoint, request, 1, deadline)
        except BunnyError as first:
            progress = _Progress(tries=1, attempts=attempts, peer=peer, resolution=resolution)
            if first.retryable:
                progress.passing = first
            try:
                result = await retry_after_first(
                    partial(self._attempt, request, progress, deadline),
                    first,
                    policy=self.settings.retry,
                    deadline=deadline,
                )
            except BunnyError as exc:
                return self._failed(request, exc, progress, trace_id, started)
            resolution, peer, attempts = progress.resolution, progress.peer, progress.attempts
        return self._finished(request, result, peer, attempts, resolution, trace_id, started)

    async def _attempt(
        self, request: jobs_pb2.JobRequest, progress: _Progress, deadline: float, number: int
    ) -> jobs_pb2.JobResult:
        """Attempt ``number`` (2 and on) of the job, ``progress`` kept up to date."""
        progress.tries = number
        try:
            resolution = self.pool.cached()
            if resolution is None:
                resolution = await self.pool.lookup(deadline=deadline)
            progress.resolution = resolution
            progress.attempts += 1
            # A retry prefers another address than the one that just failed.
            endpoint = self.pool.pick(avoid=progress.peer)
            progress.peer = endpoint.peer
            return await self.call(endpoint, request, progress.attempts, deadline)
        except BunnyError as exc:
            if exc.retryable:
                progress.passing = exc
            raise

    @abc.abstractmethod
    def call(
        self, endpoint: RelayEndpoint, request: jobs_pb2.JobRequest, attempt: int, deadline: float
    ) -> Awaitable[jobs_pb2.JobResult]:
        """One attempt; raises a BunnyError (retryable or not) when it fails."""

    async def call_unary(
        self, endpoint: RelayEndpoint, request: jobs_pb2.JobRequest, attempt: int, deadline: float
    ) -> jobs_pb2.JobResult:
        """One ``JobService/Run`` call for ``request``: its result, or the typed error."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise JobDeadlineExceeded(
                f"{request.job_id}: the job's deadline passed before attempt {attempt}",
                code=grpc.StatusCode.DEADLINE_EXCEEDED,
                peer=endpoint.peer,
            )
        with self.rpc.attempt("Run", endpoint, attempt) as record:
            try:
                return await endpoint.stub.Run(request, timeout=remaining, metadata=record.metadata)
            except grpc.aio.AioRpcError as exc:
                record.code = exc.code()
                raise classify_rpc_error(exc, endpoint.peer) from None

    async def close(self) -> None:  # noqa: B027 - most submitters hold nothing to release
        """Release what the submitter holds beyond the pool (streams)."""

    @staticmethod
    def _finished(
        request: jobs_pb2.JobRequest,
        result: jobs_pb2.JobResult,
        peer: str | None,
        attempts: int,
        resolution: Resolution | None,
        trace_id: str,
        started: float,
    ) -> JobOutcome:
        ok = result.status == jobs_pb2.JOB_STATUS_SUCCEEDED
        return JobOutcome(
            job_id=request.job_id,
            kind=request.kind,
            status=SUCCEEDED if ok else FAILED,
            output=result.output,
            relay_address=peer,
            relay_instance=result.relay_instance,
            attempts=attempts,
            trace_id=trace_id,
            replayed=result.replayed,
            duration_ms=(time.monotonic() - started) * 1000.0,
            dns_source=resolution.source if resolution is not None else None,
            error=None if ok else OutcomeError.from_result(result.error),
            resolution=resolution,
        )

    def _failed(
        self,
        request: jobs_pb2.JobRequest,
        exc: BunnyError,
        progress: _Progress,
        trace_id: str,
        started: float,
    ) -> JobOutcome:
        duration_s = time.monotonic() - started
        if isinstance(exc, JobDeadlineExceeded) and progress.passing is not None:
            # The deadline ended the last try; what kept failing before it is the news.
            exc = progress.passing
        error = OutcomeError.from_exception(exc)
        if exc.retryable:
            error = error.because(self._gave_up(progress, duration_s))
        resolution = None if isinstance(exc, DnsLookupFailed) else progress.resolution
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
            duration_ms=duration_s * 1000.0,
            dns_source=resolution.source if resolution is not None else None,
            error=error,
            resolution=resolution,
        )

    def _gave_up(self, progress: _Progress, duration_s: float) -> str:
        """Why bunny stopped retrying a failure that could have passed."""
        tries = f"{progress.tries} attempt{'s' if progress.tries != 1 else ''}"
        cap = self.settings.retry.attempts
        if cap is not None and progress.tries >= cap:
            return f"still failing after {tries} (the most allowed: --attempts {cap})"
        return (
            f"still failing when the job's deadline came ({self.settings.timeout_s:g} s, "
            f"--timeout), after {tries} over {duration_s:.1f} s"
        )


class UnarySubmitter(JobSubmitter):
    """One ``JobService/Run`` call per attempt."""

    # The call itself: no method or coroutine around it.
    call = JobSubmitter.call_unary
