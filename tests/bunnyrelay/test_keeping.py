"""Keeping what went wrong: a provider that records lightly what the head sampler drops and
exports a local trace when its root ends badly, and its bounds.

Real SDK providers; the exporter is the SDK's in-memory one.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    DEFAULT_OFF,
    Decision,
    ParentBased,
    ParentBasedTraceIdRatio,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from bunnyrelay import semconv
from bunnyrelay.keeping import (
    KeepingTracer,
    KeepingTracerProvider,
    LightSpan,
    keeps_anything,
    records_dropped_traces,
)
from bunnyrelay.keepsettings import KeepSettings, parse_slower_than
from bunnyrelay.settings import SettingError
from bunnyrelay.telemetry import setup_telemetry

# What parentbased_traceidratio does at a rate that samples nothing: every root dropped.
NOTHING_SAMPLED = ParentBased(TraceIdRatioBased(0.0))
KEPT = semconv.SAMPLING_KEPT


class Pipeline:
    """A provider as setup_telemetry builds it when keeping is on: the keeping processor
    hands what it keeps to the export processor, which sees every span as well."""

    def __init__(self, settings: KeepSettings, head: ParentBased = NOTHING_SAMPLED) -> None:
        self.exported = InMemorySpanExporter()
        self.metrics = InMemoryMetricReader()
        meter = MeterProvider(metric_readers=[self.metrics]).get_meter("test")
        self.provider = KeepingTracerProvider(settings, resource=Resource.create(), sampler=head)
        export = SimpleSpanProcessor(self.exported)
        self.provider.add_span_processor(export)
        self.keeping = self.provider.keeper
        self.keeping.connect(export, meter)
        tracer = self.provider.get_tracer("test")
        assert isinstance(tracer, KeepingTracer)
        self.tracer = tracer

    def spans(self) -> tuple[ReadableSpan, ...]:
        return self.exported.get_finished_spans()

    def counted(self, name: str) -> dict[str, int]:
        data = self.metrics.get_metrics_data()
        counts: dict[str, int] = {}
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        for point in metric.data.data_points:
                            assert isinstance(point, NumberDataPoint)
                            reason = next(iter((point.attributes or {}).values()))
                            counts[str(reason)] = int(point.value)
        return counts


@pytest.fixture
def pipeline() -> Iterator[Pipeline]:
    made = Pipeline(KeepSettings())
    yield made
    made.provider.shutdown()


def _job(pipeline: Pipeline, *, fail: bool = False, attempts: int = 1) -> trace.Span:
    """A job's root with a lookup and its RPC attempts under it; the root is still open."""
    tracer = pipeline.tracer
    root = tracer.start_span("job.submit")
    inside = trace.set_span_in_context(root)
    tracer.start_span(semconv.SPAN_DNS_LOOKUP, context=inside).end()
    for attempt in range(1, attempts + 1):
        call = tracer.start_span(
            "bunnyrelay.v1.JobService/Run",
            context=inside,
            kind=SpanKind.CLIENT,
            attributes={semconv.JOB_ATTEMPT: attempt},
        )
        if attempt < attempts:
            call.set_status(Status(StatusCode.ERROR, "UNAVAILABLE"))
        call.end()
    if fail:
        root.set_status(Status(StatusCode.ERROR, "boom"))
    return root


def test_what_the_head_sampler_drops_is_recorded_but_not_sampled(pipeline: Pipeline) -> None:
    root = pipeline.tracer.start_span("job.submit")
    child = pipeline.tracer.start_span("dns.lookup", context=trace.set_span_in_context(root))
    for span in (root, child):
        assert isinstance(span, LightSpan)
        assert span.is_recording()
        assert not span.get_span_context().trace_flags.sampled
    assert child.get_span_context().trace_id == root.get_span_context().trace_id
    child.end()
    root.end()


def test_a_remote_unsampled_parent_gets_recorded_children_in_its_trace(
    pipeline: Pipeline,
) -> None:
    remote = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(0))
    server = pipeline.tracer.start_span(
        "bunnyrelay.v1.JobService/Run",
        context=trace.set_span_in_context(NonRecordingSpan(remote)),
        kind=SpanKind.SERVER,
    )
    assert server.is_recording()
    assert server.get_span_context().trace_id == 0xABC
    assert not server.get_span_context().trace_flags.sampled
    server.end()


def test_under_a_local_parent_that_records_nothing_nothing_is_recorded(
    pipeline: Pipeline,
) -> None:
    local = SpanContext(0xABC, 0xDEF, is_remote=False, trace_flags=TraceFlags(0))
    parent = trace.set_span_in_context(NonRecordingSpan(local))
    assert not pipeline.tracer.start_span("child", context=parent).is_recording()
    assert pipeline.tracer.start_span("root", context=Context()).is_recording()


def test_what_the_head_sampler_samples_is_exported_as_sampled_and_not_marked_kept() -> None:
    pipeline = Pipeline(KeepSettings(), head=ParentBased(TraceIdRatioBased(1.0)))
    root = pipeline.tracer.start_span("job.submit")
    assert root.get_span_context().trace_flags.sampled
    root.end()
    (span,) = pipeline.spans()
    assert span.context is not None
    assert span.context.trace_flags.sampled
    assert span.attributes is not None
    assert KEPT not in span.attributes
    pipeline.provider.shutdown()


def test_roots_are_sampled_by_their_trace_id_as_the_sdk_samples_them() -> None:
    # Keeping asks the head sampler about a root itself: the roots it samples must be the
    # SDK's spans of exactly the trace ids the ratio picks, and the rest light, flagged as
    # the SDK flags what it drops.
    ratio = TraceIdRatioBased(0.5)
    pipeline = Pipeline(KeepSettings(), head=ParentBased(ratio))
    plain = TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.0))).get_tracer("plain")
    dropped_flags = plain.start_span("job.submit").get_span_context().trace_flags
    sampled = light = 0
    for _ in range(400):
        root = pipeline.tracer.start_span("job.submit")
        context = root.get_span_context()
        decision = ratio.should_sample(None, context.trace_id, "job.submit").decision
        picked = decision == Decision.RECORD_AND_SAMPLE
        if not context.trace_flags.sampled:
            assert isinstance(root, LightSpan)
            light += 1
            assert not picked
            assert context.trace_flags == dropped_flags
        else:
            sampled += 1
            assert picked
            assert context.trace_flags.sampled
        root.end()
    assert sampled > 100
    assert light > 100
    assert len(pipeline.spans()) == sampled
    pipeline.provider.shutdown()


class ChosenTraceIds(IdGenerator):
    """A fake id generator: the trace ids a test chooses, in order; random span ids."""

    def __init__(self, trace_ids: list[int]) -> None:
        self._trace_ids = iter(trace_ids)
        self._span_ids = RandomIdGenerator()

    def generate_trace_id(self) -> int:
        return next(self._trace_ids)

    def generate_span_id(self) -> int:
        return self._span_ids.generate_span_id()


class AskedParentBased(ParentBased):
    """A sampler of the user's own, built on the SDK's: it must be asked about every root."""

    asked = 0

    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        AskedParentBased.asked += 1
        return super().should_sample(*args, **kwargs)


# Trace ids either side of a quarter's bound, some with high bits the ratio does not read.
_QUARTER = TraceIdRatioBased(0.25).bound
_AROUND_THE_BOUND = [
    _QUARTER - 1,
    _QUARTER,
    _QUARTER + 1,
    (1 << 64) | (_QUARTER - 1),
    (7 << 96) | _QUARTER,
    1,
    (1 << 64) - 1,
]


@pytest.mark.parametrize(
    "sampler",
    [
        ParentBased(TraceIdRatioBased(0.25)),
        ParentBasedTraceIdRatio(0.25),
        TraceIdRatioBased(0.25),
        AskedParentBased(TraceIdRatioBased(0.25)),
    ],
    ids=["parentbased", "parentbased_traceidratio", "traceidratio", "a subclass"],
)
@pytest.mark.parametrize("keeps", [True, False], ids=["keeping on", "keeping off"])
def test_a_ratio_decides_each_root_at_its_bound_as_the_sdk_does(
    sampler: Sampler, keeps: bool
) -> None:
    # Keeping does not ask the SDK's ratio sampler about a root it would drop (it compares
    # the trace id with the bound itself): the same roots must come out sampled, with the
    # same flags and trace state, as from the SDK's own provider with the same ids.
    settings = KeepSettings() if keeps else KeepSettings(slower_than_s=0)
    keeping = KeepingTracerProvider(
        settings,
        resource=Resource.create(),
        sampler=sampler,
        id_generator=ChosenTraceIds(_AROUND_THE_BOUND),
    )
    sdk = TracerProvider(sampler=sampler, id_generator=ChosenTraceIds(_AROUND_THE_BOUND))
    AskedParentBased.asked = 0
    for trace_id in _AROUND_THE_BOUND:
        ours = keeping.get_tracer("test").start_span("job.submit")
        theirs = sdk.get_tracer("test").start_span("job.submit")
        ours_context, theirs_context = ours.get_span_context(), theirs.get_span_context()
        assert ours_context.trace_id == theirs_context.trace_id == trace_id
        assert ours_context.trace_flags == theirs_context.trace_flags, hex(trace_id)
        assert ours_context.trace_state == theirs_context.trace_state
        assert ours.is_recording() == (theirs.is_recording() or keeps)
        ours.end()
        theirs.end()
    if isinstance(sampler, AskedParentBased):
        # Asked once per root by each provider: its own answer counts, whatever it is.
        assert AskedParentBased.asked == 2 * len(_AROUND_THE_BOUND)
    keeping.shutdown()
    sdk.shutdown()


def test_samplers_chosen_to_trace_nothing_are_left_alone() -> None:
    assert not keeps_anything(ALWAYS_OFF)
    assert not keeps_anything(DEFAULT_OFF)
    assert keeps_anything(NOTHING_SAMPLED)


def test_a_job_that_ends_well_and_fast_exports_nothing_and_is_forgotten(
    pipeline: Pipeline,
) -> None:
    _job(pipeline).end()
    assert pipeline.spans() == ()
    assert pipeline.keeping.waiting == 0


def test_a_job_that_ended_well_is_freed_without_the_cycle_collector(pipeline: Pipeline) -> None:
    # Memory of every unsampled job: what is left to the collector piles up between its runs.
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        tracer = pipeline.tracer
        for with_lookup in (False, True):
            root = tracer.start_span("job.submit")
            if with_lookup:
                inside = trace.set_span_in_context(root)
                tracer.start_span(semconv.SPAN_DNS_LOOKUP, context=inside).end()
                del inside
            attempt = tracer.note_child(root, "bunnyrelay.v1.JobService/Run", SpanKind.CLIENT, {})
            assert attempt is not None
            attempt.end()
            root.end()
            del root, attempt
        gc.collect()
        left = [type(o).__name__ for o in gc.garbage if type(o).__module__ == "bunnyrelay.keeping"]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert left == []
    assert pipeline.spans() == ()


def test_a_failed_job_exports_its_whole_local_trace_marked_error(pipeline: Pipeline) -> None:
    root = _job(pipeline, fail=True)
    trace_id = root.get_span_context().trace_id
    root.end()
    spans = pipeline.spans()
    assert [s.name for s in spans] == ["dns.lookup", "bunnyrelay.v1.JobService/Run", "job.submit"]
    for span in spans:
        assert span.context is not None
        assert span.context.trace_id == trace_id
        assert span.context.trace_flags.sampled, "the exporter's processor skips unsampled"
        assert span.attributes is not None
        assert span.attributes[KEPT] == "error"
    lookup, call, kept_root = spans
    assert lookup.parent is not None
    assert call.parent is not None
    assert lookup.parent.span_id == call.parent.span_id == root.get_span_context().span_id
    assert kept_root.parent is None
    assert pipeline.counted(semconv.METRIC_SAMPLING_KEPT) == {"error": 1}


def test_a_retried_job_that_succeeded_is_kept_marked_retried(pipeline: Pipeline) -> None:
    _job(pipeline, attempts=2).end()
    spans = pipeline.spans()
    assert len(spans) == 4
    assert {span.attributes[KEPT] for span in spans if span.attributes} == {"retried"}


def test_a_job_slower_than_the_threshold_is_kept_marked_slow(pipeline: Pipeline) -> None:
    started = time.time_ns()
    root = pipeline.tracer.start_span("job.submit", start_time=started)
    root.end(end_time=started + 1_000_000_000)
    (span,) = pipeline.spans()
    assert span.attributes is not None
    assert span.attributes[KEPT] == "slow"
    just_under = pipeline.tracer.start_span("job.submit", start_time=started)
    just_under.end(end_time=started + 999_000_000)
    assert len(pipeline.spans()) == 1


def test_a_kept_trace_is_held_to_the_span_limits_of_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "8")
    monkeypatch.setenv("OTEL_SPAN_EVENT_COUNT_LIMIT", "1")
    kept = Pipeline(KeepSettings())
    try:
        root = kept.tracer.start_span("job.submit", attributes={"job.note": "a long note"})
        lookup = kept.tracer.start_span(
            semconv.SPAN_DNS_LOOKUP,
            context=trace.set_span_in_context(root),
            attributes={semconv.DNS_QUESTION_NAME: "relay.private.aws.internal"},
        )
        lookup.add_event("first")
        lookup.record_exception(ValueError("the tunnel is down"))
        lookup.end()
        root.set_status(Status(StatusCode.ERROR, "boom"))
        root.end()
        kept_lookup, kept_root = kept.spans()
    finally:
        kept.provider.shutdown()
    # Values cut to eight characters, the oldest event dropped, as the SDK's spans would be.
    assert (kept_root.attributes or {})["job.note"] == "a long n"
    assert (kept_lookup.attributes or {})[semconv.DNS_QUESTION_NAME] == "relay.pr"
    assert (kept_lookup.attributes or {})[KEPT] == "error"
    (event,) = kept_lookup.events
    assert event.name == "exception"
    assert kept_lookup.dropped_events == 1
    assert all(len(str(value)) <= 8 for value in (event.attributes or {}).values())


def test_relay_keeps_a_failed_job_under_an_unsampled_remote_caller(pipeline: Pipeline) -> None:
    remote = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(0))
    server = pipeline.tracer.start_span(
        "bunnyrelay.v1.JobService/Run",
        context=trace.set_span_in_context(NonRecordingSpan(remote)),
        kind=SpanKind.SERVER,
    )
    job = pipeline.tracer.start_span("job fail", context=trace.set_span_in_context(server))
    job.set_status(Status(StatusCode.ERROR, "JOB_FAILED"))
    job.end()
    server.end()
    names = [(s.name, s.context.trace_id if s.context else 0) for s in pipeline.spans()]
    assert names == [("job fail", 0xABC), ("bunnyrelay.v1.JobService/Run", 0xABC)]


def test_a_span_ending_after_its_root_follows_the_roots_decision(pipeline: Pipeline) -> None:
    kept = pipeline.tracer.start_span("job.submit")
    late = pipeline.tracer.start_span("late", context=trace.set_span_in_context(kept))
    kept.set_status(Status(StatusCode.ERROR, "boom"))
    kept.end()
    late.end()
    forgotten = pipeline.tracer.start_span("job.submit")
    too_late = pipeline.tracer.start_span("too late", context=trace.set_span_in_context(forgotten))
    forgotten.end()
    too_late.end()
    # A span started under a root already kept is exported too, and not held.
    pipeline.tracer.start_span("started late", context=trace.set_span_in_context(kept)).end()
    assert [s.name for s in pipeline.spans()] == ["job.submit", "late", "started late"]
    assert pipeline.keeping.waiting == 0


def test_every_noted_attempt_of_a_kept_trace_is_exported_once(pipeline: Pipeline) -> None:
    tracer = pipeline.tracer
    root = tracer.start_span("job.submit")
    failed = tracer.note_child(root, "Run", SpanKind.CLIENT, {semconv.JOB_ATTEMPT: 1})
    assert failed is not None
    failed.set_status(Status(StatusCode.ERROR, "UNAVAILABLE"))
    failed.end()
    retried = tracer.note_child(root, "Run", SpanKind.CLIENT, {semconv.JOB_ATTEMPT: 2})
    assert retried is not None
    retried.end()
    # Still running when its job ends: exported when it ends, after the rest.
    running = tracer.note_child(root, "Run", SpanKind.CLIENT, {semconv.JOB_ATTEMPT: 3})
    assert running is not None
    root.end()
    assert _attempts_exported(pipeline) == [1, 2]
    running.end()
    assert _attempts_exported(pipeline) == [1, 2, 3]
    spans = pipeline.spans()
    assert {s.attributes[KEPT] for s in spans if s.attributes} == {"retried"}
    assert len({s.context.span_id for s in spans if s.context}) == 4


def _attempts_exported(pipeline: Pipeline) -> list[object]:
    return [
        s.attributes[semconv.JOB_ATTEMPT]
        for s in pipeline.spans()
        if s.name == "Run" and s.attributes
    ]


def test_a_noted_attempt_of_a_forgotten_trace_is_never_exported(pipeline: Pipeline) -> None:
    tracer = pipeline.tracer
    root = tracer.start_span("job.submit")
    ended = tracer.note_child(root, "Run", SpanKind.CLIENT, {semconv.JOB_ATTEMPT: 1})
    running = tracer.note_child(root, "Run", SpanKind.CLIENT, {semconv.JOB_ATTEMPT: 1})
    assert ended is not None
    assert running is not None
    ended.end()
    root.end()
    running.set_status(Status(StatusCode.ERROR, "too late to matter"))
    running.end()
    assert pipeline.spans() == ()


def test_past_the_cap_the_oldest_waiting_trace_is_dropped_and_counted() -> None:
    pipeline = Pipeline(KeepSettings(max_waiting=2))
    first = _job(pipeline, fail=True)
    second = _job(pipeline, fail=True)
    third = _job(pipeline, fail=True)
    assert pipeline.keeping.waiting == 2
    for root in (first, second, third):
        root.end()
    roots = [s for s in pipeline.spans() if s.name == "job.submit"]
    assert [s.context.span_id for s in roots if s.context] == [
        second.get_span_context().span_id,
        third.get_span_context().span_id,
    ]
    assert pipeline.counted(semconv.METRIC_SAMPLING_DROPPED) == {"cap": 1}
    pipeline.provider.shutdown()


def test_a_trace_held_past_the_age_is_dropped_and_counted_when_another_is_held() -> None:
    pipeline = Pipeline(KeepSettings(max_age_s=60))
    now = time.time_ns()

    def held_since(started: int) -> trace.Span:
        root = pipeline.tracer.start_span("job.submit", start_time=started)
        inside = trace.set_span_in_context(root)
        pipeline.tracer.start_span(semconv.SPAN_DNS_LOOKUP, context=inside, start_time=started)
        return root

    old = held_since(now - 61_000_000_000)
    young = held_since(now - 59_000_000_000)
    assert pipeline.keeping.waiting == 2
    new = held_since(now)
    assert pipeline.keeping.waiting == 2
    assert pipeline.counted(semconv.METRIC_SAMPLING_DROPPED) == {"age": 1}
    for root in (old, young, new):
        root.end()
    pipeline.provider.shutdown()


def test_a_trace_is_held_only_once_a_span_starts_under_its_root(pipeline: Pipeline) -> None:
    tracer = pipeline.tracer
    root = tracer.start_span("job.submit")
    attempt = tracer.note_child(root, "bunnyrelay.v1.JobService/Run", SpanKind.CLIENT, {})
    assert attempt is not None
    assert pipeline.keeping.waiting == 0, "the job carries its root and noted spans itself"
    attempt.set_status(Status(StatusCode.ERROR, "UNAVAILABLE"))
    attempt.end()
    lookup = tracer.start_span(semconv.SPAN_DNS_LOOKUP, context=trace.set_span_in_context(root))
    assert pipeline.keeping.waiting == 1
    lookup.end()
    root.end()
    assert pipeline.keeping.waiting == 0
    assert [(s.name, (s.attributes or {})[KEPT]) for s in pipeline.spans()] == [
        ("bunnyrelay.v1.JobService/Run", "error"),
        (semconv.SPAN_DNS_LOOKUP, "error"),
        ("job.submit", "error"),
    ]


def test_keeping_is_installed_only_where_spans_are_exported_and_it_is_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.1")
    exporting = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}

    def keeping(environ: dict[str, str], keep: KeepSettings | None) -> bool:
        telemetry = setup_telemetry("bunny", install_global=False, environ=environ, keep=keep)
        try:
            provider = telemetry.tracer_provider
            assert provider.sampler.get_description().startswith(("ParentBased{", "AlwaysOff"))
            return records_dropped_traces(provider)
        finally:
            telemetry.shutdown()

    assert keeping(exporting, KeepSettings())
    assert not keeping(exporting, KeepSettings(slower_than_s=0))
    assert not keeping({}, KeepSettings()), "nothing to export to"
    assert not keeping(exporting, None)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    assert not keeping(exporting, KeepSettings())


def test_with_keeping_off_a_dropped_trace_records_nothing_and_sampled_spans_still_export() -> None:
    exported = InMemorySpanExporter()
    provider = KeepingTracerProvider(
        KeepSettings(slower_than_s=0),
        resource=Resource.create(),
        sampler=ParentBased(TraceIdRatioBased(0.5)),
    )
    provider.add_span_processor(SimpleSpanProcessor(exported))
    tracer = provider.get_tracer("test")
    remote = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(0))
    server = tracer.start_span(
        "server", context=trace.set_span_in_context(NonRecordingSpan(remote))
    )
    assert not server.is_recording()
    sampled = 0
    for _ in range(200):
        root = tracer.start_span("job.submit")
        if root.get_span_context().trace_flags.sampled:
            sampled += 1
            tracer.start_span("child", context=trace.set_span_in_context(root)).end()
        else:
            assert not root.is_recording()
        root.set_status(Status(StatusCode.ERROR, "boom"))
        root.end()
    assert 50 < sampled < 150
    assert len(exported.get_finished_spans()) == 2 * sampled
    assert all(KEPT not in (s.attributes or {}) for s in exported.get_finished_spans())
    provider.shutdown()


@pytest.mark.parametrize(
    ("text", "message"),
    [("soon", "not a number of seconds"), ("-1", "0 or more"), ("inf", "finite")],
)
def test_a_bad_threshold_is_refused_saying_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(SettingError, match=message):
        parse_slower_than(text)


def test_the_threshold_takes_seconds_with_or_without_a_unit() -> None:
    assert parse_slower_than("2.5") == 2.5
    assert parse_slower_than("2.5s") == 2.5
    assert parse_slower_than("0") == 0
    assert not KeepSettings(slower_than_s=0).on
