"""The JobService servicer: one job per ``Run`` call, many per ``RunStream`` or ``RunBatches``.

``Run`` hands its request to an executor (the job runner, wrapped in
telemetry by :mod:`relay.server`) and turns a :class:`relay.errors.Refused`
into the call's status, with rich details. The streaming methods run a
:class:`relay.streams.StreamSession`; they differ only in how many jobs a
message holds: one, or a batch.

Draining: :meth:`JobService.begin_drain` closes admission (new jobs are
refused DRAINING) and wakes every stream, which ends once its jobs are
answered.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from typing import Any, TypeVar

import grpc

from bunnyrelay.v1.jobs_pb2 import JobBatch, JobRequest, JobResult, ResultBatch
from bunnyrelay.v1.jobs_pb2_grpc import JobServiceServicer
from relay.errors import Draining, Refused
from relay.runner import Context, Executor, JobRunner
from relay.streams import StreamSession, UnreadableBatchError, batch_jobs, one_job

M = TypeVar("M")


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
        self._streams: set[StreamSession[Any]] = set()
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

        await self._serve(
            self._session(request_iterator, context, one_job, send, self._run_streamed)
        )

    async def RunBatches(  # type: ignore[override]  # noqa: N802
        self, request_iterator: AsyncIterable[JobBatch], context: Context
    ) -> None:
        async def send(results: list[JobResult]) -> None:
            await context.write(ResultBatch(results=results))

        await self._serve(
            self._session(request_iterator, context, batch_jobs, send, self._run_batched)
        )

    def _session(
        self,
        messages: AsyncIterable[M],
        context: Context,
        jobs_of: Callable[[M], Iterable[JobRequest]],
        send: Callable[[list[JobResult]], Awaitable[None]],
        execute: Executor,
    ) -> StreamSession[M]:
        return StreamSession(
            messages,
            context,
            jobs_of=jobs_of,
            send=send,
            execute=execute,
            window=self.stream_window,
            draining=self._is_draining,
            instance=self.runner.instance,
            logger=self._log,
        )

    def _is_draining(self) -> bool:
        return self.draining

    async def _serve(self, session: StreamSession[Any]) -> None:
        context = session.context
        self._streams.add(session)
        try:
            await session.run()
        except UnreadableBatchError:
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
