"""A job's root span with tracing off, made without the SDK's tracer: the ids and flags the SDK
would give it, a fresh unsampled trace sent to relay per job, and the SDK asked whenever
anything else could come out."""

from __future__ import annotations

import contextlib
import random
import re
from collections.abc import AsyncIterator

import grpc
import pytest
from opentelemetry import propagate, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    DEFAULT_OFF,
    DEFAULT_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from bunny.droppedroots import dropped_root_maker
from bunny.relaypool import RelayPool
from bunny.submitter import SubmitSettings, UnarySubmitter
from bunny.targets import LiteralAddress
from bunny.tracing import BunnyTelemetry
from bunnyrelay.keeping import KeepingTracerProvider
from bunnyrelay.keepsettings import KeepSettings
from bunnyrelay.v1 import jobs_pb2, jobs_pb2_grpc
from lab.bench import rawecho
from tests.relay.harness import job

_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_DROPPING = pytest.mark.parametrize(
    "sampler", [ALWAYS_OFF, DEFAULT_OFF], ids=["always_off", "parentbased_always_off"]
)


class _Recording(rawecho.EchoServicer):
    """relay's stand-in for what a call carried: the traceparent of each call."""

    def __init__(self) -> None:
        self.traceparents: list[str] = []

    async def Run(  # noqa: N802 - the proto's method name
        self,
        request: jobs_pb2.JobRequest,
        context: grpc.aio.ServicerContext[jobs_pb2.JobRequest, jobs_pb2.JobResult],
    ) -> jobs_pb2.JobResult:
        sent = dict(context.invocation_metadata() or ())
        self.traceparents.append(str(sent.get("traceparent", "")))
        return await super().Run(request, context)


@contextlib.asynccontextmanager
async def _submitter(
    servicer: _Recording, provider: TracerProvider
) -> AsyncIterator[UnarySubmitter]:
    server = grpc.aio.server()
    jobs_pb2_grpc.add_JobServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    pool = RelayPool(LiteralAddress("127.0.0.1"), "127.0.0.1", port)
    meters = MeterProvider()
    telemetry = BunnyTelemetry(tracer_provider=provider, meter_provider=meters)
    submitter = UnarySubmitter(pool, SubmitSettings(timeout_s=10), telemetry)
    try:
        yield submitter
    finally:
        await submitter.close()
        await pool.close()
        await server.stop(grace=None)
        meters.shutdown()


def _sdk_traceparent(provider: TracerProvider) -> str:
    """What the SDK's own root span of ``provider`` sends."""
    carrier: dict[str, str] = {}
    root = provider.get_tracer("test").start_span("job.submit")
    propagate.inject(carrier, trace.set_span_in_context(root))
    return carrier["traceparent"]


@_DROPPING
async def test_with_tracing_off_each_job_sends_relay_a_fresh_unsampled_trace_it_reports(
    sampler: Sampler,
) -> None:
    provider = TracerProvider(sampler=sampler)
    servicer = _Recording()
    async with _submitter(servicer, provider) as submitter:
        outcomes = [await submitter.run(job(f"job-{n}")) for n in range(3)]

    assert [outcome.ok for outcome in outcomes] == [True] * 3
    sent = [_TRACEPARENT.fullmatch(value) for value in servicer.traceparents]
    assert all(sent), servicer.traceparents
    # Each job's own trace, the id bunny reports (and logs), not sampled, flagged as the
    # SDK flags a root it drops.
    assert [m.group(1) for m in sent if m] == [outcome.trace_id for outcome in outcomes]
    assert len({outcome.trace_id for outcome in outcomes}) == 3
    assert len({m.group(2) for m in sent if m}) == 3
    sdk_flags = _sdk_traceparent(provider).split("-")[3]
    assert {m.group(3) for m in sent if m} == {sdk_flags}
    assert int(sdk_flags, 16) & TraceFlags.SAMPLED == 0


@_DROPPING
def test_a_dropped_root_has_the_ids_and_flags_the_sdk_would_give_it(sampler: Sampler) -> None:
    tracer = TracerProvider(sampler=sampler).get_tracer("test")
    make = dropped_root_maker(tracer)
    assert make is not None

    random.seed(15)
    sdk = tracer.start_span("job.submit")
    random.seed(15)
    ours = make()

    assert isinstance(sdk, NonRecordingSpan)
    assert ours == sdk.get_span_context()
    assert ours is not None
    assert (ours.is_remote, ours.trace_flags, dict(ours.trace_state)) == (
        False,
        sdk.get_span_context().trace_flags,
        {},
    )


@pytest.mark.parametrize(
    "sampler",
    [ALWAYS_ON, DEFAULT_ON, TraceIdRatioBased(0.0), ParentBased(TraceIdRatioBased(0.0))],
    ids=["always_on", "parentbased_always_on", "traceidratio", "parentbased_traceidratio"],
)
def test_a_sampler_that_may_keep_a_root_or_add_to_it_is_asked_by_the_sdk(
    sampler: Sampler,
) -> None:
    assert dropped_root_maker(TracerProvider(sampler=sampler).get_tracer("test")) is None


def test_a_tracer_that_counts_its_spans_or_keeps_is_left_to_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keeping = KeepingTracerProvider(KeepSettings(), resource=TracerProvider().resource)
    assert dropped_root_maker(keeping.get_tracer("test")) is None
    monkeypatch.setenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")
    counting = TracerProvider(sampler=ALWAYS_OFF).get_tracer("test")
    assert dropped_root_maker(counting) is None


async def test_a_job_started_under_a_span_is_that_span_s_trace_as_the_sdk_makes_it() -> None:
    provider = TracerProvider(sampler=ALWAYS_OFF)
    servicer = _Recording()
    caller = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(0))
    async with _submitter(servicer, provider) as submitter:
        with trace.use_span(NonRecordingSpan(caller)):
            outcome = await submitter.run(job("under-a-span"))

    assert outcome.ok
    assert outcome.trace_id == f"{0x1234:032x}"
    (sent,) = servicer.traceparents
    assert sent.startswith(f"00-{0x1234:032x}-")
    assert sent.split("-")[2] != f"{0x5678:016x}", "the job's own span, not its caller's"
