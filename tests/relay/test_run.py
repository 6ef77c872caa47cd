"""JobService.Run through a real gRPC server: statuses, idempotency, deadlines, overload."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import Awaitable
from typing import Any

import grpc
import pytest

from bunnyrelay.logs import configure_logging
from bunnyrelay.v1.jobs_pb2 import JobStatus
from relay.kinds.sleep import SLEEP_MAX_MS
from tests.relay.harness import (
    CountingKinds,
    WatchedStore,
    details,
    error_info,
    job,
    local_relay,
    rich_status,
    trailing,
    wait_until,
)

SUCCEEDED = JobStatus.JOB_STATUS_SUCCEEDED
FAILED = JobStatus.JOB_STATUS_FAILED


async def _refused(call: Awaitable[object]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def test_builtin_kinds_answer_with_output_instance_and_timings() -> None:
    async with local_relay() as local:
        echo = await local.stub.Run(job("e-1", "echo", b"hello"))
        digest = await local.stub.Run(job("h-1", "sha256", b"abc"))
        slept = await local.stub.Run(job("s-1", "sleep", b"20"))

    assert (echo.status, echo.output) == (SUCCEEDED, b"hello")
    assert digest.output == b"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert slept.status == SUCCEEDED
    assert echo.relay_instance == "relay-test"
    assert not echo.replayed
    timings = slept.timings
    assert timings.received_at.ToNanoseconds() <= timings.started_at.ToNanoseconds()
    assert timings.started_at.ToNanoseconds() + 20_000_000 <= timings.finished_at.ToNanoseconds()


@pytest.mark.parametrize(
    ("job_id", "kind", "field", "reason"),
    [
        ("", "echo", "job_id", "INVALID_JOB_ID"),
        ("has space", "echo", "job_id", "INVALID_JOB_ID"),
        ("x" * 129, "echo", "job_id", "INVALID_JOB_ID"),
        ("ok-id", "", "kind", "MISSING_KIND"),
    ],
    ids=["missing-id", "bad-characters", "too-long", "empty-kind"],
)
async def test_invalid_request_is_invalid_argument_naming_the_field(
    job_id: str, kind: str, field: str, reason: str
) -> None:
    async with local_relay() as local:
        error = await _refused(local.stub.Run(job(job_id, kind)))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in details(error)
    assert error_info(error).reason == reason
    assert error_info(error).domain == "relay.bunnyrelay.v1"


async def test_bytes_that_are_not_a_job_request_are_invalid_argument() -> None:
    async with local_relay() as local:
        raw: Any = local.channel.unary_unary("/bunnyrelay.v1.JobService/Run")
        error = await _refused(raw(b"\xff\xff\xff"))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid bunnyrelay.v1.JobRequest" in details(error)
    assert error_info(error).reason == "UNREADABLE_REQUEST"


async def test_unknown_kind_is_not_found_and_lists_the_known_kinds() -> None:
    async with local_relay() as local:
        error = await _refused(local.stub.Run(job("u-1", "resize-image")))

    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "'resize-image'" in details(error)
    assert "echo, fail, sha256, sleep, wordcount" in details(error)
    assert error_info(error).metadata["known_kinds"] == "echo,fail,sha256,sleep,wordcount"


@pytest.mark.parametrize("size", [1025, 2048], ids=["one-byte-over", "double"])
async def test_oversized_payload_is_resource_exhausted_naming_limit_and_size(size: int) -> None:
    async with local_relay(max_payload_bytes=1024) as local:
        error = await _refused(local.stub.Run(job("big-1", "echo", b"x" * size)))
        fits = await local.stub.Run(job("big-2", "echo", b"x" * 1024))

    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"payload is {size} bytes" in details(error)
    assert "limit of 1024 bytes" in details(error)
    assert error_info(error).reason == "PAYLOAD_TOO_LARGE"
    assert trailing(error, "grpc-retry-pushback-ms") is None
    assert fits.status == SUCCEEDED


async def test_over_the_in_flight_limit_is_resource_exhausted_with_pushback() -> None:
    async with local_relay(max_in_flight=2) as local:
        running = [local.stub.Run(job(f"slow-{i}", "sleep", b"10000")) for i in range(2)]
        try:
            await wait_until(lambda: local.relay.in_flight == 2)
            error = await _refused(local.stub.Run(job("third", "echo")))
        finally:
            for call in running:
                call.cancel()
        await wait_until(lambda: local.relay.in_flight == 0)
        after = await local.stub.Run(job("fourth", "echo"))

    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "--max-in-flight" in details(error)
    pushback = trailing(error, "grpc-retry-pushback-ms")
    assert pushback is not None
    assert int(pushback) >= 50
    assert error_info(error).reason == "OVERLOADED"
    assert len(rich_status(error).details) == 2  # ErrorInfo and RetryInfo
    assert after.status == SUCCEEDED


async def test_job_failed_is_a_failed_result_not_a_status() -> None:
    async with local_relay() as local:
        failed = await local.stub.Run(job("f-1", "fail", b"disk on fire"))
        bad_sleep = await local.stub.Run(job("f-2", "sleep", b"soon"))
        too_long = await local.stub.Run(job("f-3", "sleep", str(SLEEP_MAX_MS + 1).encode()))

    assert failed.status == FAILED
    assert (failed.error.reason, failed.error.message) == ("JOB_FAILED", "disk on fire")
    assert failed.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert not failed.error.retryable
    assert bad_sleep.error.reason == "INVALID_PAYLOAD"
    assert "milliseconds" in bad_sleep.error.message
    assert "b'soon'" in bad_sleep.error.message
    assert bad_sleep.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "limited to 600000 ms" in too_long.error.message


async def test_a_handler_bug_is_a_failed_result_and_relay_keeps_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    counting = CountingKinds()
    async with local_relay(kinds=counting.kinds) as local:
        crashed = await local.stub.Run(job("c-1", "crash"))
        after = await local.stub.Run(job("c-2", "echo", b"still here"))

    assert crashed.status == FAILED
    assert crashed.error.reason == "HANDLER_ERROR"
    assert crashed.error.code == grpc.StatusCode.UNKNOWN.value[0]
    assert "ZeroDivisionError" in crashed.error.message
    assert "a bug in a handler" not in crashed.error.message  # internals stay in the log
    assert after.output == b"still here"
    (record,) = [r for r in caplog.records if getattr(r, "event", "") == "job.handler_error"]
    assert record.exc_info is not None


async def test_resubmitting_the_same_job_replays_the_result_without_running_again() -> None:
    counting = CountingKinds()
    async with local_relay(kinds=counting.kinds) as local:
        first = await local.stub.Run(job("idem-1", "count", b"x", owner="a"))
        second = await local.stub.Run(job("idem-1", "count", b"x", owner="a"))
        other = await local.stub.Run(job("idem-2", "count", b"x", owner="a"))

    assert counting.runs == ["idem-1", "idem-2"]
    assert not first.replayed
    assert second.replayed
    assert second.output == first.output == b"run 1"
    assert second.timings == first.timings
    assert not other.replayed


async def test_same_id_with_a_different_request_is_already_exists() -> None:
    async with local_relay() as local:
        await local.stub.Run(job("dup-1", "sha256", b"one"))
        payload = await _refused(local.stub.Run(job("dup-1", "sha256", b"two")))
        kind = await _refused(local.stub.Run(job("dup-1", "echo", b"one")))
        attrs = await _refused(local.stub.Run(job("dup-1", "sha256", b"one", tenant="b")))

    for error in (payload, kind, attrs):
        assert error.code() == grpc.StatusCode.ALREADY_EXISTS
        assert "'dup-1' was already used for a different request" in details(error)
        assert error_info(error).reason == "JOB_ID_REUSED"


async def test_concurrent_duplicates_wait_for_the_first_run_instead_of_running_twice() -> None:
    counting = CountingKinds()
    store = WatchedStore()
    async with local_relay(kinds=counting.kinds, idempotency_store=store) as local:
        calls = [local.stub.Run(job("conc-1", "count", b"wait")) for _ in range(3)]
        await store.reached(3)  # the first runs, the two duplicates wait for it
        assert counting.runs == ["conc-1"]
        counting.gate.set()
        results = await asyncio.gather(*calls)

    assert counting.runs == ["conc-1"]
    assert sorted(r.replayed for r in results) == [False, True, True]
    assert {r.output for r in results} == {b"run 1"}


async def test_deadline_ends_the_job_on_the_server_and_leaves_no_result_behind() -> None:
    counting = CountingKinds()
    async with local_relay(kinds=counting.kinds) as local:
        started = time.monotonic()
        error = await _refused(local.stub.Run(job("late-1", "sleep", b"5000"), timeout=0.5))
        await wait_until(lambda: local.relay.in_flight == 0, within=1.0)
        server_done = time.monotonic() - started
        gated = await _refused(local.stub.Run(job("late-2", "count", b"wait"), timeout=0.3))
        await wait_until(lambda: local.relay.in_flight == 0, within=1.0)
        counting.gate.set()
        retried = await local.stub.Run(job("late-2", "count", b"wait"), timeout=5)

    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert gated.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The 5 s sleep did not keep its slot: the server let go with the caller.
    assert server_done < 2.0
    assert counting.runs == ["late-2", "late-2"]
    assert retried.status == SUCCEEDED
    assert not retried.replayed


async def test_log_executions_writes_one_job_executed_line_per_execution() -> None:
    stream = io.StringIO()
    logger = configure_logging("relay.test-json", fmt="json", stream=stream)
    async with local_relay(logger=logger, log_format="json", log_executions=True) as local:
        await local.stub.Run(job("log-1", "echo", b"a"))
        await local.stub.Run(job("log-1", "echo", b"a"))  # replayed: not executed again
        await local.stub.Run(job("log-2", "fail", b"no"))

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    executed = [line for line in lines if line.get("event") == "job.executed"]
    assert [(line["job_id"], line["status"]) for line in executed] == [
        ("log-1", "SUCCEEDED"),
        ("log-2", "FAILED"),
    ]
    assert all(len(line["trace_id"]) in (0, 32) for line in executed)


async def test_without_log_executions_job_executed_lines_wait_for_debug() -> None:
    stream = io.StringIO()
    logger = configure_logging("relay.test-quiet", fmt="json", stream=stream)
    async with local_relay(logger=logger, log_format="json") as local:
        await local.stub.Run(job("quiet-1", "echo", b"a"))
    logger.setLevel(logging.DEBUG)
    async with local_relay(logger=logger, log_format="json") as local:
        await local.stub.Run(job("loud-1", "echo", b"a"))

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    executed = [line for line in lines if line.get("event") == "job.executed"]
    assert [(line["job_id"], line["level"]) for line in executed] == [("loud-1", "DEBUG")]
