"""Hostile input to relay through real gRPC: it never crashes and always answers clearly.

Every JobRequest field is drawn by hypothesis (valid, invalid, oversized,
reused ids with other requests), as are raw bytes sent straight to every
method relay serves. relay must answer each with a result or a clear status
(never INTERNAL or UNKNOWN for the client's mistake) and be healthy after.
"""

from __future__ import annotations

import string
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import grpc
import pytest
from grpc_health.v1 import health_pb2
from hypothesis import given
from hypothesis import strategies as st

from bunnyrelay.v1 import jobs_pb2
from tests.relay.harness import (
    CountingKinds,
    Local,
    by_id,
    details,
    job,
    local_relay,
    wait_until,
)

T = TypeVar("T")

MAX_PAYLOAD = 1024

# A client's mistakes, and the statuses that say so. INTERNAL and UNKNOWN are relay's own
# failures and must never answer a request, whatever is in it.
CLEAR_STATUSES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.FAILED_PRECONDITION,
    }
)
RELAY_FAILURES = frozenset({grpc.StatusCode.INTERNAL.value[0], grpc.StatusCode.UNKNOWN.value[0]})

METHODS = {
    "/bunnyrelay.v1.JobService/Run": "unary_unary",
    "/bunnyrelay.v1.JobService/RunStream": "stream_stream",
    "/bunnyrelay.v1.JobService/RunBatches": "stream_stream",
    "/grpc.health.v1.Health/Check": "unary_unary",
    "/grpc.health.v1.Health/List": "unary_unary",
    "/grpc.health.v1.Health/Watch": "unary_stream",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": "stream_stream",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": "stream_stream",
}

# --- what hypothesis draws ------------------------------------------------------------------

_ID_CHARS = string.ascii_letters + string.digits + "._:-"
job_ids = st.one_of(
    st.text(_ID_CHARS, min_size=1, max_size=4),  # small: ids repeat, with other requests too
    st.text(_ID_CHARS, min_size=120, max_size=140),  # around the 128-character limit
    st.text(max_size=60),  # anything: spaces, unicode, NUL
)
kinds = st.one_of(
    st.sampled_from(["echo", "sha256", "fail", "sleep", "wordcount", "count"]),
    st.text(max_size=70),
)
payloads = st.one_of(
    st.binary(max_size=64),
    st.binary(min_size=MAX_PAYLOAD - 2, max_size=MAX_PAYLOAD + 2),
    st.binary(min_size=3 * MAX_PAYLOAD, max_size=4 * MAX_PAYLOAD),
    st.from_regex(rb"\A *[0-9]{1,12} *\Z"),  # sleep's milliseconds, sane and absurd
)
attributes = st.dictionaries(st.text(max_size=30), st.text(max_size=100), max_size=6)
traceparents = st.one_of(
    st.text(max_size=80),
    st.from_regex(r"\A00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]\Z"),
    st.just("00-" + "0" * 32 + "-" + "0" * 16 + "-01"),  # all-zero ids: invalid per W3C
)
requests = st.builds(
    jobs_pb2.JobRequest,
    job_id=job_ids,
    kind=kinds,
    payload=payloads,
    attributes=attributes,
    trace_context=st.builds(
        jobs_pb2.TraceContext, traceparent=traceparents, tracestate=st.text(max_size=80)
    ),
)
_PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F))
metadata = st.lists(
    st.one_of(
        st.tuples(st.just("traceparent"), st.text(_PRINTABLE, max_size=120)),
        st.tuples(st.just("tracestate"), st.text(_PRINTABLE, max_size=120)),
        st.tuples(st.just("x-hostile-bin"), st.binary(max_size=200)),
        st.tuples(st.text(string.ascii_lowercase + "-", min_size=1, max_size=20), st.just("x")),
    ),
    max_size=4,
)


@pytest.fixture
async def local() -> AsyncIterator[Local]:
    """One relay for every example of a test, with a small payload limit to run into."""
    async with local_relay(kinds=CountingKinds().kinds, max_payload_bytes=MAX_PAYLOAD) as relay:
        yield relay


async def _serving(local: Local) -> None:
    """relay's health check still says SERVING (checked after every example)."""
    health = await local.channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )(health_pb2.HealthCheckRequest(), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING


async def _still_healthy(local: Local) -> None:
    """Nothing left in flight, SERVING, and an ordinary job still runs."""
    await wait_until(lambda: local.relay.in_flight == 0)
    await _serving(local)
    fresh = await local.stub.Run(job("after-the-storm", "echo", b"still here"), timeout=5)
    assert fresh.output == b"still here"


async def _answer(call: Awaitable[T]) -> T | grpc.aio.AioRpcError:
    """The call's result, or the error it ended with."""
    try:
        return await call
    except grpc.aio.AioRpcError as error:
        return error


async def _send_raw(local: Local, method: str, data: bytes, timeout: float) -> None:
    """Send ``data`` as the request to ``method``, unserialized; read every response."""
    shape = METHODS[method]
    # Without serializers the multicallables send bytes as they are; their stubs cannot say so.
    channel: Any = local.channel
    if shape == "unary_unary":
        await channel.unary_unary(method)(data, timeout=timeout)
        return
    call: Any = (
        channel.unary_stream(method)(data, timeout=timeout)
        if shape == "unary_stream"
        else channel.stream_stream(method)(iter([data]), timeout=timeout)
    )
    async for _ in call:
        pass


def _assert_clear_result(request: jobs_pb2.JobRequest, result: jobs_pb2.JobResult) -> None:
    assert result.job_id == request.job_id
    assert result.status in (jobs_pb2.JOB_STATUS_SUCCEEDED, jobs_pb2.JOB_STATUS_FAILED)
    if result.status == jobs_pb2.JOB_STATUS_FAILED:
        assert result.error.code not in RELAY_FAILURES, result.error
        assert result.error.reason, result.error
        assert result.error.message, result.error


# --- the properties ---------------------------------------------------------------------------


@given(request=requests, headers=metadata)
async def test_any_request_gets_a_result_or_a_clear_status_from_run(
    local: Local, request: jobs_pb2.JobRequest, headers: list[tuple[str, Any]]
) -> None:
    answer = await _answer(local.stub.Run(request, metadata=tuple(headers), timeout=0.3))
    if isinstance(answer, grpc.aio.AioRpcError):
        assert answer.code() in CLEAR_STATUSES, (answer.code(), answer.details())
        assert details(answer), "a refusal says why"
    else:
        _assert_clear_result(request, answer)
    await _serving(local)


@given(batch=st.lists(requests, min_size=1, max_size=8))
async def test_any_stream_of_requests_gets_one_clear_answer_per_request(
    local: Local, batch: list[jobs_pb2.JobRequest]
) -> None:
    sent = [request for request in batch if request.kind != "sleep"]  # no deadline per job
    call = local.stub.RunStream(iter(sent), timeout=10)
    results = [result async for result in call]
    assert await call.code() == grpc.StatusCode.OK
    assert sorted(r.job_id for r in results) == sorted(r.job_id for r in sent)
    answers = by_id(results)
    for request in sent:
        _assert_clear_result(request, answers[request.job_id])
    await _serving(local)


@given(batches=st.lists(st.lists(requests, max_size=6), min_size=1, max_size=4))
async def test_any_stream_of_batches_gets_one_clear_answer_per_request(
    local: Local, batches: list[list[jobs_pb2.JobRequest]]
) -> None:
    sent = [[r for r in batch if r.kind != "sleep"] for batch in batches]
    call = local.stub.RunBatches(iter(jobs_pb2.JobBatch(jobs=b) for b in sent), timeout=10)
    results = [result for message in [m async for m in call] for result in message.results]
    assert await call.code() == grpc.StatusCode.OK
    flat = [request for batch in sent for request in batch]
    assert sorted(r.job_id for r in results) == sorted(r.job_id for r in flat)
    answers = by_id(results)
    for request in flat:
        _assert_clear_result(request, answers[request.job_id])
    await _serving(local)


def _truncations() -> st.SearchStrategy[bytes]:
    whole = job("truncated-1", "echo", b"p" * 40, key="value").SerializeToString()
    return st.integers(min_value=1, max_value=len(whole) - 1).map(lambda cut: whole[:cut])


@given(
    method=st.sampled_from(sorted(METHODS)),
    data=st.one_of(st.binary(max_size=300), _truncations()),
)
async def test_random_and_truncated_bytes_sent_straight_to_every_method_get_a_clear_status(
    local: Local, method: str, data: bytes
) -> None:
    # (Health/Watch streams until its deadline when the bytes happen to decode.)
    timeout = 0.2 if method.endswith("/Watch") else 2.0
    answer = await _answer(_send_raw(local, method, data, timeout))
    if isinstance(answer, grpc.aio.AioRpcError):
        assert answer.code() in CLEAR_STATUSES | {grpc.StatusCode.UNIMPLEMENTED}, (
            method,
            answer.code(),
            answer.details(),
        )
    await _serving(local)


async def test_bytes_that_do_not_decode_are_invalid_argument_naming_the_method(
    local: Local,
) -> None:
    garbage = b"\xff\xff\xff"
    for method in METHODS:
        if method.endswith("/RunStream"):
            # A stream goes on: the unreadable job gets its own INVALID_ARGUMENT result.
            channel: Any = local.channel
            call: Any = channel.stream_stream(
                method, response_deserializer=jobs_pb2.JobResult.FromString
            )(iter([garbage]), timeout=5)
            (answer,) = [result async for result in call]
            assert answer.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
            continue
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _send_raw(local, method, garbage, 5.0)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, method
        service = method.rsplit("/", 1)[0].lstrip("/")
        assert service in details(refused.value) or "JobRequest" in details(refused.value)
    await _still_healthy(local)


# --- sizes and deadlines ------------------------------------------------------------------------


async def test_oversized_messages_and_metadata_are_resource_exhausted_and_harm_nothing(
    local: Local,
) -> None:
    limit = local.relay.config.max_receive_message_bytes
    for payload in (b"x" * (MAX_PAYLOAD + 1), b"x" * (limit + 1)):
        with pytest.raises(grpc.aio.AioRpcError) as too_big:
            await local.stub.Run(job("big", "echo", payload), timeout=5)
        assert too_big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    for size in (9_000, 20_000, 200_000):
        answer = await _answer(
            local.stub.Run(job(f"meta-{size}"), metadata=(("x-large", "v" * size),), timeout=5)
        )
        if isinstance(answer, grpc.aio.AioRpcError):
            assert answer.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, answer.details()
    attributes = {f"k{n}": "v" * 100 for n in range(MAX_PAYLOAD)}  # fields other than payload
    with pytest.raises(grpc.aio.AioRpcError) as too_many:
        await local.stub.Run(
            jobs_pb2.JobRequest(job_id="attrs", kind="echo", attributes=attributes), timeout=5
        )
    assert too_many.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    await _still_healthy(local)


@pytest.mark.parametrize("timeout", [0.0, 1e-6, 1e-3, 0.02])
async def test_zero_and_tiny_deadlines_end_in_deadline_exceeded_and_leave_nothing_behind(
    timeout: float,
) -> None:
    counting = CountingKinds()
    async with local_relay(kinds=counting.kinds) as local:
        for kind, payload in (("sleep", b"50"), ("count", b""), ("echo", b"x")):
            answer = await _answer(
                local.stub.Run(job(f"tight-{kind}", kind, payload), timeout=timeout)
            )
            if isinstance(answer, grpc.aio.AioRpcError):
                assert answer.code() == grpc.StatusCode.DEADLINE_EXCEEDED, answer.details()
        # Whatever the deadline cut short was released: the same ids run (or replay) now.
        await wait_until(lambda: local.relay.in_flight == 0)
        for kind, payload in (("sleep", b"50"), ("count", b""), ("echo", b"x")):
            result = await local.stub.Run(job(f"tight-{kind}", kind, payload), timeout=5)
            assert result.status == jobs_pb2.JOB_STATUS_SUCCEEDED
        assert len(counting.runs) <= 2, "count ran at most once cut short and once whole"
        await _still_healthy(local)
