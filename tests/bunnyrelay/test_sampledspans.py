"""Sampled spans made light by the keeping tracer export what the SDK's own spans would.

Each scenario runs twice: on the keeping provider, whose tracer makes light sampled spans,
and on the SDK's plain provider with the same sampler; what reaches a processor must be
the same spans (names, kinds, parents, attributes, status, events, scope, resource), the
span limits of the ``OTEL_*`` variables applied alike. Real SDK providers and exporters.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
)
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)
from opentelemetry.util.types import Attributes

from bunnyrelay import keeping, semconv
from bunnyrelay.keeping import KeepingTracerProvider, SampledSpan
from bunnyrelay.keepsettings import KeepSettings

RESOURCE = Resource.create({"service.name": "test"})
REMOTE = SpanContext(
    0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True, TraceFlags(TraceFlags.SAMPLED)
)
Scenario = Callable[[trace.Tracer], None]


def _job_pair(tracer: trace.Tracer) -> None:
    """bunny's job and its call, then relay's server and job spans under a remote parent."""
    root = tracer.start_span(
        "job.submit", attributes={semconv.JOB_ID: "j-1", semconv.JOB_KIND: "echo"}
    )
    client = tracer.start_span(
        "bunnyrelay.v1.JobService/Run",
        context=set_span_in_context(root),
        kind=SpanKind.CLIENT,
        attributes={
            semconv.RPC_SYSTEM: "grpc",
            semconv.RPC_METHOD: "Run",
            semconv.SERVER_PORT: 50051,
            semconv.JOB_ATTEMPT: 1,
        },
    )
    client.set_attribute(semconv.RPC_GRPC_STATUS_CODE, 14)
    client.set_status(Status(StatusCode.ERROR, "UNAVAILABLE"))
    client.end()
    root.set_attributes(
        {
            semconv.JOB_STATUS: "SUCCEEDED",
            semconv.DNS_ANSWERS: ("127.0.0.1", "::1"),
            "bunnyrelay.test.ratio": 0.5,
            "bunnyrelay.test.flag": True,
        }
    )
    root.end()
    server = tracer.start_span(
        "bunnyrelay.v1.JobService/Run",
        context=set_span_in_context(NonRecordingSpan(REMOTE)),
        kind=SpanKind.SERVER,
        attributes={semconv.RPC_SYSTEM: "grpc"},
    )
    job = tracer.start_span("job echo", context=set_span_in_context(server))
    job.record_exception(ValueError("boom"))
    job.set_status(StatusCode.ERROR, "ValueError")
    job.set_status(Status(StatusCode.UNSET))  # changes nothing, as on the SDK's span
    job.end()
    server.update_name("bunnyrelay.v1.JobService/RunBatches")
    server.end()
    server.set_attribute("after.end", "ignored")


def _limited(tracer: trace.Tracer) -> None:
    span = tracer.start_span(
        "limited",
        attributes={"a": "abcdefgh", "b": ("abcdefgh", "xy"), "c": 1, "d": "ok", "e": 2.5},
    )
    span.add_event("first", {"k": "abcdefgh"})
    span.add_event("second")
    span.add_link(REMOTE, {"l": "abcdefgh"})
    span.end()


def _odd_values(tracer: trace.Tracer) -> None:
    span = tracer.start_span("odd", attributes={"list": ["x", "y"], "mixed": (1, "a")})
    span.set_attribute("", "no key")
    span.set_attribute("bytes", b"raw")
    span.end()


def _as_context_manager(tracer: trace.Tracer) -> None:
    with pytest.raises(KeyError), tracer.start_span("managed"):
        raise KeyError("missing")


def _run(
    scenario: Scenario,
    provider: TracerProvider,
    processors: Sequence[SpanProcessor] = (),
) -> tuple[ReadableSpan, ...]:
    exported = InMemorySpanExporter()
    for processor in (*processors, SimpleSpanProcessor(exported)):
        provider.add_span_processor(processor)
    scenario(provider.get_tracer("test.scope", "1.0"))
    provider.shutdown()
    return exported.get_finished_spans()


def _keeping(sampler: Sampler | None = None) -> KeepingTracerProvider:
    """A provider as ``setup_telemetry`` makes it when spans are exported (keeping on), with
    the sampler ``parentbased_always_on`` unless given another."""
    return KeepingTracerProvider(
        KeepSettings(), resource=RESOURCE, sampler=sampler or ParentBased(ALWAYS_ON)
    )


def _described(spans: Sequence[ReadableSpan]) -> list[dict[str, object]]:
    """What an exporter sees of each span, its ids replaced by the name of the span they
    point at (each run makes ids of its own)."""
    names = {s.context.span_id: s.name for s in spans if s.context is not None}
    out = []
    for span in spans:
        assert span.context is not None
        parent = span.parent
        out.append(
            {
                "name": span.name,
                "kind": span.kind,
                "sampled": span.context.trace_flags.sampled,
                "trace": "remote" if span.context.trace_id == REMOTE.trace_id else "own",
                "parent": None
                if parent is None
                else ("remote" if parent.is_remote else names[parent.span_id]),
                "attributes": dict(span.attributes or {}),
                "dropped_attributes": span.dropped_attributes,
                "status": (span.status.status_code, span.status.description),
                "events": [
                    (e.name, dict(e.attributes or {}), e.dropped_attributes) for e in span.events
                ],
                "dropped_events": span.dropped_events,
                "links": [(link.context, dict(link.attributes or {})) for link in span.links],
                "scope": span.instrumentation_scope,
                "resource": span.resource.attributes,
                "timed": bool(
                    span.start_time and span.end_time and span.end_time >= span.start_time
                ),
            }
        )
    return out


@pytest.mark.parametrize(
    "scenario", [_job_pair, _limited, _odd_values, _as_context_manager], ids=lambda s: s.__name__
)
def test_light_sampled_spans_export_what_the_sdks_spans_export(
    scenario: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Limits low enough for _limited to meet each of them (read when a provider is made).
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "4")
    monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "5")
    monkeypatch.setenv("OTEL_SPAN_EVENT_COUNT_LIMIT", "1")
    made: list[trace.Span] = []

    def watched(tracer: trace.Tracer) -> None:
        start = tracer.start_span

        def recording(*args: object, **kwargs: object) -> trace.Span:
            span = start(*args, **kwargs)  # type: ignore[arg-type]
            made.append(span)
            return span

        monkeypatch.setattr(tracer, "start_span", recording)
        scenario(tracer)

    light = _run(watched, _keeping())
    assert made
    assert all(isinstance(span, SampledSpan) for span in made)
    sdk = _run(scenario, TracerProvider(resource=RESOURCE, sampler=ParentBased(ALWAYS_ON)))
    assert _described(light) == _described(sdk)
    assert all(type(span) is ReadableSpan for span in light)


def test_span_limits_from_the_environment_are_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "3")
    monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "4")
    monkeypatch.setenv("OTEL_SPAN_EVENT_COUNT_LIMIT", "1")
    (span,) = _run(_limited, _keeping())
    # The oldest attributes go first, and every string is cut to four characters.
    assert dict(span.attributes or {}) == {"c": 1, "d": "ok", "e": 2.5}
    assert span.dropped_attributes == 2
    (event,) = span.events
    assert event.name == "second"
    assert span.dropped_events == 1
    (link,) = span.links
    assert dict(link.attributes or {}) == {"l": "abcd"}


def test_a_value_too_long_is_cut_on_a_span_within_the_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "3")

    def one(tracer: trace.Tracer) -> None:
        tracer.start_span("one", attributes={"name": "relay.private", "n": ("abcd",)}).end()

    (span,) = _run(one, _keeping())
    assert dict(span.attributes or {}) == {"name": "rel", "n": ("abc",)}


def test_the_console_exporter_and_an_end_only_processor_get_readable_spans() -> None:
    seen: list[object] = []

    class EndOnly(SpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:
            seen.append(span)

    out = io.StringIO()
    provider = _keeping()
    _run(_job_pair, provider, [EndOnly(), SimpleSpanProcessor(ConsoleSpanExporter(out=out))])
    assert len(seen) == 4
    assert all(isinstance(span, ReadableSpan) for span in seen)
    printed = [
        json.loads(chunk) for chunk in out.getvalue().replace("}\n{", "}\x00{").split("\x00")
    ]
    assert [p["name"] for p in printed] == [
        "bunnyrelay.v1.JobService/Run",
        "job.submit",
        "job echo",
        "bunnyrelay.v1.JobService/RunBatches",
    ]
    assert printed[1]["attributes"][semconv.DNS_ANSWERS] == ["127.0.0.1", "::1"]
    assert printed[0]["status"]["status_code"] == "ERROR"


def test_a_processor_that_looks_at_spans_as_they_start_gets_the_sdks_spans() -> None:
    started: list[str] = []

    class Starting(SpanProcessor):
        def on_start(self, span: SdkSpan, parent_context: Context | None = None) -> None:
            started.append(span.name)

    light = _described(_run(_job_pair, _keeping()))
    watched = _described(_run(_job_pair, _keeping(), [Starting()]))
    assert started == [
        "job.submit",
        "bunnyrelay.v1.JobService/Run",
        "bunnyrelay.v1.JobService/Run",
        "job echo",
    ]
    assert watched == light


def test_a_processor_added_later_is_seen_from_the_next_span_on() -> None:
    provider = _keeping()
    tracer = provider.get_tracer("test")
    assert isinstance(tracer.start_span("before"), SampledSpan)
    started: list[str] = []

    class Starting(SpanProcessor):
        def on_start(self, span: SdkSpan, parent_context: Context | None = None) -> None:
            started.append(span.name)

    provider.add_span_processor(Starting())
    tracer.start_span("after").end()
    assert started == ["after"]
    provider.shutdown()


def test_on_an_sdk_release_not_checked_sampled_spans_are_the_sdks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(keeping, "CHECKED_SDK_VERSIONS", frozenset({"0.0.0"}))
    provider = _keeping()
    span = provider.get_tracer("test").start_span("job.submit")
    assert isinstance(span, SdkSpan)
    span.end()
    provider.shutdown()


class Tagging(Sampler):
    """Samples every span, tagging it with its name."""

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: object = None,
    ) -> SamplingResult:
        return SamplingResult(Decision.RECORD_AND_SAMPLE, {**(attributes or {}), "tag": name})

    def get_description(self) -> str:
        return "Tagging"


@pytest.mark.parametrize(
    "sampler", [ALWAYS_ON, ParentBased(ALWAYS_ON)], ids=["always_on", "parentbased_always_on"]
)
def test_roots_sampled_without_asking_the_sampler_are_the_sdks_roots(sampler: Sampler) -> None:
    light = _described(_run(_job_pair, _keeping(sampler)))
    assert light == _described(_run(_job_pair, TracerProvider(resource=RESOURCE, sampler=sampler)))
    root = next(s for s in light if s["name"] == "job.submit")
    assert root["parent"] is None
    assert root["attributes"][semconv.JOB_ID] == "j-1"  # type: ignore[index]


def test_a_sampler_that_adds_to_roots_is_still_asked_about_them() -> None:
    sampler = ParentBased(Tagging())
    light = _described(_run(_job_pair, _keeping(sampler)))
    sdk = _described(_run(_job_pair, TracerProvider(resource=RESOURCE, sampler=sampler)))
    assert light == sdk
    root = next(s for s in light if s["name"] == "job.submit")
    assert root["attributes"]["tag"] == "job.submit"  # type: ignore[index]


def test_a_sampler_that_adds_to_children_is_still_asked_about_them() -> None:
    sampler = ParentBased(ALWAYS_ON, local_parent_sampled=Tagging())
    light = _described(_run(_job_pair, _keeping(sampler)))
    sdk = _described(_run(_job_pair, TracerProvider(resource=RESOURCE, sampler=sampler)))
    assert light == sdk
    client = next(s for s in light if s["name"] == "bunnyrelay.v1.JobService/Run")
    assert client["attributes"]["tag"] == "bunnyrelay.v1.JobService/Run"  # type: ignore[index]


def _batched(scenario: Scenario, provider: TracerProvider) -> tuple[ReadableSpan, ...]:
    """``scenario``'s spans through the SDK's BatchSpanProcessor alone (what
    ``setup_telemetry`` installs), all of them exported by the provider's shutdown."""
    exported = InMemorySpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exported, schedule_delay_millis=60_000))
    scenario(provider.get_tracer("test.scope", "1.0"))
    provider.shutdown()
    return exported.get_finished_spans()


@pytest.mark.parametrize(
    "scenario", [_job_pair, _limited, _odd_values, _as_context_manager], ids=lambda s: s.__name__
)
def test_through_the_batch_processor_alone_the_exporter_gets_what_the_sdks_spans_give(
    scenario: Scenario,
) -> None:
    light = _batched(scenario, _keeping())
    sdk = _batched(scenario, TracerProvider(resource=RESOURCE, sampler=ParentBased(ALWAYS_ON)))
    assert light
    assert _described(light) == _described(sdk)


def test_a_span_ending_after_a_processor_is_added_reaches_it_as_the_sdks_span_does() -> None:
    def ends_seen_by_a_late_processor(provider: TracerProvider) -> tuple[list[str], list[str]]:
        exported = InMemorySpanExporter()
        provider.add_span_processor(BatchSpanProcessor(exported, schedule_delay_millis=60_000))
        tracer = provider.get_tracer("test")
        still_open = tracer.start_span("open")
        tracer.start_span("ended before").end()
        seen: list[str] = []

        class EndOnly(SpanProcessor):
            def on_end(self, span: ReadableSpan) -> None:
                seen.append(span.name)

        provider.add_span_processor(EndOnly())
        still_open.end()
        tracer.start_span("after").end()
        provider.shutdown()
        return seen, [span.name for span in exported.get_finished_spans()]

    light = ends_seen_by_a_late_processor(_keeping())
    sdk = ends_seen_by_a_late_processor(
        TracerProvider(resource=RESOURCE, sampler=ParentBased(ALWAYS_ON))
    )
    assert light == sdk == (["open", "after"], ["ended before", "open", "after"])


def test_children_of_light_spans_carry_their_trace_state_and_flags_as_the_sdks_do() -> None:
    remote = SpanContext(
        REMOTE.trace_id,
        REMOTE.span_id,
        True,
        TraceFlags(TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID),
        TraceState([("vendor", "v1")]),
    )

    def nested(tracer: trace.Tracer) -> None:
        server = tracer.start_span(
            "server", context=set_span_in_context(NonRecordingSpan(remote)), kind=SpanKind.SERVER
        )
        job = tracer.start_span("job", context=set_span_in_context(server))
        tracer.start_span("step", context=set_span_in_context(job)).end()
        job.end()
        server.end()
        root = tracer.start_span("root")
        tracer.start_span("child", context=set_span_in_context(root)).end()
        root.end()

    def contexts(spans: Sequence[ReadableSpan]) -> list[tuple[str, int, object]]:
        return [
            (s.name, int(s.context.trace_flags), s.context.trace_state.to_header())
            for s in spans
            if s.context is not None
        ]

    light = contexts(_run(nested, _keeping()))
    assert light == contexts(
        _run(nested, TracerProvider(resource=RESOURCE, sampler=ParentBased(ALWAYS_ON)))
    )
    assert light[0] == ("step", 3, "vendor=v1")


def test_under_a_span_whose_ids_are_invalid_a_new_trace_starts_as_with_the_sdk() -> None:
    class ZeroFirst(IdGenerator):
        """Span id 0 (invalid) for the first span, then counting ids, as a broken generator
        might give them."""

        def __init__(self) -> None:
            self.next = 0
            self.first = True

        def generate_span_id(self) -> int:
            if self.first:
                self.first = False
                return 0
            self.next += 1
            return self.next

        def generate_trace_id(self) -> int:
            self.next += 1
            return 0xABC << 64 | self.next

    def parent_and_child(provider: TracerProvider) -> tuple[bool, bool]:
        exported = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(exported))
        tracer = provider.get_tracer("test")
        parent = tracer.start_span("parent")
        tracer.start_span("child", context=set_span_in_context(parent)).end()
        parent.end()
        provider.shutdown()
        child, ended_parent = exported.get_finished_spans()
        assert child.context is not None
        assert ended_parent.context is not None
        return child.parent is None, child.context.trace_id == ended_parent.context.trace_id

    light = parent_and_child(
        KeepingTracerProvider(KeepSettings(), resource=RESOURCE, id_generator=ZeroFirst())
    )
    sdk = parent_and_child(TracerProvider(resource=RESOURCE, id_generator=ZeroFirst()))
    assert light == sdk == (True, False)
