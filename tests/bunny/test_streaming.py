"""bunny's stream runner against a real relay: jobs share RunBatches messages when many wait.

The batches are observed on the wire, by a relay whose ``parse_batch`` (the
server's deserializer) records how many jobs each message held.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from bunny.relaypool import RelayPool
from bunny.streaming import BATCH_BYTES, StreamSubmitter
from bunny.submitter import SubmitSettings
from bunny.targets import LiteralAddress
from bunnyrelay.v1 import jobs_pb2
from relay import server as relay_server
from relay.checks import parse_batch
from tests.relay.harness import job, local_relay, wait_until


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> list[jobs_pb2.JobBatch]:
    """Every RunBatches message the relay under test receives, as parsed."""
    seen: list[jobs_pb2.JobBatch] = []

    def recording(data: bytes) -> jobs_pb2.JobBatch:
        parsed = parse_batch(data)
        seen.append(parsed)
        return parsed

    monkeypatch.setattr(relay_server, "parse_batch", recording)
    return seen


@asynccontextmanager
async def stream_runner(
    max_payload_bytes: int = 1024 * 1024, timeout_s: float = 20.0
) -> AsyncIterator[StreamSubmitter]:
    async with local_relay(max_payload_bytes=max_payload_bytes) as local:
        port = local.relay.port
        pool = RelayPool(LiteralAddress("127.0.0.1"), "127.0.0.1", port)
        runner = StreamSubmitter(pool, SubmitSettings(timeout_s=timeout_s))
        try:
            yield runner
        finally:
            await runner.close()
            await pool.close(grace=1.0)


async def test_many_waiting_jobs_share_messages_and_each_is_answered_once(
    batches: list[jobs_pb2.JobBatch],
) -> None:
    async with stream_runner() as runner:
        outcomes = await asyncio.gather(
            *(runner.run(job(f"job-{i}", "echo", b"%d" % i)) for i in range(200))
        )

    assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok]
    assert [o.output for o in outcomes] == [b"%d" % i for i in range(200)]
    sent = [request.job_id for message in batches for request in message.jobs]
    assert sorted(sent) == sorted(f"job-{i}" for i in range(200))  # each sent exactly once
    assert len(batches) < 200
    # No message held more than a quarter of the jobs waiting, so several were in flight.
    assert max(len(message.jobs) for message in batches) <= 50


async def test_a_lone_job_is_sent_alone_at_once(batches: list[jobs_pb2.JobBatch]) -> None:
    async with stream_runner() as runner:
        first = await asyncio.wait_for(runner.run(job("alone-1", "echo", b"a")), 5)
        second = await asyncio.wait_for(runner.run(job("alone-2", "echo", b"b")), 5)

    assert (first.output, second.output) == (b"a", b"b")
    assert [[r.job_id for r in message.jobs] for message in batches] == [["alone-1"], ["alone-2"]]


async def test_large_jobs_never_make_a_message_larger_than_the_bound(
    batches: list[jobs_pb2.JobBatch],
) -> None:
    payload = b"x" * (BATCH_BYTES // 3)
    async with stream_runner() as runner:
        outcomes = await asyncio.gather(
            *(runner.run(job(f"big-{i}", "echo", payload)) for i in range(24))
        )

    assert all(o.ok and o.output == payload for o in outcomes)
    assert sum(len(message.jobs) for message in batches) == 24
    assert all(message.ByteSize() <= BATCH_BYTES for message in batches)
    assert any(len(message.jobs) > 1 for message in batches)


async def test_the_same_job_id_twice_at_once_gets_two_answers_one_replayed() -> None:
    # relay answers each submission of an id; each answer goes to one waiting caller.
    async with stream_runner() as runner:
        outcomes = await asyncio.wait_for(
            asyncio.gather(
                runner.run(job("twice", "sleep", b"200")),
                runner.run(job("twice", "sleep", b"200")),
                runner.run(job("once", "echo", b"x")),
            ),
            10,
        )

    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    assert sorted(o.replayed for o in outcomes[:2]) == [False, True]
    assert outcomes[2].output == b"x"


async def test_a_job_past_its_deadline_fails_at_the_deadline_and_the_stream_carries_on() -> None:
    async with stream_runner(timeout_s=0.5) as runner:
        started = time.monotonic()
        late, quick = await asyncio.wait_for(
            asyncio.gather(
                runner.run(job("late", "sleep", b"3000")), runner.run(job("quick", "echo", b"q"))
            ),
            10,
        )
        waited = time.monotonic() - started
        after = await asyncio.wait_for(runner.run(job("after", "echo", b"a")), 5)

    assert late.error is not None
    assert late.error.type == "JobDeadlineExceeded", late.error
    # Not before the job's deadline, and not held until relay's answer (3 s later).
    assert 0.5 <= waited < 2.5
    assert (quick.output, after.output) == (b"q", b"a")


async def test_a_job_too_large_for_relay_fails_alone_and_the_stream_carries_on(
    batches: list[jobs_pb2.JobBatch],
) -> None:
    # relay (64 KiB payloads) refuses any message past 2 x 64 KiB + 64 KiB at the gRPC
    # layer, for the whole call: sent on the stream, this job would fail every job with it.
    too_large = job("too-large", "echo", b"x" * (300 * 1024))
    async with stream_runner(max_payload_bytes=64 * 1024) as runner:
        small = [
            asyncio.ensure_future(runner.run(job(f"small-{i}", "sleep", b"300"))) for i in range(40)
        ]
        # Once relay has them all, the small jobs are on the stream, waiting for their results.
        await wait_until(lambda: sum(len(message.jobs) for message in batches) >= 40)
        large = await asyncio.wait_for(runner.run(too_large), 10)
        later = await asyncio.wait_for(runner.run(job("later", "echo", b"after")), 10)
        outcomes = await asyncio.wait_for(asyncio.gather(*small), 10)

    assert not large.ok
    assert large.error is not None
    assert large.error.code == "RESOURCE_EXHAUSTED"
    assert large.error.type == "JobRejected"
    assert large.attempts == 1  # refused for its size: not retried
    assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok]
    assert all(o.attempts == 1 for o in outcomes)  # none had to move to a new stream
    assert later.ok
    assert later.output == b"after"
    assert all(r.job_id != "too-large" for message in batches for r in message.jobs)


async def test_a_job_past_relay_s_payload_limit_gets_relay_s_own_message(
    batches: list[jobs_pb2.JobBatch],
) -> None:
    async with stream_runner(max_payload_bytes=64 * 1024) as runner:
        outcome = await asyncio.wait_for(
            runner.run(job("over-limit", "echo", b"x" * (100 * 1024))), 10
        )

    assert not outcome.ok
    assert outcome.error is not None
    assert outcome.error.code == "RESOURCE_EXHAUSTED"
    assert outcome.error.reason == "PAYLOAD_TOO_LARGE"
    assert "102400" in outcome.error.message
    assert "65536" in outcome.error.message
