"""Jobs over ``JobService/RunBatches``: one long-lived stream per relay address.

Many jobs share a stream, and the jobs waiting to be sent share a message:
bunny sends every queued job in one ``JobBatch``, relay answers with every
result that is ready in one ``ResultBatch``, and bunny matches answers to
waiting jobs by ``job_id``. With many jobs in flight, the cost of a message
(a write, a read, a wake-up on each side) is shared by all of its jobs; a
lone job still leaves at once. Each job is still its own trace: its CLIENT
span's context travels in ``JobRequest.trace_context`` rather than in call
metadata, which a stream sends only once.

A stream that breaks fails every job waiting on it with the typed error, and
the submitter's retry moves them to a fresh stream (on another address when
there is one): job ids make the resend safe.
"""

from __future__ import annotations

import asyncio
import time

import grpc

from bunny.deadlines import Deadlines
from bunny.errors import JobDeadlineExceeded, RelayCallFailed, RelayUnavailable
from bunny.relaypool import RelayEndpoint, RelayPool
from bunny.rpcerrors import classify_rpc_error, raise_for_stream_error
from bunny.rpcspans import RpcSpans
from bunny.submitter import JobSubmitter, SubmitSettings
from bunny.tracing import BunnyTelemetry
from bunnyrelay.v1 import jobs_pb2

_CLOSE_GRACE_S = 5.0
_FAILED = jobs_pb2.JOB_STATUS_FAILED
_METHOD = "RunBatches"


# A batch holds jobs up to this many encoded bytes: far below any relay's receive limit
# (at least 64 KiB more than its largest payload), so jobs that would each be accepted
# alone are never refused for travelling together. A larger job goes as a unary call of
# its own: relay's gRPC layer refuses a message past its limit by ending the whole call,
# and on the stream that would fail every job waiting with it.
BATCH_BYTES = 64 * 1024
# Encoded overhead of one job inside a JobBatch: its tag and length prefix.
_JOB_FRAMING = 6
# A batch holds at most this share of the jobs waiting on the stream, so that about this
# many batches are in flight: relay works on one while bunny still fills the next, and
# both processes are busy at once. (With one batch of every job, they take turns.)
_BATCHES_IN_FLIGHT = 4


class _Stream:
    """One RunBatches call and the jobs waiting on it.

    ``submit`` queues a job and wakes the writer; the writer sends what is
    queued as JobBatch messages of up to a quarter of the jobs waiting (and up
    to ``BATCH_BYTES``), and while a write waits for HTTP/2 flow control the
    next batch gathers. A lone job is sent at once. Jobs larger than
    ``BATCH_BYTES`` never come here (:meth:`StreamSubmitter.call`).
    """

    def __init__(self, endpoint: RelayEndpoint, rpc: RpcSpans) -> None:
        self.endpoint = endpoint
        self._rpc = rpc
        # No call deadline: each job carries its own, enforced here and by relay's drain.
        self.call = endpoint.stub.RunBatches()
        self.waiting: dict[str, asyncio.Future[jobs_pb2.JobResult]] = {}
        # Further jobs with an id already waiting (a caller may send one id twice at once):
        # relay answers each, in order, so each answer goes to the oldest still waiting.
        self._also_waiting: dict[str, list[asyncio.Future[jobs_pb2.JobResult]]] = {}
        self.broken: RelayCallFailed | None = None
        self._queued: list[jobs_pb2.JobRequest] = []
        self._wanted = asyncio.Event()
        self._deadlines = Deadlines()
        self._closing = False
        loop = asyncio.get_running_loop()
        self._reader = loop.create_task(self._read())
        self._writer = loop.create_task(self._write())

    async def _read(self) -> None:
        peer = self.endpoint.peer
        waiting = self.waiting
        started = time.perf_counter()
        try:
            async for batch in self.call:
                for result in batch.results:
                    future = waiting.pop(result.job_id, None)
                    if self._also_waiting:
                        self._promote(result.job_id)
                    if future is not None and not future.done():
                        future.set_result(result)
            code = grpc.StatusCode.OK
            error: RelayCallFailed = RelayUnavailable(
                f"{peer}: the stream ended before every job had its result",
                code=grpc.StatusCode.UNAVAILABLE,
                peer=peer,
            )
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            error = classify_rpc_error(exc, peer)
        self._rpc.record_duration(_METHOD, code, time.perf_counter() - started)
        self.broken = error
        self._queued.clear()
        self._wanted.set()
        waiting, self.waiting = self.waiting, {}
        also, self._also_waiting = self._also_waiting, {}
        for future in [*waiting.values(), *(f for more in also.values() for f in more)]:
            if not future.done():
                future.set_exception(error)
        # Every job of the stream has its answer or its error: no deadline left to keep.
        self._deadlines.close()

    def _promote(self, job_id: str) -> None:
        """The next job waiting with ``job_id`` takes its place, if there is one."""
        more = self._also_waiting.get(job_id)
        if more is None:
            return
        self.waiting[job_id] = more.pop(0)
        if not more:
            del self._also_waiting[job_id]

    async def _write(self) -> None:
        queued = self._queued
        wanted = self._wanted
        try:
            while self.broken is None:
                if queued:
                    await self.call.write(self._take())
                    continue
                if self._closing:
                    await self.call.done_writing()
                    return
                wanted.clear()
                await wanted.wait()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            # The reader sees why the stream ended and fails the waiting jobs with it.
            pass
        except Exception:
            # A bug here must not leave jobs waiting for their deadline: ending the call
            # fails them (retryably), and the submitter moves them to a fresh stream.
            self.call.cancel()
            raise

    def _take(self) -> jobs_pb2.JobBatch:
        """The next batch: queued jobs, oldest first, within the bounds above."""
        queued = self._queued
        most = max(1, len(self.waiting) // _BATCHES_IN_FLIGHT)
        size = 0
        count = 0
        for request in queued:
            size += request.ByteSize() + _JOB_FRAMING
            if count and (size > BATCH_BYTES or count == most):
                break
            count += 1
        batch = jobs_pb2.JobBatch(jobs=queued[:count])
        del queued[:count]
        return batch

    def _unqueue(self, request: jobs_pb2.JobRequest) -> None:
        """Take back a job that was not sent yet (its caller stopped waiting)."""
        for index, queued in enumerate(self._queued):
            if queued is request:
                del self._queued[index]
                return

    async def submit(self, request: jobs_pb2.JobRequest, deadline: float) -> jobs_pb2.JobResult:
        if self.broken is not None:
            raise self.broken
        job_id = request.job_id
        future: asyncio.Future[jobs_pb2.JobResult] = asyncio.get_running_loop().create_future()
        if job_id in self.waiting:
            self._also_waiting.setdefault(job_id, []).append(future)
        else:
            self.waiting[job_id] = future
        queued = self._queued
        if not queued:
            # Jobs queued already woke the writer, or it is writing and takes them next.
            self._wanted.set()
        queued.append(request)
        watched = self._deadlines.watch(future, deadline)
        try:
            return await future
        except TimeoutError:
            self._unqueue(request)
            raise JobDeadlineExceeded(
                f"{self.endpoint.peer}: no result for {job_id} before the job's deadline",
                code=grpc.StatusCode.DEADLINE_EXCEEDED,
                peer=self.endpoint.peer,
            ) from None
        finally:
            watched.discard(future)
            if future.cancelled():
                self._unqueue(request)
            # Nearly always the reader took the future out already, and no other job with
            # its id waits: nothing to forget.
            if self._also_waiting or job_id in self.waiting:
                self._forget(job_id, future)

    def _forget(self, job_id: str, future: asyncio.Future[jobs_pb2.JobResult]) -> None:
        """Stop waiting with ``future`` (answered, timed out or cancelled)."""
        if self.waiting.get(job_id) is future:
            del self.waiting[job_id]
            self._promote(job_id)
            return
        more = self._also_waiting.get(job_id)
        if more is not None and future in more:
            more.remove(future)
            if not more:
                del self._also_waiting[job_id]

    async def close(self) -> None:
        self._closing = True
        self._wanted.set()
        try:
            await asyncio.wait_for(
                asyncio.shield(asyncio.gather(self._writer, self._reader)), _CLOSE_GRACE_S
            )
        except TimeoutError:
            self.call.cancel()
            await asyncio.gather(self._writer, self._reader, return_exceptions=True)


class StreamSubmitter(JobSubmitter):
    """Each attempt sends the job on the stream to the chosen address, opening it if needed."""

    def __init__(
        self,
        pool: RelayPool,
        settings: SubmitSettings,
        telemetry: BunnyTelemetry | None = None,
    ) -> None:
        super().__init__(pool, settings, telemetry)
        self._streams: dict[str, _Stream] = {}

    def _open(self, endpoint: RelayEndpoint) -> _Stream:
        stream = self._streams[endpoint.peer] = _Stream(endpoint, self.rpc)
        return stream

    async def call(
        self, endpoint: RelayEndpoint, request: jobs_pb2.JobRequest, attempt: int, deadline: float
    ) -> jobs_pb2.JobResult:
        if request.ByteSize() > BATCH_BYTES:
            # Alone, so that a job relay refuses for its size fails by itself.
            return await self.call_unary(endpoint, request, attempt, deadline)
        stream = self._streams.get(endpoint.peer)
        if stream is None or stream.broken is not None or stream.endpoint is not endpoint:
            stream = self._open(endpoint)
        with self.rpc.attempt(
            _METHOD, endpoint, attempt, measured=False, in_message=True
        ) as record:
            record.write_trace_context(request.trace_context)
            try:
                result = await stream.submit(request, deadline)
                if result.status == _FAILED:
                    raise_for_stream_error(result, endpoint.peer)
            except RelayCallFailed as exc:
                record.code = exc.code
                raise
            return result

    async def close(self) -> None:
        streams, self._streams = list(self._streams.values()), {}
        await asyncio.gather(*(s.close() for s in streams))
