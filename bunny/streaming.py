"""Jobs over ``JobService/RunStream``: one long-lived stream per relay address.

Many jobs share a stream; relay answers each as it completes and bunny
matches answers to waiting jobs by ``job_id``. Each job is still its own
trace: its CLIENT span's context travels in ``JobRequest.trace_context``
rather than in call metadata, which a stream sends only once.

A stream that breaks fails every job waiting on it with the typed error, and
the job runner's retry moves them to a fresh stream (on another address when
there is one): job ids make the resend safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import grpc

from bunny.errors import (
    JobDeadlineExceeded,
    JobRejected,
    RelayCallFailed,
    RelayOverloaded,
    RelayUnavailable,
)
from bunny.relaypool import Endpoint, RelayPool
from bunny.rpcspans import client_attempt
from bunny.runner import JobRunner, RunSettings, classify_rpc_error
from bunnyrelay.v1 import jobs_pb2

_CLOSE_GRACE_S = 5.0


def raise_for_stream_error(result: jobs_pb2.JobResult, peer: str) -> None:
    """Raise the typed error for a job the stream turned away (as Run would have with a status).

    A job that ran and failed is a result, not an error, and passes through.
    """
    if result.status != jobs_pb2.JOB_STATUS_FAILED:
        return
    error = result.error
    if error.reason in _RAN_AND_FAILED:
        return
    try:
        code = grpc.StatusCode[_CODE_NAMES[error.code]]
    except KeyError:
        return
    message = f"{peer}: {code.name}: {error.message}"
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED and error.retryable:
        pushback = (
            error.retry_after.ToTimedelta().total_seconds()
            if error.HasField("retry_after")
            else None
        )
        raise RelayOverloaded(
            message, code=code, peer=peer, reason=error.reason, pushback_s=pushback
        )
    if code is grpc.StatusCode.UNAVAILABLE:
        raise RelayUnavailable(message, code=code, peer=peer, reason=error.reason)
    if code in _REJECTED_CODES:
        raise JobRejected(message, code=code, peer=peer, reason=error.reason)


_CODE_NAMES = {status.value[0]: status.name for status in grpc.StatusCode}
# Reasons relay gives for a job its handler ran: results on Run too, never statuses.
_RAN_AND_FAILED = frozenset({"JOB_FAILED", "INVALID_PAYLOAD", "HANDLER_ERROR"})
_REJECTED_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)


class _Stream:
    """One RunStream call and the jobs waiting on it."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        # No call deadline: each job carries its own, enforced here and by relay's drain.
        self.call = endpoint.stub.RunStream()
        self.waiting: dict[str, asyncio.Future[jobs_pb2.JobResult]] = {}
        self.broken: RelayCallFailed | None = None
        self._write_lock = asyncio.Lock()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        peer = self.endpoint.peer
        try:
            async for result in self.call:
                future = self.waiting.pop(result.job_id, None)
                if future is not None and not future.done():
                    future.set_result(result)
            error: RelayCallFailed = RelayUnavailable(
                f"{peer}: the stream ended before every job had its result",
                code=grpc.StatusCode.UNAVAILABLE,
                peer=peer,
            )
        except grpc.aio.AioRpcError as exc:
            error = classify_rpc_error(exc, peer)
        self.broken = error
        waiting, self.waiting = self.waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(error)

    async def submit(self, request: jobs_pb2.JobRequest, deadline: float) -> jobs_pb2.JobResult:
        if self.broken is not None:
            raise self.broken
        job_id = request.job_id
        future: asyncio.Future[jobs_pb2.JobResult] = asyncio.get_running_loop().create_future()
        self.waiting[job_id] = future
        try:
            try:
                async with self._write_lock:
                    await self.call.write(request)
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                # The reader sees why the stream ended and fails the future with it.
                pass
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                return await future
        except TimeoutError:
            raise JobDeadlineExceeded(
                f"{self.endpoint.peer}: no result for {job_id} before the job's deadline",
                code=grpc.StatusCode.DEADLINE_EXCEEDED,
                peer=self.endpoint.peer,
            ) from None
        finally:
            if self.waiting.get(job_id) is future:
                del self.waiting[job_id]

    async def close(self) -> None:
        if self.broken is None:
            with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
                await self.call.done_writing()
        try:
            await asyncio.wait_for(asyncio.shield(self._reader), _CLOSE_GRACE_S)
        except TimeoutError:
            self.call.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)


class StreamRunner(JobRunner):
    """Each attempt sends the job on the stream to the chosen address, opening it if needed."""

    def __init__(self, pool: RelayPool, settings: RunSettings) -> None:
        super().__init__(pool, settings)
        self._streams: dict[str, _Stream] = {}

    def _stream_for(self, endpoint: Endpoint) -> _Stream:
        stream = self._streams.get(endpoint.peer)
        if stream is None or stream.broken is not None or stream.endpoint is not endpoint:
            stream = _Stream(endpoint)
            self._streams[endpoint.peer] = stream
        return stream

    async def call(
        self, endpoint: Endpoint, request: jobs_pb2.JobRequest, attempt: int, deadline: float
    ) -> jobs_pb2.JobResult:
        stream = self._stream_for(endpoint)
        with client_attempt("RunStream", endpoint, attempt) as record:
            context = dict(record.metadata)
            request.trace_context.traceparent = context.get("traceparent", "")
            request.trace_context.tracestate = context.get("tracestate", "")
            try:
                result = await stream.submit(request, deadline)
                raise_for_stream_error(result, endpoint.peer)
            except RelayCallFailed as exc:
                record.code = exc.code
                raise
            return result

    async def close(self) -> None:
        streams, self._streams = list(self._streams.values()), {}
        await asyncio.gather(*(s.close() for s in streams))
