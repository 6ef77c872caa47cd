"""The CLIENT span of each RPC attempt and the ``rpc.client.duration`` metric, on providers
of the test's own: names and attributes as the conventions have them, W3C context out, an
unsampled job making no span, and a stream's jobs leaving the call's duration to the call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import NamedTuple

import grpc
import pytest
from opentelemetry import baggage, context, propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.metrics.export import HistogramDataPoint
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    StatusCode,
    TraceFlags,
    TraceState,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from bunny.relaypool import RelayEndpoint
from bunny.rpcspans import AttemptRecord, RpcSpans
from bunnyrelay import semconv
from bunnyrelay.keeping import KeepingTracerProvider
from bunnyrelay.keepsettings import KeepSettings
from bunnyrelay.v1 import jobs_pb2, jobs_pb2_grpc
from tests.metrics_capture import MetricsCapture


class Telemetry:
    def __init__(self, *, sampled: bool = True) -> None:
        self.spans = InMemorySpanExporter()
        sampler = None if sampled else ParentBased(ALWAYS_OFF)
        self.tracers = TracerProvider(sampler=sampler) if sampler else TracerProvider()
        self.tracers.add_span_processor(SimpleSpanProcessor(self.spans))
        self.metrics = MetricsCapture()
        self.meters = self.metrics.provider
        self.rpc = RpcSpans(self.tracers.get_tracer("test"), self.meters.get_meter("test"))

    def durations(self) -> dict[tuple[str, int], int]:
        """(method, status code) -> how many durations were recorded."""
        data = self.metrics.collect()
        assert data is not None
        counts: dict[tuple[str, int], int] = {}
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name != semconv.METRIC_RPC_CLIENT_DURATION:
                        continue
                    for point in metric.data.data_points:
                        assert isinstance(point, HistogramDataPoint)
                        attributes = dict(point.attributes or {})
                        code = attributes[semconv.RPC_GRPC_STATUS_CODE]
                        assert isinstance(code, int)
                        counts[str(attributes[semconv.RPC_METHOD]), code] = point.count
        return counts


def _sent(metadata: grpc.aio.Metadata) -> tuple[int, int, bool]:
    """Trace id, parent span id and the sampled flag of the W3C context sent with a call."""
    traceparent = metadata["traceparent"]
    assert isinstance(traceparent, str)
    version, trace_id, span_id, flags = traceparent.split("-")
    assert version == "00"
    return int(trace_id, 16), int(span_id, 16), bool(int(flags, 16) & 1)


@pytest.fixture
async def endpoint() -> AsyncIterator[RelayEndpoint]:
    # Never dialled: a channel connects only when a call is made.
    channel = grpc.aio.insecure_channel("ipv4:10.20.0.5:50051")
    yield RelayEndpoint(
        "relay.private.aws.internal",
        "10.20.0.5",
        50051,
        channel,
        jobs_pb2_grpc.JobServiceStub(channel),
    )
    await channel.close()


class TwoAttempts(NamedTuple):
    job: Span
    first: AttemptRecord
    second: AttemptRecord
    failed: ReadableSpan
    passed: ReadableSpan


def _unavailable_then_ok(
    telemetry: Telemetry, endpoint: RelayEndpoint, **extra: AttributeValue
) -> TwoAttempts:
    """A job whose first attempt failed UNAVAILABLE and whose second went well; checks the
    two CLIENT spans' names and the failed one's attributes (with ``extra``)."""
    job = telemetry.tracers.get_tracer("test").start_span("job.submit")

    with trace.use_span(job, end_on_exit=True):
        with telemetry.rpc.attempt("Run", endpoint, 1) as first:
            first.code = grpc.StatusCode.UNAVAILABLE
        with telemetry.rpc.attempt("Run", endpoint, 2) as second:
            pass

    attempts = [s for s in telemetry.spans.get_finished_spans() if s.kind is SpanKind.CLIENT]
    assert [s.name for s in attempts] == ["bunnyrelay.v1.JobService/Run"] * 2
    failed, passed = attempts
    assert dict(failed.attributes or {}) == {
        semconv.RPC_SYSTEM: "grpc",
        semconv.RPC_SERVICE: "bunnyrelay.v1.JobService",
        semconv.RPC_METHOD: "Run",
        semconv.SERVER_ADDRESS: "relay.private.aws.internal",
        semconv.SERVER_PORT: 50051,
        semconv.NETWORK_PEER_ADDRESS: "10.20.0.5",
        semconv.NETWORK_PEER_PORT: 50051,
        semconv.JOB_ATTEMPT: 1,
        semconv.RPC_GRPC_STATUS_CODE: 14,
        semconv.ERROR_TYPE: "UNAVAILABLE",
        **extra,
    }
    assert failed.status.status_code is StatusCode.ERROR
    assert passed.status.status_code is StatusCode.UNSET
    assert (passed.attributes or {})[semconv.JOB_ATTEMPT] == 2
    assert (passed.attributes or {})[semconv.RPC_GRPC_STATUS_CODE] == 0
    return TwoAttempts(job, first, second, failed, passed)


async def test_each_attempt_is_a_client_span_under_the_job_with_its_context_sent_along(
    endpoint: RelayEndpoint,
) -> None:
    telemetry = Telemetry()
    job, first, second, failed, passed = _unavailable_then_ok(telemetry, endpoint)
    for span, record in ((failed, first), (passed, second)):
        assert span.parent is not None
        assert span.parent.span_id == job.get_span_context().span_id
        assert span.context is not None
        assert _sent(record.metadata) == (span.context.trace_id, span.context.span_id, True)
    assert telemetry.durations() == {("Run", 14): 1, ("Run", 0): 1}


async def test_an_unsampled_job_makes_no_attempt_span_and_sends_its_own_context(
    endpoint: RelayEndpoint,
) -> None:
    telemetry = Telemetry(sampled=False)
    job = telemetry.tracers.get_tracer("test").start_span("job.submit")

    with trace.use_span(job, end_on_exit=True), telemetry.rpc.attempt("Run", endpoint, 1) as record:
        assert record.span is job

    assert telemetry.spans.get_finished_spans() == ()
    context = job.get_span_context()
    assert _sent(record.metadata) == (context.trace_id, context.span_id, False)
    assert telemetry.durations() == {("Run", 0): 1}, "the call is still measured"


class KeepingTelemetry(Telemetry):
    """Nothing sampled, failed, retried and slow jobs kept: as bunny runs at a low rate."""

    def __init__(self) -> None:
        super().__init__(sampled=False)
        self.tracers = KeepingTracerProvider(
            KeepSettings(), resource=Resource.create(), sampler=ParentBased(ALWAYS_OFF)
        )
        export = SimpleSpanProcessor(self.spans)
        self.tracers.add_span_processor(export)
        self.tracers.keeper.connect(export, self.meters.get_meter("keeping"))
        self.rpc = RpcSpans(self.tracers.get_tracer("test"), self.meters.get_meter("test"))


async def test_an_unsampled_retried_job_keeps_each_attempt_with_the_context_it_sent(
    endpoint: RelayEndpoint,
) -> None:
    telemetry = KeepingTelemetry()
    job, first, second, failed, passed = _unavailable_then_ok(
        telemetry, endpoint, **{semconv.SAMPLING_KEPT: "retried"}
    )
    assert failed.end_time is not None
    assert passed.start_time is not None
    assert failed.end_time <= passed.start_time, "each attempt keeps its own times"
    for span, record in ((failed, first), (passed, second)):
        assert span.parent is not None
        assert span.parent.span_id == job.get_span_context().span_id
        assert span.context is not None
        # relay's spans go under the attempt that carried them; the flag says what bunny's
        # head sampler decided.
        assert _sent(record.metadata) == (span.context.trace_id, span.context.span_id, False)
    assert telemetry.durations() == {("Run", 14): 1, ("Run", 0): 1}


async def test_an_unsampled_job_that_went_well_exports_nothing_and_sends_its_trace(
    endpoint: RelayEndpoint,
) -> None:
    telemetry = KeepingTelemetry()
    job = telemetry.tracers.get_tracer("test").start_span("job.submit")

    with trace.use_span(job, end_on_exit=True), telemetry.rpc.attempt("Run", endpoint, 1) as record:
        pass

    assert telemetry.spans.get_finished_spans() == ()
    trace_id, _, sampled = _sent(record.metadata)
    assert (trace_id, sampled) == (job.get_span_context().trace_id, False)


class _TraceContextOfOurOwn(TraceContextTextMapPropagator):
    """A propagator bunny cannot see inside: only its own inject can tell its headers."""


_PROPAGATORS = pytest.mark.parametrize(
    "textmap",
    [
        CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()]),
        CompositePropagator([W3CBaggagePropagator(), TraceContextTextMapPropagator()]),
        TraceContextTextMapPropagator(),
        CompositePropagator([_TraceContextOfOurOwn(), W3CBaggagePropagator()]),
    ],
    ids=["default", "baggage-first", "tracecontext-alone", "unknown"],
)
_BAGGAGE = pytest.mark.parametrize("with_baggage", [False, True], ids=["no-baggage", "baggage"])


@_PROPAGATORS
@_BAGGAGE
async def test_a_noted_attempt_sends_what_the_propagators_would_send_with_it_current(
    endpoint: RelayEndpoint, textmap: TextMapPropagator, with_baggage: bool
) -> None:
    telemetry = KeepingTelemetry()
    job = telemetry.tracers.get_tracer("test").start_span("job.submit")
    configured = propagate.get_global_textmap()
    propagate.set_global_textmap(textmap)
    inside = trace.set_span_in_context(job)
    token = context.attach(
        baggage.set_baggage("tenant", "blue", inside) if with_baggage else inside
    )
    try:
        with telemetry.rpc.attempt("Run", endpoint, 1) as record:
            noted = record.span
            assert noted is not job
            expected: dict[str, str] = {}
            propagate.inject(expected, context=trace.set_span_in_context(noted))
    finally:
        context.detach(token)
        propagate.set_global_textmap(configured)
        job.end()

    assert dict(record.metadata) == expected
    assert {name: record.header(name) for name in expected} == expected
    assert _sent(record.metadata) == (
        job.get_span_context().trace_id,
        noted.get_span_context().span_id,
        False,
    )
    if with_baggage and not isinstance(textmap, TraceContextTextMapPropagator):
        assert expected["baggage"] == "tenant=blue"


@_PROPAGATORS
@_BAGGAGE
@pytest.mark.parametrize("state", ["", "vendor=blue"], ids=["no-tracestate", "tracestate"])
async def test_an_unsampled_attempt_sends_what_the_propagators_would_send_with_its_job_current(
    endpoint: RelayEndpoint, textmap: TextMapPropagator, with_baggage: bool, state: str
) -> None:
    telemetry = Telemetry(sampled=False)
    job = NonRecordingSpan(
        SpanContext(
            0xABC,
            0xDEF,
            is_remote=False,
            trace_flags=TraceFlags(TraceFlags.RANDOM_TRACE_ID),
            trace_state=TraceState.from_header([state]) if state else None,
        )
    )
    configured = propagate.get_global_textmap()
    propagate.set_global_textmap(textmap)
    inside = trace.set_span_in_context(job)
    inside = baggage.set_baggage("tenant", "blue", inside) if with_baggage else inside
    token = context.attach(inside)
    try:
        with telemetry.rpc.attempt("Run", endpoint, 1) as record:
            assert record.span is job
            expected: dict[str, str] = {}
            propagate.inject(expected)
    finally:
        context.detach(token)
        propagate.set_global_textmap(configured)

    assert dict(record.metadata) == expected
    assert expected["traceparent"] == f"00-{0xABC:032x}-{0xDEF:016x}-02"
    if state:
        assert expected["tracestate"] == state


@pytest.mark.parametrize("keeping", [False, True], ids=["plain", "keeping"])
async def test_a_job_on_a_stream_carries_in_its_message_what_a_call_would_send(
    endpoint: RelayEndpoint, keeping: bool
) -> None:
    telemetry = KeepingTelemetry() if keeping else Telemetry(sampled=False)
    job = telemetry.tracers.get_tracer("test").start_span("job.submit")
    carried = jobs_pb2.TraceContext()

    with trace.use_span(job, end_on_exit=True):
        with telemetry.rpc.attempt("RunBatches", endpoint, 1, in_message=True) as record:
            record.write_trace_context(carried)
        with telemetry.rpc.attempt("RunBatches", endpoint, 1) as sent:
            pass

    assert telemetry.spans.get_finished_spans() == ()
    expected = record.span.get_span_context()
    assert _sent(grpc.aio.Metadata(("traceparent", carried.traceparent))) == (
        expected.trace_id,
        expected.span_id,
        False,
    )
    # The same trace, and (kept or not) the same parent relay would see in call metadata.
    assert carried.traceparent[:36] == sent.header("traceparent")[:36]
    assert carried.tracestate == ""


async def test_a_job_on_a_stream_leaves_the_duration_to_the_stream_call(
    endpoint: RelayEndpoint,
) -> None:
    telemetry = Telemetry()

    with telemetry.rpc.attempt("RunBatches", endpoint, 1, measured=False):
        pass
    telemetry.rpc.record_duration("RunBatches", grpc.StatusCode.OK, 0.25)

    assert telemetry.durations() == {("RunBatches", 0): 1}


async def test_two_instances_share_nothing(endpoint: RelayEndpoint) -> None:
    one, other = Telemetry(), Telemetry()

    with one.rpc.attempt("Run", endpoint, 1):
        pass

    assert len(one.spans.get_finished_spans()) == 1
    assert other.spans.get_finished_spans() == ()
    assert other.metrics.collect() is None or other.durations() == {}
