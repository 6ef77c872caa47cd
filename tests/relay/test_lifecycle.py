"""Start, ready, drain, stop: health, reflection, refusing new work, finishing or cancelling old."""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import sys
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from bunnyrelay.v1.jobs_pb2 import JobResult, JobStatus
from lab.processes import child_env
from relay.lifecycle import Phase
from relay.server import JOB_SERVICE
from relay.stores.memory import MemoryStore
from tests.relay.harness import (
    CountingKinds,
    async_stub,
    collect,
    details,
    error_info,
    health_becomes,
    job,
    local_relay,
    logged,
    read_until_end,
    wait_until,
)

if TYPE_CHECKING:
    pass

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
RELAY_COMMAND = Path(sys.executable).with_name("relay")


async def _health(channel: grpc.aio.Channel, service: str) -> int:
    response = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=2
    )
    return int(response.status)


async def _refused(call: Awaitable[object]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def test_health_is_serving_once_started_for_the_server_and_the_job_service() -> None:
    async with local_relay() as local:
        assert local.relay.phase is Phase.READY
        assert await _health(local.channel, "") == SERVING
        assert await _health(local.channel, JOB_SERVICE) == SERVING


async def test_reflection_lists_the_job_health_and_reflection_services() -> None:
    async with local_relay() as local:
        stub = reflection_pb2_grpc.ServerReflectionStub(local.channel)
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol=JOB_SERVICE),
        ]
        listing, described = await collect(stub.ServerReflectionInfo(iter(requests)))

    names = {service.name for service in listing.list_services_response.service}
    assert names == {
        "bunnyrelay.v1.JobService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    assert described.file_descriptor_response.file_descriptor_proto


async def test_drain_goes_not_serving_at_once_refuses_new_jobs_and_finishes_old_ones() -> None:
    async with local_relay(grace_period=10) as local:
        running = [local.stub.Run(job(f"old-{i}", "sleep", b"500")) for i in range(3)]
        await wait_until(lambda: local.relay.in_flight == 3)
        drain = asyncio.create_task(local.relay.drain())
        await wait_until(lambda: local.relay.phase is Phase.DRAINING)

        statuses = [await _health(local.channel, name) for name in ("", JOB_SERVICE)]
        refused = await _refused(local.stub.Run(job("new-1", "echo")))
        results = await asyncio.gather(*running)
        report = await drain

    assert statuses == [NOT_SERVING, NOT_SERVING]
    assert refused.code() == grpc.StatusCode.UNAVAILABLE
    assert "relay is draining" in details(refused)
    assert error_info(refused).reason == "DRAINING"
    assert [r.status for r in results] == [JobStatus.JOB_STATUS_SUCCEEDED] * 3
    assert report.in_flight_at_start == 3
    assert report.interrupted == ()
    assert local.relay.phase is Phase.STOPPED


async def test_jobs_outlasting_the_grace_period_are_cancelled_and_answered_unavailable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with local_relay() as local:
        stuck = local.stub.Run(job("stuck-1", "sleep", b"30000"))
        await wait_until(lambda: local.relay.in_flight == 1)
        report = await local.relay.drain(grace=0.2)
        error = await _refused(stuck)

    assert report.interrupted == ("stuck-1",)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert error_info(error).reason == "INTERRUPTED"
    assert "grace period" in details(error)
    assert isinstance(local.relay.store, MemoryStore)
    assert len(local.relay.store) == 0  # not completed: a retry elsewhere may run it
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "stuck-1" in warning.getMessage()


async def test_a_draining_stream_answers_new_jobs_draining_finishes_old_ones_then_ends() -> None:
    counting = CountingKinds()
    async with local_relay(kinds=counting.kinds, grace_period=10) as local:
        call = local.stub.RunStream()
        await call.write(job("in-stream", "count", b"wait"))
        await wait_until(lambda: local.relay.in_flight == 1)
        drain = asyncio.create_task(local.relay.drain())
        await wait_until(lambda: local.relay.phase is Phase.DRAINING)
        await call.write(job("late", "echo"))
        late = await call.read()
        counting.gate.set()
        answered, ended = await read_until_end(call)
        await drain

    assert isinstance(late, JobResult)
    assert late.job_id == "late"
    assert late.error.reason == "DRAINING"
    assert late.error.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert late.error.retryable
    (finished,) = answered
    assert finished.job_id == "in-stream"
    assert finished.status == JobStatus.JOB_STATUS_SUCCEEDED
    # The client had not half-closed: UNAVAILABLE tells it to resubmit what got no answer.
    assert ended is not None
    assert ended.code() == grpc.StatusCode.UNAVAILABLE


async def test_sigterm_drains_jobs_in_flight_and_exits_zero_within_the_grace_period() -> None:
    process = await asyncio.create_subprocess_exec(
        str(RELAY_COMMAND),
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--grace-period",
        "10",
        "--max-in-flight",
        "5",
        "--log-level",
        "DEBUG",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=child_env(),
    )
    assert process.stdout is not None
    assert process.stderr is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), timeout=20)
        match = re.fullmatch(rb"relay listening on 127\.0\.0\.1:(\d+)\n", line)
        assert match, line
        async with grpc.aio.insecure_channel(f"127.0.0.1:{int(match[1])}") as channel:
            stub = async_stub(channel)
            assert await _health(channel, "") == SERVING
            await stub.Run(job("warm-up", "echo"), timeout=5)
            log: list[bytes] = []
            await logged(process.stderr, "job.started", kept=log)  # the warm-up
            calls = [stub.Run(job(f"term-{i}", "sleep", b"1000"), timeout=15) for i in range(5)]
            await logged(process.stderr, "job.started", count=5, kept=log)  # all five run
            watched = asyncio.create_task(health_becomes(channel, JOB_SERVICE, NOT_SERVING))
            process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            await watched
            not_serving_after = time.monotonic() - signalled
            refused = await _refused(stub.Run(job("after-term", "echo"), timeout=5))
            results = await asyncio.gather(*calls)
        code = await asyncio.wait_for(process.wait(), timeout=15)
        exited_after = time.monotonic() - signalled
        stderr = b"".join([*log, await process.stderr.read()]).decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert not_serving_after < 1.0
    assert refused.code() == grpc.StatusCode.UNAVAILABLE
    assert "draining" in details(refused)
    assert [r.status for r in results] == [JobStatus.JOB_STATUS_SUCCEEDED] * 5
    assert code == 0, stderr
    assert exited_after < 10
    assert "SIGTERM received" in stderr
    assert "drain begun: 5 jobs in flight" in stderr
    assert "5 jobs completed, 0 interrupted" in stderr
    assert "Traceback" not in stderr
