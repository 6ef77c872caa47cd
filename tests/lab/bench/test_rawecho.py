"""The raw pair's client (:mod:`lab.bench.rawecho`) against a servicer that keeps what it was
sent: the traceparent row must send the header on every call, and the baseline nothing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc
import pytest

from bunny.loadgen import LoadSettings
from bunnyrelay.v1 import jobs_pb2, jobs_pb2_grpc
from lab.bench import rawecho


class _Recording(rawecho.EchoServicer):
    def __init__(self) -> None:
        self.traceparents: list[str | None] = []

    async def Run(  # noqa: N802 - the proto's method name
        self,
        request: jobs_pb2.JobRequest,
        context: grpc.aio.ServicerContext[jobs_pb2.JobRequest, jobs_pb2.JobResult],
    ) -> jobs_pb2.JobResult:
        sent = dict(context.invocation_metadata() or ())
        value = sent.get("traceparent")
        self.traceparents.append(value if isinstance(value, str) else None)
        return await super().Run(request, context)


@contextlib.asynccontextmanager
async def _serving(servicer: _Recording) -> AsyncIterator[str]:
    server = grpc.aio.server()
    jobs_pb2_grpc.add_JobServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(grace=None)


@pytest.mark.parametrize("traceparent", [True, False])
async def test_the_traceparent_row_sends_the_header_on_every_call(traceparent: bool) -> None:
    servicer = _Recording()
    settings = LoadSettings(duration_s=0.2, concurrency=4, warmup_s=0)
    async with _serving(servicer) as target:
        status = await asyncio.wait_for(
            rawecho.load(target, settings, stream=False, payload_bytes=10, traceparent=traceparent),
            timeout=20,
        )

    assert status == 0
    assert servicer.traceparents
    expected = rawecho._TRACEPARENT if traceparent else None
    assert set(servicer.traceparents) == {expected}
