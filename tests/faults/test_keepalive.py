"""HTTP/2 keepalive between bunny and relay: relay accepts bunny's pings, and a call on a
connection that went silent (the VPN tunnel dropped without a word) fails over within
the keepalive timeout instead of waiting for its deadline.

Real relay, real Toxiproxy in between (:mod:`tests.faults.faultproxy`), bunny's own
pool and runner in the test's process.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest

from bunny.keepalive import Keepalive
from bunny.outcome import JobOutcome
from bunny.relaypool import RelayPool
from bunny.retry import RetryPolicy
from bunny.submitter import SubmitSettings, UnarySubmitter
from bunny.targets import LiteralAddress
from bunnyrelay.v1 import jobs_pb2
from lab.processes import relay_process
from tests.faults.faultproxy import SILENT_OUTAGE, fault_proxy
from tests.relaylog import wait_for_event

# The shortest interval bunny allows, and as short a timeout: the test waits seconds.
EAGER = Keepalive(interval_s=1.0, timeout_s=1.0)


def _runner(port: int, deadline_s: float) -> UnarySubmitter:
    pool = RelayPool(LiteralAddress("127.0.0.1"), "127.0.0.1", port, keepalive=EAGER)
    # One attempt: the test sees how the first call ended, not a retry's outcome.
    return UnarySubmitter(pool, SubmitSettings(timeout_s=deadline_s, retry=RetryPolicy(attempts=1)))


def _sleep_job(millis: int) -> jobs_pb2.JobRequest:
    return jobs_pb2.JobRequest(job_id=str(uuid.uuid4()), kind="sleep", payload=str(millis).encode())


@pytest.mark.timeout(60)
async def test_relay_accepts_pings_every_second_through_a_long_job_and_while_idle(
    capfd: pytest.CaptureFixture[str],
) -> None:
    async with relay_process("127.0.0.1:0", args=["--store", "memory"]) as relay:
        runner = _runner(relay.port, deadline_s=20)
        try:
            # Three seconds without data on the connection, a ping every second...
            long_job: JobOutcome = await runner.run(_sleep_job(3000))
            # ...then as long with no call at all, still pinging: the passing time is the subject.
            await asyncio.sleep(3)
            after_idle: JobOutcome = await runner.run(_sleep_job(10))
        finally:
            await runner.pool.close()

    assert (long_job.error, long_job.output) == (None, b"slept 3000 ms")
    assert (after_idle.error, after_idle.output) == (None, b"slept 10 ms")
    # gRPC's default server policy answers such pings with GOAWAY "too_many_pings"
    # (ENHANCE_YOUR_CALM): the connection is dropped and the client logs it, here.
    assert "too_many_pings" not in capfd.readouterr().err


@pytest.mark.timeout(90)
async def test_a_call_on_a_connection_gone_silent_fails_within_the_keepalive_timeout(
    tmp_path: Path,
) -> None:
    log = tmp_path / "relay.log"
    # DEBUG for relay's job.started line, which tells when the call is on the wire.
    args = ["--store", "memory", "--log-format", "json", "--log-level", "DEBUG"]
    async with (
        relay_process("127.0.0.1:0", args=args, log_path=log) as relay,
        fault_proxy(relay.port) as proxy,
    ):
        runner = _runner(proxy.port, deadline_s=30)
        try:
            request = _sleep_job(10_000)
            job = asyncio.ensure_future(runner.run(request))
            await wait_for_event(log, "job.started", job_id=request.job_id)
            assert not job.done()
            await proxy.apply(SILENT_OUTAGE)
            silent_at = time.monotonic()
            outcome: JobOutcome = await asyncio.wait_for(job, timeout=40)
            noticed_after = time.monotonic() - silent_at
        finally:
            await proxy.clear()
            await runner.pool.close()

    # Unanswered pings end the call UNAVAILABLE (which bunny retries, on a new
    # connection), in about interval + timeout: not at the 30 s deadline, and not
    # when the job would have finished anyway (10 s later).
    assert outcome.error is not None
    assert outcome.error.code == "UNAVAILABLE", outcome.error
    assert noticed_after < 6, noticed_after
