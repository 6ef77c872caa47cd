"""Stream sessions: ``RunStream`` and ``RunBatches``, many jobs over one call, and their window.

One session per call. A reader task starts a task per job, and the call's own
task is the only writer, so writes are serialized and wait for HTTP/2 flow
control. The writer sends every result that is ready when it gets to run: one
message each on RunStream, one message for all of them on RunBatches, so that
while one write waits for the network the next batch gathers.

The window bounds the jobs read but not yet answered: when the client stops
reading results, relay stops reading requests, and the client feels it.

A job of a stream always gets a result: a refusal, or a bug of relay's own,
becomes that job's result, and the stream and its other jobs go on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Generic, TypeVar

import grpc

from bunnyrelay.v1.jobs_pb2 import JobBatch, JobError, JobRequest, JobResult, JobStatus
from relay.checks import UNREADABLE_BATCH
from relay.errors import Refused
from relay.runner import Context, Executor

_INTERNAL_CODE = grpc.StatusCode.INTERNAL.value[0]

Message = TypeVar("Message")


class UnreadableBatchError(Exception):
    """A RunBatches message that was not a JobBatch: the call ends INVALID_ARGUMENT."""


def one_job(request: JobRequest) -> Iterable[JobRequest]:
    """The jobs of a RunStream message: the one it is."""
    return (request,)


def batch_jobs(batch: JobBatch) -> Sequence[JobRequest]:
    """The jobs of a RunBatches message."""
    if batch is UNREADABLE_BATCH:
        raise UnreadableBatchError
    return batch.jobs


class StreamSession(Generic[Message]):
    """One RunStream or RunBatches call, from its first message to its last result."""

    def __init__(
        self,
        messages: AsyncIterable[Message],
        context: Context,
        *,
        jobs_of: Callable[[Message], Iterable[JobRequest]],
        send: Callable[[list[JobResult]], Awaitable[None]],
        execute: Executor,
        window: int,
        draining: Callable[[], bool],
        instance: str,
        logger: logging.Logger,
    ) -> None:
        self._messages = messages
        self.context = context
        self._jobs_of = jobs_of
        self._send = send
        self._execute = execute
        self._draining = draining
        self._instance = instance
        self._log = logger
        self._ready: list[JobResult] = []
        self._wake = asyncio.Event()
        self._window = window
        # Set when a reader waiting for room in the window may go on (results were sent).
        self._room = asyncio.Event()
        self._jobs: set[asyncio.Task[None]] = set()
        self._unanswered = 0
        self._half_closed = False
        self.ended_by_drain = False
        """True when the session ended because relay drains, with requests perhaps unread."""

    def wake(self) -> None:
        """Look again whether the session can end (relay began to drain)."""
        self._wake.set()

    async def run(self) -> None:
        """Answer every job read, until the client half-closes, or relay drains and the
        jobs read are answered; raises :class:`UnreadableBatchError` for a bad message."""
        reader = asyncio.create_task(self._read())
        try:
            while True:
                if self._ready:
                    ready, self._ready = self._ready, []
                    await self._send(ready)
                    self._unanswered -= len(ready)
                    self._room.set()
                    continue
                if self._unanswered == 0:
                    if self._half_closed:
                        break
                    if self._draining():
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
        room = self._room
        jobs = self._jobs
        # The loop's own create_task: asyncio.create_task adds a call and a naming step.
        start = asyncio.get_running_loop().create_task
        try:
            while True:
                try:
                    message = await anext(messages)
                except StopAsyncIteration:
                    self._half_closed = True
                    return
                for request in self._jobs_of(message):
                    # The count of jobs read and not answered is the window (no semaphore
                    # to take and give back per job): room comes when results are sent.
                    while self._unanswered >= window:
                        room.clear()
                        await room.wait()
                    self._unanswered += 1
                    # A job takes itself out of ``jobs`` when it ends (no done callback to
                    # schedule per job); ``jobs`` is what the session cancels when it ends.
                    jobs.add(start(self._answer(request)))
        finally:
            self.wake()

    async def _answer(self, request: JobRequest) -> None:
        # ``result`` first, then the append: ``self._ready.append(await ...)`` would bind the
        # list before the await, and the writer swaps in a fresh one meanwhile.
        try:
            result = await self._execute(request, self.context)
        except Refused as exc:
            result = exc.job_result(request.job_id, self._instance)
        except Exception:
            self._log.exception("job failed inside relay", extra={"event": "job.internal_error"})
            result = JobResult(
                job_id=request.job_id,
                status=JobStatus.JOB_STATUS_FAILED,
                error=JobError(
                    code=_INTERNAL_CODE,
                    reason="INTERNAL",
                    message="relay failed to run the job; relay's log has the traceback",
                    retryable=True,
                ),
                relay_instance=self._instance,
            )
        ready = self._ready
        ready.append(result)
        if len(ready) == 1:
            # The first result since the writer last looked wakes it; with more, it is awake
            # already or sending, and takes them next.
            self._wake.set()
        self._jobs.discard(asyncio.current_task())
