"""The JobService: one job per ``Run`` call, many per ``RunStream`` or ``RunBatches``.

:class:`JobRunner` takes one request from checks to result: the request's
fields, the drain switch, the idempotency store, the in-flight limit, the
handler under the caller's deadline, and the result with its timings. Anything
that keeps a job from producing its own result is raised as a
:class:`relay.errors.Refused`; :class:`JobService` turns that into the
call's status (``Run``) or into the job's result (``RunStream``, ``RunBatches``).

The two streaming methods share one session (:class:`_StreamSession`); they
differ only in how many jobs a message holds: one, or a batch.

Telemetry is not here: :mod:`relay.tracing` wraps the executors this service
is given, so that the business logic stays free of spans and metrics.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from typing import Any, Generic, TypeAlias, TypeVar

import grpc
from google.protobuf.message import DecodeError

from bunnyrelay.v1.jobs_pb2 import (
    JobBatch,
    JobError,
    JobRequest,
    JobResult,
    JobStatus,
    ResultBatch,
)
from bunnyrelay.v1.jobs_pb2_grpc import JobServiceServicer
from relay.admission import Admission
from relay.errors import (
    DeadlineExceeded,
    Draining,
    IdConflict,
    Interrupted,
    InvalidRequest,
    PayloadTooLarge,
    Refused,
    StoreError,
    StoreUnavailable,
    UnknownKind,
)
from relay.kinds.handler import Handler, JobFailed, JobInput
from relay.stores.base import (
    FingerprintMismatchError,
    IdempotencyStore,
    Replay,
    fingerprint,
)

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Executor: TypeAlias = Callable[[JobRequest, Context], Awaitable[JobResult]]
"""Runs one job request to its result, or raises :class:`Refused`."""

_JOB_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

_SUCCEEDED = JobStatus.JOB_STATUS_SUCCEEDED
_FAILED = JobStatus.JOB_STATUS_FAILED
_HANDLER_ERROR_CODE = grpc.StatusCode.UNKNOWN.value[0]
_INTERNAL_CODE = grpc.StatusCode.INTERNAL.value[0]


UNREADABLE = JobRequest()
"""What :func:`parse_request` returns for bytes that are not a JobRequest (never mutated)."""


def parse_request(data: bytes) -> JobRequest:
    """The server's deserializer: gRPC would answer UNKNOWN for a decoding error, but
    bytes that do not parse are the client's mistake, so they become a request that
    :class:`JobRunner` refuses with INVALID_ARGUMENT."""
    try:
        return JobRequest.FromString(data)
    except DecodeError:
        return UNREADABLE


UNREADABLE_BATCH = JobBatch()
"""What :func:`parse_batch` returns for bytes that are not a JobBatch (never mutated)."""


def parse_batch(data: bytes) -> JobBatch:
    """``RunBatches``' deserializer; like :func:`parse_request`, a message that does not
    parse is the client's mistake, answered INVALID_ARGUMENT rather than UNKNOWN."""
    try:
        return JobBatch.FromString(data)
    except DecodeError:
        return UNREADABLE_BATCH


class JobRunner:
    """Runs job requests; shared by every call and stream of one relay."""

    def __init__(
        self,
        *,
        handlers: Mapping[str, Handler],
        store: IdempotencyStore,
        admission: Admission,
        max_payload_bytes: int,
        instance: str,
        logger: logging.Logger,
        log_executions: bool = False,
    ) -> None:
        self._handlers = dict(handlers)
        self._known = tuple(sorted(self._handlers))
        self._store = store
        self._admission = admission
        self._max_payload = max_payload_bytes
        self.instance = instance
        self._log = logger
        # issue 5 counts executions from the JSON log, so there it is INFO; elsewhere it
        # would be one line per job, so it waits for --log-level DEBUG.
        self._executed_level = logging.INFO if log_executions else logging.DEBUG
        self._job_id_ok = _JOB_ID.fullmatch
        self._running: dict[asyncio.Task[Any], str] = {}
        self._interrupted: set[asyncio.Task[Any]] = set()

    @property
    def known_kinds(self) -> tuple[str, ...]:
        return self._known

    @property
    def admission(self) -> Admission:
        return self._admission

    def running_job_ids(self) -> list[str]:
        return list(self._running.values())

    async def execute(self, request: JobRequest, context: Context) -> JobResult:
        """Run one job of a stream, bounded by the call's deadline."""
        received_ns = time.time_ns()
        handler = self._admit(request)
        remaining = context.time_remaining()
        try:
            # The deadline covers waiting for a duplicate too, not only the handler.
            async with asyncio.timeout(remaining):
                return await self._run(request, handler, received_ns)
        except TimeoutError:
            raise DeadlineExceeded.of(request.job_id, remaining) from None

    async def execute_call(self, request: JobRequest, context: Context) -> JobResult:
        """Run the job of one ``Run`` call.

        No timer of our own: at the call's deadline gRPC cancels this handler,
        which ends the job (and a wait for a duplicate) as the timeout would,
        and the caller gets DEADLINE_EXCEEDED from gRPC.
        """
        received_ns = time.time_ns()
        return await self._run(request, self._admit(request), received_ns)

    def _admit(self, request: JobRequest) -> Handler:
        """The handler for ``request``, or :class:`Refused` saying why it cannot run here."""
        job_id = request.job_id
        if not self._job_id_ok(job_id):
            if request is UNREADABLE:
                raise InvalidRequest.unreadable()
            raise InvalidRequest.job_id(job_id)
        kind = request.kind
        handler = self._handlers.get(kind)
        if handler is None:
            if not kind:
                raise InvalidRequest.missing_kind()
            raise UnknownKind.of(kind, self._known)
        payload = request.payload
        if len(payload) > self._max_payload:
            raise PayloadTooLarge.of(len(payload), self._max_payload)
        if self._admission.closed:
            raise Draining()
        return handler

    async def _run(self, request: JobRequest, handler: Handler, received_ns: int) -> JobResult:
        job_id = request.job_id
        kind = request.kind
        payload = request.payload
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
        if self._log.isEnabledFor(logging.DEBUG):
            # Claimed and admitted: from here on a crash leaves a claim to take over.
            self._log.debug(
                "job started", extra={"event": "job.started", "job_id": job_id, "kind": kind}
            )
        try:
            try:
                output = await handler(JobInput(job_id, kind, payload, attributes))
                if type(output) is not bytes:
                    raise TypeError(
                        f"the handler returned {type(output).__name__}, but must return bytes"
                    )
            except JobFailed as exc:
                error = JobError(
                    code=exc.code.value[0],
                    reason=exc.reason,
                    message=str(exc),
                    retryable=exc.retryable,
                )
                result = self._result(job_id, _FAILED, b"", error, received_ns, started_ns)
                self._log.info(
                    # The message may be a client's payload (the fail kind): keep lines short.
                    "job failed: %.200s",
                    str(exc),
                    extra={"event": "job.failed", "job_id": job_id, "kind": kind},
                )
            except Exception as exc:
                error = JobError(
                    code=_HANDLER_ERROR_CODE,
                    reason="HANDLER_ERROR",
                    message=f"the {kind!r} handler raised {type(exc).__name__}; "
                    "relay's log has the traceback",
                )
                result = self._result(job_id, _FAILED, b"", error, received_ns, started_ns)
                self._log.error(
                    "job handler raised %s",
                    type(exc).__name__,
                    exc_info=exc,
                    extra={"event": "job.handler_error", "job_id": job_id, "kind": kind},
                )
            else:
                result = self._result(job_id, _SUCCEEDED, output, None, received_ns, started_ns)
            if self._log.isEnabledFor(self._executed_level):
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
            if result.error.retryable:
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

    def _result(
        self,
        job_id: str,
        status: JobStatus.ValueType,
        output: bytes,
        error: JobError | None,
        received_ns: int,
        started_ns: int,
    ) -> JobResult:
        result = JobResult(
            job_id=job_id, status=status, output=output, error=error, relay_instance=self.instance
        )
        # Set in place: building three Timestamps and a JobTimings to copy in costs twice as much.
        timings = result.timings
        timings.received_at.FromNanoseconds(received_ns)
        timings.started_at.FromNanoseconds(started_ns)
        timings.finished_at.FromNanoseconds(time.time_ns())
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


class JobService(JobServiceServicer):
    """The gRPC servicer. ``run_one``, ``run_streamed`` and ``run_batched`` default to the
    runner itself; :mod:`relay.server` passes them wrapped in telemetry."""

    def __init__(
        self,
        runner: JobRunner,
        *,
        run_one: Executor | None = None,
        run_streamed: Executor | None = None,
        run_batched: Executor | None = None,
        stream_window: int | None = None,
        logger: logging.Logger,
    ) -> None:
        self.runner = runner
        self._run_one = run_one or runner.execute_call
        self._run_streamed = run_streamed or runner.execute
        self._run_batched = run_batched or runner.execute
        self.stream_window = stream_window or runner.admission.limit
        self._log = logger
        self._streams: set[_StreamSession[Any]] = set()
        self.draining = False

    @property
    def in_flight(self) -> int:
        return self.runner.admission.in_flight

    async def Run(self, request: JobRequest, context: Context) -> JobResult:  # noqa: N802
        try:
            return await self._run_one(request, context)
        except Refused as exc:
            await context.abort(exc.code, exc.message, exc.trailing_metadata())
            raise AssertionError("context.abort returned") from exc

    async def RunStream(  # type: ignore[override]  # noqa: N802
        self, request_iterator: AsyncIterable[JobRequest], context: Context
    ) -> None:
        async def send(results: list[JobResult]) -> None:
            for result in results:
                await context.write(result)

        await self._serve_stream(
            _StreamSession(self, request_iterator, context, _one_job, send, self._run_streamed)
        )

    async def RunBatches(  # type: ignore[override]  # noqa: N802
        self, request_iterator: AsyncIterable[JobBatch], context: Context
    ) -> None:
        async def send(results: list[JobResult]) -> None:
            await context.write(ResultBatch(results=results))

        await self._serve_stream(
            _StreamSession(self, request_iterator, context, _batch_jobs, send, self._run_batched)
        )

    async def _serve_stream(self, session: _StreamSession[Any]) -> None:
        context = session.context
        self._streams.add(session)
        try:
            await session.run()
        except _UnreadableBatchError:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "bunnyrelay.v1.JobService/RunBatches: a message could not be decoded as a "
                "bunnyrelay.v1.JobBatch; the jobs sent before it were answered",
            )
        finally:
            self._streams.discard(session)
        if session.ended_by_drain:
            # The client may have sent jobs this stream will never read: a status that
            # says "retry elsewhere" covers them; an OK would lose them silently.
            await context.abort(grpc.StatusCode.UNAVAILABLE, Draining().message)

    def begin_drain(self) -> None:
        """Refuse new jobs (streams answer them DRAINING) and end streams once they are idle."""
        self.draining = True
        self.runner.admission.close()
        for session in self._streams:
            session.wake()

    async def wait_idle(self) -> None:
        await self.runner.admission.wait_idle()

    def interrupt(self) -> list[str]:
        return self.runner.interrupt()

    async def stream_job(
        self, execute: Executor, request: JobRequest, context: Context
    ) -> JobResult:
        """One job of a stream, always to a result: a refusal or a bug of relay's own
        becomes this job's result, and the stream and its other jobs go on."""
        try:
            return await execute(request, context)
        except Refused as exc:
            return exc.job_result(request.job_id, self.runner.instance)
        except Exception:
            self._log.exception("job failed inside relay", extra={"event": "job.internal_error"})
            return JobResult(
                job_id=request.job_id,
                status=_FAILED,
                error=JobError(
                    code=_INTERNAL_CODE,
                    reason="INTERNAL",
                    message="relay failed to run the job; relay's log has the traceback",
                    retryable=True,
                ),
                relay_instance=self.runner.instance,
            )


class _UnreadableBatchError(Exception):
    """A RunBatches message that was not a JobBatch: the call ends INVALID_ARGUMENT."""


def _one_job(request: JobRequest) -> Iterable[JobRequest]:
    return (request,)


def _batch_jobs(batch: JobBatch) -> Sequence[JobRequest]:
    if batch is UNREADABLE_BATCH:
        raise _UnreadableBatchError
    return batch.jobs


Message = TypeVar("Message")


class _StreamSession(Generic[Message]):
    """One RunStream or RunBatches call: a reader task starts a task per job, and this
    call's own task is the only writer, so writes are serialized and wait for HTTP/2
    flow control.

    The writer sends every result that is ready when it gets to run: one message
    each on RunStream, one message for all of them on RunBatches, so that while
    one write waits for the network the next batch gathers.

    The window bounds the jobs read but not yet answered: when the client stops
    reading results, relay stops reading requests, and the client feels it.
    """

    def __init__(
        self,
        service: JobService,
        messages: AsyncIterable[Message],
        context: Context,
        jobs_of: Callable[[Message], Iterable[JobRequest]],
        send: Callable[[list[JobResult]], Awaitable[None]],
        execute: Executor,
    ) -> None:
        self._service = service
        self._messages = messages
        self.context = context
        self._jobs_of = jobs_of
        self._send = send
        self._execute = execute
        self._ready: list[JobResult] = []
        self._wake = asyncio.Event()
        self._window = asyncio.Semaphore(service.stream_window)
        self._jobs: set[asyncio.Task[None]] = set()
        self._unanswered = 0
        self._half_closed = False
        self.ended_by_drain = False

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        reader = asyncio.create_task(self._read())
        try:
            while True:
                if self._ready:
                    ready, self._ready = self._ready, []
                    await self._send(ready)
                    self._unanswered -= len(ready)
                    for _ in ready:
                        self._window.release()
                    continue
                if self._unanswered == 0:
                    if self._half_closed:
                        break
                    if self._service.draining:
                        self.ended_by_drain = True
                        break
                    if reader.done():
                        reader.result()  # the reader's failure is the stream's
                        break
                self._wake.clear()
                await self._wake.wait()
        finally:
            reader.cancel()
            for job in self._jobs:
                job.cancel()
            await asyncio.gather(reader, *self._jobs, return_exceptions=True)

    async def _read(self) -> None:
        messages: AsyncIterator[Message] = aiter(self._messages)
        window = self._window
        jobs = self._jobs
        try:
            while True:
                try:
                    message = await anext(messages)
                except StopAsyncIteration:
                    self._half_closed = True
                    return
                for request in self._jobs_of(message):
                    await window.acquire()
                    self._unanswered += 1
                    job = asyncio.create_task(self._answer(request))
                    jobs.add(job)
                    job.add_done_callback(jobs.discard)
        finally:
            self.wake()

    async def _answer(self, request: JobRequest) -> None:
        result = await self._service.stream_job(self._execute, request, self.context)
        # Not ``self._ready.append(await ...)``: that would bind the list before the await,
        # and the writer swaps in a fresh one meanwhile.
        self._ready.append(result)
        self._wake.set()
