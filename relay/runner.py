"""The job runner: one job request from its checks to its result.

:class:`JobRunner` takes a request through the request checks, the drain
switch, the idempotency store, the in-flight limit, the handler under the
caller's deadline, and the result with its timings. Anything that keeps a job
from producing its own result is raised as a :class:`relay.errors.Refused`;
the servicer (:mod:`relay.service`) turns that into the call's status or the
job's result.

Telemetry is not here: :mod:`relay.tracing` wraps the executors the runner
offers, so that the business logic stays free of spans and metrics.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import grpc

from bunnyrelay.v1.jobs_pb2 import JobError, JobRequest, JobResult, JobStatus
from relay.admission import Admission
from relay.checks import Checked, RequestChecks
from relay.errors import (
    DeadlineExceeded,
    Draining,
    IdConflict,
    Interrupted,
    Refused,
    StoreError,
    StoreUnavailable,
)
from relay.kinds.handler import JobFailed, JobInput
from relay.stores.base import FingerprintMismatchError, IdempotencyStore, Replay, fingerprint

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Executor: TypeAlias = Callable[[JobRequest, Context], Awaitable[JobResult]]
"""Runs one job request to its result, or raises :class:`relay.errors.Refused`."""

_SUCCEEDED = JobStatus.JOB_STATUS_SUCCEEDED
_FAILED = JobStatus.JOB_STATUS_FAILED
_HANDLER_ERROR_CODE = grpc.StatusCode.UNKNOWN.value[0]
_NS_PER_S = 1_000_000_000


class JobRunner:
    """Runs job requests; shared by every call and stream of one relay."""

    def __init__(
        self,
        *,
        checks: RequestChecks,
        store: IdempotencyStore,
        admission: Admission,
        instance: str,
        logger: logging.Logger,
        log_executions: bool = False,
    ) -> None:
        self._checks = checks
        self._store = store
        self._admission = admission
        self.instance = instance
        self._log = logger
        self._executed_level = logging.INFO if log_executions else logging.DEBUG
        self._running: dict[asyncio.Task[Any], str] = {}
        self._interrupted: set[asyncio.Task[Any]] = set()

    @property
    def known_kinds(self) -> tuple[str, ...]:
        return self._checks.known_kinds

    @property
    def admission(self) -> Admission:
        return self._admission

    def running_job_ids(self) -> list[str]:
        return list(self._running.values())

    async def execute(self, request: JobRequest, context: Context) -> JobResult:
        """Run one job of a stream, bounded by the call's deadline."""
        received_ns = time.time_ns()
        checked = self._checks.check(request)
        if self._admission.closed:
            raise Draining()
        remaining = context.time_remaining()
        if remaining is None:
            # A stream without a call deadline (bunny's): no timer to set for each job.
            return await self._run(request, checked, received_ns)
        try:
            # The deadline covers waiting for a duplicate too, not only the handler.
            async with asyncio.timeout(remaining):
                return await self._run(request, checked, received_ns)
        except TimeoutError:
            raise DeadlineExceeded.of(checked[1], remaining) from None

    def execute_call(self, request: JobRequest, context: Context) -> Awaitable[JobResult]:
        """Run the job of one ``Run`` call.

        No timer of our own: at the call's deadline gRPC cancels this handler,
        which ends the job (and a wait for a duplicate) as the timeout would,
        and the caller gets DEADLINE_EXCEEDED from gRPC. Not a coroutine of its own:
        the checks run (and refuse) at once, and the job's coroutine is awaited by the
        caller, one layer fewer per call.
        """
        received_ns = time.time_ns()
        checked = self._checks.check(request)
        if self._admission.closed:
            raise Draining()
        return self._run(request, checked, received_ns)

    async def _run(self, request: JobRequest, checked: Checked, received_ns: int) -> JobResult:
        handler, job_id, kind, payload = checked
        attributes = request.attributes
        try:
            reservation = await self._store.reserve(job_id, fingerprint(kind, payload, attributes))
        except FingerprintMismatchError:
            raise IdConflict.of(job_id) from None
        except StoreError as exc:
            self._log.error(
                "idempotency store failed: %s",
                exc,
                extra={"event": "store.error", "job_id": job_id},
            )
            raise StoreUnavailable.of(job_id, str(exc)) from None
        if isinstance(reservation, Replay):
            replayed = JobResult()
            replayed.CopyFrom(reservation.result)
            replayed.replayed = True
            return replayed
        try:
            self._admission.enter()
        except Refused:
            await self._store.release(reservation)
            raise
        task = asyncio.current_task()
        assert task is not None, "jobs run inside a task"
        self._running[task] = job_id
        stored = False
        started = time.monotonic()
        started_ns = time.time_ns()
        # One level check for both lines unless executions are logged at INFO.
        log_started = self._log.isEnabledFor(logging.DEBUG)
        log_executed = log_started or (
            self._executed_level != logging.DEBUG and self._log.isEnabledFor(self._executed_level)
        )
        if log_started:
            # Claimed and admitted: from here on a crash leaves a claim to take over.
            self._log.debug(
                "job started", extra={"event": "job.started", "job_id": job_id, "kind": kind}
            )
        try:
            # The handler is awaited here rather than in a coroutine of its own: one layer
            # fewer per job. Its failures become the job's result (_handler_failed).
            try:
                output = await handler(JobInput(job_id, kind, payload, attributes))
            except Exception as exc:
                result = self._handler_failed(exc, job_id, kind, received_ns, started_ns)
            else:
                if type(output) is bytes:
                    result = self._result(job_id, _SUCCEEDED, output, None, received_ns, started_ns)
                else:
                    wrong = TypeError(
                        f"the handler returned {type(output).__name__}, but must return bytes"
                    )
                    result = self._handler_failed(wrong, job_id, kind, received_ns, started_ns)
            if log_executed:
                # Written, and flushed by the logging handler, before the result is stored:
                # an execution is never missing from the log, even if relay dies right after.
                self._log.log(
                    self._executed_level,
                    "job executed",
                    extra={
                        "event": "job.executed",
                        "job_id": job_id,
                        "kind": kind,
                        "status": "SUCCEEDED" if result.status == _SUCCEEDED else "FAILED",
                    },
                )
            # A success has no error to read (reading one makes an empty JobError).
            if result.status != _SUCCEEDED and result.error.retryable:
                # Retryable means "may succeed later": remembering it would block that.
                await self._store.release(reservation)
            else:
                try:
                    await self._store.complete(reservation, result)
                except StoreError as exc:
                    # The job ran: its result is the caller's even if it cannot be kept.
                    # Failing the call instead would make the client run it again.
                    self._log.error(
                        "job %s finished but its result could not be stored: %s",
                        job_id,
                        exc,
                        extra={"event": "store.error", "job_id": job_id},
                    )
            stored = True
            return result
        except asyncio.CancelledError:
            if task in self._interrupted:
                self._interrupted.discard(task)
                task.uncancel()
                raise Interrupted.of(job_id) from None
            raise
        finally:
            del self._running[task]
            self._interrupted.discard(task)
            self._admission.leave(time.monotonic() - started)
            if not stored:
                await self._store.release(reservation)

    def _handler_failed(
        self, exc: Exception, job_id: str, kind: str, received_ns: int, started_ns: int
    ) -> JobResult:
        """The job's result when its handler failed: the failure it reported, or a bug of
        its own (logged with the traceback)."""
        if isinstance(exc, JobFailed):
            error = JobError(
                code=exc.code.value[0],
                reason=exc.reason,
                message=str(exc),
                retryable=exc.retryable,
            )
            self._log.info(
                # The message may be a client's payload (the fail kind): keep lines short.
                "job failed: %.200s",
                str(exc),
                extra={"event": "job.failed", "job_id": job_id, "kind": kind},
            )
        else:
            error = JobError(
                code=_HANDLER_ERROR_CODE,
                reason="HANDLER_ERROR",
                message=f"the {kind!r} handler raised {type(exc).__name__}; "
                "relay's log has the traceback",
            )
            self._log.error(
                "job handler raised %s",
                type(exc).__name__,
                exc_info=exc,
                extra={"event": "job.handler_error", "job_id": job_id, "kind": kind},
            )
        return self._result(job_id, _FAILED, b"", error, received_ns, started_ns)

    def _result(
        self,
        job_id: str,
        status: JobStatus.ValueType,
        output: bytes,
        error: JobError | None,
        received_ns: int,
        started_ns: int,
    ) -> JobResult:
        # error=None is not free to pass: only a failure names it.
        result = (
            JobResult(job_id=job_id, status=status, output=output, relay_instance=self.instance)
            if error is None
            else JobResult(
                job_id=job_id,
                status=status,
                output=output,
                error=error,
                relay_instance=self.instance,
            )
        )
        # Set in place, seconds and nanos at once: building Timestamps and a JobTimings to
        # copy in costs more, and so does each Timestamp's FromNanoseconds.
        timings = result.timings
        stamp = timings.received_at
        stamp.seconds, stamp.nanos = divmod(received_ns, _NS_PER_S)
        stamp = timings.started_at
        stamp.seconds, stamp.nanos = divmod(started_ns, _NS_PER_S)
        stamp = timings.finished_at
        stamp.seconds, stamp.nanos = divmod(time.time_ns(), _NS_PER_S)
        return result

    def interrupt(self) -> list[str]:
        """Cancel every running job; each caller gets :class:`Interrupted`. Returns their ids."""
        job_ids = []
        for task, job_id in self._running.items():
            if task not in self._interrupted:
                self._interrupted.add(task)
                task.cancel()
                job_ids.append(job_id)
        return job_ids
