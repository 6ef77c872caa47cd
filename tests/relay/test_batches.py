"""JobService.RunBatches: several jobs per message, each answered once, as RunStream would."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from bunnyrelay.v1.jobs_pb2 import JobBatch, JobRequest, JobResult, JobStatus, ResultBatch
from tests.relay.harness import CountingKinds, job, local_relay, read_until_end, wait_until

SUCCEEDED = JobStatus.JOB_STATUS_SUCCEEDED
FAILED = JobStatus.JOB_STATUS_FAILED


def batch(*requests: JobRequest) -> JobBatch:
    return JobBatch(jobs=requests)


def results_of(batches: list[Any]) -> dict[str, JobResult]:
    """Every result of every ResultBatch by job id; a job answered twice fails the test."""
    answers: dict[str, JobResult] = {}
    for message in batches:
        for result in message.results:
            assert result.job_id not in answers, f"{result.job_id} was answered twice"
            answers[result.job_id] = result
    return answers


async def test_every_job_of_every_batch_is_answered_once() -> None:
    batches = [
        batch(*(job(f"b{b}-j{j}", "sha256" if j % 2 else "echo", b"%d" % j) for j in range(25)))
        for b in range(4)
    ]
    async with local_relay() as local:
        call = local.stub.RunBatches(iter(batches))
        messages, ended = await read_until_end(call)

    assert ended is None
    answers = results_of(messages)
    assert len(answers) == 100
    assert all(r.status == SUCCEEDED for r in answers.values())
    assert answers["b3-j4"].output == b"4"
    assert len(answers["b3-j5"].output) == 64
    # Results share messages: far fewer messages came back than jobs went out.
    assert len(messages) < 100


async def test_a_slow_job_does_not_hold_back_the_others_of_its_batch() -> None:
    async with local_relay() as local:
        call = local.stub.RunBatches()
        await call.write(batch(job("slow", "sleep", b"400"), job("fast-1"), job("fast-2")))
        first = await asyncio.wait_for(call.read(), 5)
        await call.done_writing()
        rest, ended = await read_until_end(call)

    assert isinstance(first, ResultBatch)
    assert {r.job_id for r in first.results} == {"fast-1", "fast-2"}
    assert [r.job_id for m in rest for r in m.results] == ["slow"]
    assert ended is None


async def test_a_bad_job_in_a_batch_is_that_jobs_result_and_the_rest_run() -> None:
    requests = batch(
        job("good-1", "echo", b"a"),
        job("bad id", "echo"),
        job("unknown", "teleport"),
        job("too-big", "echo", b"x" * 2000),
        job("good-2", "fail", b"nope"),
    )
    async with local_relay(max_payload_bytes=1000) as local:
        call = local.stub.RunBatches(iter([requests, batch(job("good-3", "echo", b"b"))]))
        messages, ended = await read_until_end(call)

    assert ended is None
    answers = results_of(messages)
    assert answers["good-1"].output == b"a"
    assert answers["good-3"].output == b"b"
    assert answers["good-2"].error.reason == "JOB_FAILED"
    assert answers["bad id"].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert answers["unknown"].error.reason == "UNKNOWN_KIND"
    assert answers["too-big"].error.reason == "PAYLOAD_TOO_LARGE"
    assert answers["too-big"].status == FAILED


async def test_duplicates_within_and_across_batches_run_once() -> None:
    counting = CountingKinds()
    async with local_relay(kinds=counting.kinds) as local:
        call = local.stub.RunBatches()
        await call.write(batch(job("same", "count", b"wait"), job("same", "count", b"wait")))
        await wait_until(lambda: counting.runs == ["same"])
        await call.write(batch(job("same", "count", b"wait")))
        counting.gate.set()
        await call.done_writing()
        messages, ended = await read_until_end(call)

    assert ended is None
    assert counting.runs == ["same"]
    replayed = sorted(r.replayed for m in messages for r in m.results)
    assert replayed == [False, True, True]


async def test_an_empty_batch_is_harmless() -> None:
    async with local_relay() as local:
        call = local.stub.RunBatches(iter([batch(), batch(job("after-empty"))]))
        messages, ended = await read_until_end(call)

    assert ended is None
    assert list(results_of(messages)) == ["after-empty"]


async def test_a_message_that_is_not_a_batch_ends_the_call_invalid_argument() -> None:
    async with local_relay() as local:
        raw: Any = local.channel.stream_stream("/bunnyrelay.v1.JobService/RunBatches")
        good = batch(job("before", "echo", b"ok")).SerializeToString()
        call = raw(iter([good, b"\xff\xff\xff"]))
        messages, ended = await read_until_end(call)
        await wait_until(lambda: local.relay.in_flight == 0)

    answered = results_of([ResultBatch.FromString(m) for m in messages])
    # The job before the bad message was answered; the bad one ended the call clearly.
    assert answered["before"].output == b"ok"
    assert ended is not None
    assert ended.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "JobBatch" in (ended.details() or "")


async def test_a_draining_relay_ends_an_idle_batch_stream_unavailable() -> None:
    async with local_relay() as local:
        call = local.stub.RunBatches()
        await call.write(batch(job("before-drain", "sleep", b"100")))
        first = await asyncio.wait_for(call.read(), 5)
        drained = asyncio.create_task(local.relay.drain())
        messages, ended = await read_until_end(call)
        await drained

    assert isinstance(first, ResultBatch)
    assert [r.job_id for r in first.results] == ["before-drain"]
    assert messages == []
    assert ended is not None
    assert ended.code() == grpc.StatusCode.UNAVAILABLE
