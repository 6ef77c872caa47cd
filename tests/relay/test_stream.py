"""JobService.RunStream: results in completion order, per-job errors, the stream goes on."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from bunnyrelay.v1 import jobs_pb2
from bunnyrelay.v1.jobs_pb2 import JobResult, JobStatus
from tests.relay.harness import (
    CountingKinds,
    by_id,
    collect,
    job,
    local_relay,
    read_until_end,
    wait_until,
)

SUCCEEDED = JobStatus.JOB_STATUS_SUCCEEDED
FAILED = JobStatus.JOB_STATUS_FAILED


async def test_stream_answers_every_job_matched_by_id() -> None:
    requests = [job(f"many-{i}", "sha256" if i % 2 else "echo", b"%d" % i) for i in range(60)]
    async with local_relay() as local:
        call = local.stub.RunStream(iter(requests))
        results = by_id(await collect(call))
        code = await call.code()

    assert code == grpc.StatusCode.OK
    assert len(results) == 60
    assert results["many-4"].output == b"4"
    assert len(results["many-5"].output) == 64
    assert all(r.status == SUCCEEDED for r in results.values())


async def test_results_come_in_completion_order_not_request_order() -> None:
    async with local_relay() as local:
        call = local.stub.RunStream(iter([job("slow", "sleep", b"300"), job("fast", "echo")]))
        order = [r.job_id for r in await collect(call)]

    assert order == ["fast", "slow"]


async def test_a_bad_job_is_answered_in_the_stream_which_goes_on() -> None:
    requests = [
        job("good-1", "echo", b"a"),
        job("bad id", "echo"),
        job("no-kind", ""),
        job("unknown", "teleport"),
        job("too-big", "echo", b"x" * 2000),
        job("good-2", "fail", b"nope"),
        job("good-3", "echo", b"b"),
    ]
    async with local_relay(max_payload_bytes=1000) as local:
        call = local.stub.RunStream(iter(requests))
        results = by_id(await collect(call))
        code = await call.code()

    assert code == grpc.StatusCode.OK
    assert results["good-1"].output == b"a"
    assert results["good-3"].output == b"b"
    expected = {
        "bad id": (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_JOB_ID"),
        "no-kind": (grpc.StatusCode.INVALID_ARGUMENT, "MISSING_KIND"),
        "unknown": (grpc.StatusCode.NOT_FOUND, "UNKNOWN_KIND"),
        "too-big": (grpc.StatusCode.RESOURCE_EXHAUSTED, "PAYLOAD_TOO_LARGE"),
        "good-2": (grpc.StatusCode.FAILED_PRECONDITION, "JOB_FAILED"),
    }
    for job_id, (status, reason) in expected.items():
        result = results[job_id]
        assert result.status == FAILED, job_id
        assert (result.error.code, result.error.reason) == (status.value[0], reason)
        assert not result.error.retryable
        assert result.error.message
    assert "teleport" in results["unknown"].error.message
    assert "echo, fail, sha256, sleep, wordcount" in results["unknown"].error.message


async def test_an_unreadable_message_is_answered_in_the_stream_which_goes_on() -> None:
    async with local_relay() as local:
        raw: Any = local.channel.stream_stream("/bunnyrelay.v1.JobService/RunStream")
        good = job("readable", "echo", b"ok").SerializeToString()
        call = raw(iter([b"\xff\xff\xff", good]))
        results = [JobResult.FromString(data) for data in await collect(call)]
        code = await call.code()

    assert code == grpc.StatusCode.OK
    answers = by_id(results)
    assert answers["readable"].output == b"ok"
    assert answers[""].error.reason == "UNREADABLE_REQUEST"
    assert answers[""].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]


async def test_overload_inside_a_stream_is_that_jobs_retryable_result() -> None:
    async with local_relay(max_in_flight=1) as local:
        holder = local.stub.Run(job("holder", "sleep", b"10000"))
        try:
            await wait_until(lambda: local.relay.in_flight == 1)
            call = local.stub.RunStream(iter([job("squeezed", "echo")]))
            (result,) = await collect(call)
        finally:
            holder.cancel()

    assert result.status == FAILED
    assert result.error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert result.error.reason == "OVERLOADED"
    assert result.error.retryable
    assert result.error.retry_after.ToMilliseconds() >= 50


async def test_a_stream_reads_no_more_jobs_than_its_window_until_results_go_out() -> None:
    # The window is the in-flight limit: jobs past it wait unread, and are not refused.
    counting = CountingKinds()
    requests = [job(f"windowed-{i}", "count", b"wait") for i in range(5)]
    async with local_relay(kinds=counting.kinds, max_in_flight=3) as local:
        call = local.stub.RunBatches(iter([jobs_pb2.JobBatch(jobs=requests)]))
        await wait_until(lambda: len(counting.runs) == 3)
        for _ in range(20):
            await asyncio.sleep(0)  # give a reader that ignored the window the chance to
        held = len(counting.runs)
        counting.gate.set()
        results = [r for batch in await collect(call) for r in batch.results]

    assert held == 3
    assert sorted(r.job_id for r in results) == sorted(r.job_id for r in requests)
    assert all(r.status == SUCCEEDED for r in results), [r.error for r in results]


async def test_half_close_lets_jobs_in_flight_finish_then_ends_ok() -> None:
    async with local_relay() as local:
        call = local.stub.RunStream()
        await call.write(job("after-close", "sleep", b"200"))
        await call.done_writing()
        result = await call.read()
        end = await call.read()
        code = await call.code()

    assert isinstance(result, JobResult)
    assert result.job_id == "after-close"
    assert result.status == SUCCEEDED
    assert end is grpc.aio.EOF
    assert code == grpc.StatusCode.OK


async def test_duplicates_inside_one_stream_run_once() -> None:
    counting = CountingKinds()
    async with local_relay(kinds=counting.kinds) as local:
        call = local.stub.RunStream()
        for _ in range(3):
            await call.write(job("same", "count", b"wait"))
        await wait_until(lambda: counting.runs == ["same"])
        counting.gate.set()
        await call.done_writing()
        results = await collect(call)

    assert counting.runs == ["same"]
    assert sorted(r.replayed for r in results) == [False, True, True]


async def test_the_stream_deadline_cancels_its_jobs_on_the_server() -> None:
    async with local_relay() as local:
        call = local.stub.RunStream(timeout=0.5)
        await call.write(job("long", "sleep", b"5000"))  # and no half-close: the stream stays open
        results, ended = await read_until_end(call)
        await wait_until(lambda: local.relay.in_flight == 0, within=1.5)
        code = await call.code()

    # relay's own timer and gRPC's cancellation race: the job may be answered first.
    assert [r.error.reason for r in results] in ([], ["DEADLINE_EXCEEDED"])
    assert ended is not None
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
