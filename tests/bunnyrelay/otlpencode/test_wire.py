"""bunnyrelay.otlpencode.wire writes the very request the official OTLP encoder builds, byte
for byte, for any spans the SDK makes and for the odd ones it never makes."""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Sequence
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import (
    encode_spans as official_encode_spans,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)
from opentelemetry.util.types import AttributeValue

from bunnyrelay.keeping import KeepingTracerProvider
from bunnyrelay.keepsettings import KeepSettings
from bunnyrelay.otlpencode import wire
from bunnyrelay.otlpencode.wire import cache_sizes, encode_spans, serialize_spans

INT64 = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)
FLOATS = st.floats(allow_nan=False)
KEYS = st.sampled_from(["rpc.system", "rpc.service", "server.address", "bunnyrelay.job.kind", ""])
KEYS |= st.text(max_size=12)
SCALARS = st.one_of(st.text(max_size=20), st.booleans(), INT64, FLOATS, st.binary(max_size=8))
# What the SDK keeps as an attribute value: scalars, None, homogeneous sequences (with None
# holes), and the extended values (mappings, nesting) it now accepts everywhere.
VALUES = st.one_of(
    SCALARS,
    st.none(),
    st.lists(st.one_of(st.text(max_size=8), st.none()), max_size=4),
    st.lists(st.booleans(), max_size=4),
    st.lists(INT64, max_size=4),
    st.lists(FLOATS, max_size=4),
    st.dictionaries(st.text(max_size=6), SCALARS, max_size=3),
    st.lists(st.lists(INT64, max_size=2), max_size=2),
)
ATTRIBUTES = st.dictionaries(KEYS, VALUES, max_size=6)
TIMES = st.integers(min_value=0, max_value=(1 << 63) - 1)
TRACE_STATES = st.sampled_from(
    [TraceState(), TraceState([("vendor", "v1")]), TraceState([("a", "1"), ("b@t", "x-y")])]
)
LIMITS = SpanLimits(
    max_span_attributes=4,
    max_events=2,
    max_links=2,
    max_event_attributes=2,
    max_link_attributes=2,
)


def _context(draw: st.DrawFn, *, is_remote: bool) -> SpanContext:
    return SpanContext(
        trace_id=draw(st.integers(min_value=1, max_value=(1 << 128) - 1)),
        span_id=draw(st.integers(min_value=1, max_value=(1 << 64) - 1)),
        is_remote=is_remote,
        trace_flags=TraceFlags(draw(st.sampled_from([0, 1]))),
        trace_state=draw(TRACE_STATES),
    )


class _DrawnIds(IdGenerator):
    """Span and trace ids drawn by hypothesis (the SDK's own generator uses ``random``)."""

    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw

    def generate_span_id(self) -> int:
        return self.draw(st.integers(min_value=1, max_value=(1 << 64) - 1))

    def generate_trace_id(self) -> int:
        return self.draw(st.integers(min_value=1, max_value=(1 << 128) - 1))


@st.composite
def batches(draw: st.DrawFn, light: bool = False) -> list[ReadableSpan]:
    """Real SDK spans from a few providers (resources, some equal but distinct objects)
    and tracers (scopes), in random order, with every field the encoder writes. ``light``:
    from bunnyrelay's keeping providers, whose sampled spans are light (their limits from the
    ``OTEL_*`` variables, as they are when this is drawn)."""
    captured = InMemorySpanExporter()
    ids = _DrawnIds(draw)
    resources = [
        Resource({"service.name": "bunny", "host.name": "a"}),
        Resource({"host.name": "a", "service.name": "bunny"}),  # equal, other order
        Resource({"service.name": "relay"}, schema_url="https://opentelemetry.io/schemas/1.26.0"),
        Resource(draw(ATTRIBUTES)),
    ]
    tracers = []
    for resource in draw(st.lists(st.sampled_from(resources), min_size=1, max_size=3)):
        provider = (
            KeepingTracerProvider(KeepSettings(), resource=resource, id_generator=ids)
            if light
            else TracerProvider(
                resource=resource, span_limits=LIMITS, id_generator=ids, shutdown_on_exit=False
            )
        )
        provider.add_span_processor(SimpleSpanProcessor(captured))
        for _ in range(draw(st.integers(min_value=1, max_value=2))):
            tracers.append(
                provider.get_tracer(
                    draw(st.sampled_from(["bunny", "relay", ""])),
                    draw(st.sampled_from([None, "", "1.2.3"])),
                    schema_url=draw(st.sampled_from([None, "https://example.com/s"])),
                    attributes=draw(st.none() | ATTRIBUTES),
                )
            )
    started: list[trace.Span] = []
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        tracer = draw(st.sampled_from(tracers))
        parent = draw(st.sampled_from(["none", "remote", "local"]))
        context = None
        if parent == "remote" or (parent == "local" and not started):
            context = trace.set_span_in_context(NonRecordingSpan(_context(draw, is_remote=True)))
        elif parent == "local":
            context = trace.set_span_in_context(draw(st.sampled_from(started)))
        links = [
            Link(_context(draw, is_remote=draw(st.booleans())), draw(st.none() | ATTRIBUTES))
            for _ in range(draw(st.integers(min_value=0, max_value=3)))
        ]
        start = draw(TIMES)
        span = tracer.start_span(
            draw(st.text(max_size=16)),
            context=context,
            kind=draw(st.sampled_from(SpanKind)),
            attributes=draw(ATTRIBUTES),
            links=links,
            start_time=start,
        )
        for _ in range(draw(st.integers(min_value=0, max_value=3))):
            span.add_event(draw(st.text(max_size=8)), draw(ATTRIBUTES), draw(TIMES))
        code = draw(st.sampled_from(StatusCode))
        description = draw(st.none() | st.text(max_size=8)) if code is StatusCode.ERROR else None
        span.set_status(Status(code, description))
        span.end(draw(st.integers(min_value=start, max_value=(1 << 63) - 1)))
        started.append(span)
    return list(captured.get_finished_spans())


def _assert_same_request(spans: Sequence[ReadableSpan]) -> None:
    official = official_encode_spans(spans)
    assert serialize_spans(spans) == official.SerializeToString()
    assert encode_spans(spans) == official


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_request_equals_the_official_encoders_for_any_sdk_spans(spans: list[ReadableSpan]) -> None:
    _assert_same_request(spans)
    # A second time: now resource, scope, pairs and names come from the caches.
    _assert_same_request(spans)


# LIMITS, as the OTEL_* variables say them.
LIMIT_VARIABLES = {
    "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "4",
    "OTEL_SPAN_EVENT_COUNT_LIMIT": "2",
    "OTEL_SPAN_LINK_COUNT_LIMIT": "2",
    "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT": "2",
    "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT": "2",
}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_request_equals_the_official_encoders_for_light_sampled_spans(data: st.DataObject) -> None:
    with mock.patch.dict(os.environ, LIMIT_VARIABLES):
        spans = data.draw(batches(light=True))
    _assert_same_request(spans)
    _assert_same_request(spans)


def test_light_sampled_spans_are_written_without_the_official_encoder() -> None:
    # What bunny and relay export most: plain light spans, written by wire itself (the
    # official encoder is only a fallback, and must not be what makes the bytes equal).
    captured = InMemorySpanExporter()
    provider = KeepingTracerProvider(KeepSettings(), resource=Resource({"service.name": "t"}))
    provider.add_span_processor(SimpleSpanProcessor(captured))
    tracer = provider.get_tracer("light")
    root = tracer.start_span("job.submit", attributes={"bunnyrelay.job.id": "j-1", "n": 1})
    child = tracer.start_span(
        "call", trace.set_span_in_context(root), kind=SpanKind.CLIENT, attributes={"ok": True}
    )
    child.set_status(Status(StatusCode.ERROR, "UNAVAILABLE"))
    child.end()
    root.set_status(Status(StatusCode.OK))
    root.end()
    remote = SpanContext(7, 8, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    tracer.start_span("server", trace.set_span_in_context(NonRecordingSpan(remote))).end()
    spans = captured.get_finished_spans()
    assert [type(span) for span in spans] == [ReadableSpan] * 3
    expected = official_encode_spans(spans).SerializeToString()
    with mock.patch.object(wire, "_encode_span", side_effect=AssertionError("fell back")):
        assert serialize_spans(spans) == expected


def test_special_floats_are_written_bit_for_bit() -> None:
    tracer = TracerProvider(shutdown_on_exit=False).get_tracer("t")
    span = tracer.start_span("f", attributes={"nan": float("nan"), "zero": -0.0, "inf": -1e999})
    span.end()
    assert isinstance(span, ReadableSpan)
    assert serialize_spans([span]) == official_encode_spans([span]).SerializeToString()


def _readable(**fields: Any) -> ReadableSpan:
    defaults: dict[str, Any] = {
        "name": "odd",
        "context": SpanContext(1, 2, is_remote=False),
        "resource": Resource({"service.name": "t"}),
        "start_time": 1,
        "end_time": 2,
    }
    return ReadableSpan(**{**defaults, **fields})


@pytest.mark.parametrize(
    "span",
    [
        _readable(instrumentation_scope=None, status=None),
        _readable(
            events=[Event("e", None, 5), Event("", {"x": (1.5, None)}, 0)],
            links=[Link(SpanContext(3, 4, is_remote=True), None)],
            parent=SpanContext(5, 0, is_remote=False),
        ),
        _readable(resource=Resource({"nested": {"a": [1, {"b": b"\x00"}]}})),
        # What the SDK never makes: left to the official encoder, which drops the pair.
        _readable(attributes={"big": 1 << 64, "ok": "kept"}),
        _readable(attributes={"surrogate": "\ud800", "ok": 1}),
        _readable(attributes={"object": object(), "ok": True}),
        _readable(name="\ud800x", instrumentation_scope=InstrumentationScope("s", "v")),
    ],
    ids=[
        "no-scope-no-status",
        "bare-events-links",
        "nested-resource",
        "int65",
        "surrogate",
        "object",
        "surrogate-name",
    ],
)
def test_spans_the_sdk_cannot_make_still_give_the_official_result(span: ReadableSpan) -> None:
    logging.disable(logging.CRITICAL)  # the official encoder logs each pair it drops
    try:
        expected: bytes | type[BaseException]
        try:
            expected = official_encode_spans([span]).SerializeToString()
        except Exception as error:
            expected = type(error)
        if isinstance(expected, bytes):
            assert serialize_spans([span]) == expected
        else:
            with pytest.raises(expected):
                serialize_spans([span])
    finally:
        logging.disable(logging.NOTSET)


def test_caches_stay_bounded_when_values_never_repeat() -> None:
    tracer = TracerProvider(shutdown_on_exit=False).get_tracer("bound")
    spans = []
    for n in range(wire.VALUES_PER_KEY * 4 + wire.NAME_CACHE_SIZE):
        span = tracer.start_span(f"job-{n}", attributes={"bunnyrelay.job.id": f"id-{n}", "n": n})
        span.end()
        assert isinstance(span, ReadableSpan)
        spans.append(span)
    for batch in range(0, len(spans), 100):
        serialize_spans(spans[batch : batch + 100])
    for n in range(wire.OBJECT_CACHE_SIZE * 2):
        provider = TracerProvider(resource=Resource({"n": n}), shutdown_on_exit=False)
        span = provider.get_tracer(f"scope-{n}").start_span("x")
        span.end()
        assert isinstance(span, ReadableSpan)
        serialize_spans([span])
    sizes = cache_sizes()
    assert all(0 < entries <= bound for entries, bound in sizes.values()), sizes
    # A job id, new on every span, is a key whose pairs never repeat: past its first
    # values it is no longer cached, nor is the ever-changing "n".
    assert wire._pair_caches[str]._by_key["bunnyrelay.job.id"] is None
    assert wire._pair_caches[int]._by_key["n"] is None


def test_the_pair_caches_are_never_walked_by_the_garbage_collector() -> None:
    tracer = TracerProvider(shutdown_on_exit=False).get_tracer("gc")
    spans = []
    for n in range(200):
        attributes: dict[str, AttributeValue] = {
            "bunnyrelay.job.id": f"id-{n}",
            "rpc.system": "grpc",
            "attempt": 1,
            "retried": n % 2 == 0,
            "dns.answers": (f"10.0.0.{n % 3}",),
        }
        span = tracer.start_span("job", attributes=attributes)
        span.end()
        assert isinstance(span, ReadableSpan)
        spans.append(span)
    gc.collect()
    serialize_spans(spans)

    # What a collection walks is what it tracks: an encoded pair, new or not, puts nothing
    # with thousands of entries among the young objects.
    young = gc.get_objects(generation=0)
    assert max((len(gc.get_referents(o)) for o in young), default=0) < wire.VALUES_PER_KEY
    for cache in (*wire._pair_caches.values(), wire._one_string_tuples):
        for values in cache._by_key.values():
            assert values is None or not gc.is_tracked(values)
