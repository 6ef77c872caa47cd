"""The resolver's telemetry: the span tree of a lookup, its attributes and its metric."""

from __future__ import annotations

import time

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bunny.dns.resolver import Resolver
from bunny.dns.settings import ResolverSettings
from bunny.dns.tracing import DnsTelemetry
from bunny.errors import (
    NameNotFound,
)
from bunnyrelay import semconv
from lab.dnsserver import ZoneServer
from tests.bunny.conftest import RELAY, SEARCH, MakeResolver, attribute, named, telemetry_finished
from tests.metrics_capture import MetricsCapture


async def test_query_spans_are_children_of_the_lookup_span_in_the_callers_trace(
    dns: ZoneServer, make_resolver: MakeResolver, spans: InMemorySpanExporter
) -> None:
    dns.set_records(RELAY, "AAAA", ["fd00::5"])
    resolver = make_resolver(family="any", search=SEARCH[:1], ndots=5)
    tracer = trace.get_tracer("tests")

    with tracer.start_as_current_span("job.submit") as job:
        await resolver.resolve(RELAY)
    await telemetry_finished()

    (lookup,) = named(spans, "dns.lookup")
    queries = named(spans, "dns.query")
    assert len(queries) == 4  # (search candidate, as is) x (A, AAAA)
    job_context = job.get_span_context()
    assert lookup.parent is not None
    assert lookup.parent.span_id == job_context.span_id
    assert lookup.context is not None
    for query in queries:
        assert query.parent is not None
        assert query.parent.span_id == lookup.context.span_id
        assert query.context is not None
        assert query.context.trace_id == job_context.trace_id
        assert query.kind is trace.SpanKind.CLIENT


async def test_cache_hit_through_resolve_is_one_span_without_children_and_cached_makes_none(
    make_resolver: MakeResolver, spans: InMemorySpanExporter
) -> None:
    resolver = make_resolver()
    await resolver.resolve(RELAY)
    await telemetry_finished()
    spans.clear()

    hit = resolver.cached(RELAY)
    assert spans.get_finished_spans() == ()
    again = await resolver.resolve(RELAY)

    assert hit is not None
    assert hit.source == "cache"
    assert hit.queries == ()
    # The fast path hands back the stored object: no allocation per call.
    assert resolver.cached(RELAY) is hit
    assert again.source == "cache"
    (lookup,) = spans.get_finished_spans()
    assert lookup.name == "dns.lookup"
    assert attribute(lookup, semconv.DNS_SOURCE) == "cache"
    assert attribute(lookup, semconv.DNS_QUERIES_SENT) == 0


async def test_lookup_duration_metric_is_recorded_with_the_error_type_on_failure(
    dns: ZoneServer,
) -> None:
    capture = MetricsCapture()
    provider = capture.provider
    settings = ResolverSettings(nameservers=(dns.address,), family="ipv4")
    resolver = DnsTelemetry(meter_provider=provider).wrap(Resolver(settings))
    try:
        await resolver.resolve(RELAY)
        with pytest.raises(NameNotFound):
            await resolver.resolve("missing.private.aws.internal.")
        data = capture.collect()
    finally:
        await resolver.close()
        provider.shutdown()

    assert data is not None
    (metric,) = [
        metric
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "dns.lookup.duration"
    ]
    assert metric.unit == "s"
    attributes = {
        str((point.attributes or {}).get("dns.question.name")): dict(point.attributes or {})
        for point in metric.data.data_points
    }
    assert semconv.ERROR_TYPE not in attributes[RELAY]
    assert attributes["missing.private.aws.internal."][semconv.ERROR_TYPE] == "NameNotFound"


async def test_an_answer_from_the_wire_reaches_the_caller_before_its_span_ends_as_of_then(
    make_resolver: MakeResolver, spans: InMemorySpanExporter
) -> None:
    resolver = make_resolver()

    resolution = await resolver.resolve(RELAY)
    answered_ns = time.time_ns()

    assert resolution.source == "wire"
    # The caller did not wait for the span: it ends on the loop's next pass...
    assert named(spans, "dns.lookup") == []
    await telemetry_finished()
    (lookup,) = named(spans, "dns.lookup")
    # ...as of when the answer was handed back, not when it was finished.
    assert lookup.end_time is not None
    assert lookup.end_time <= answered_ns
    assert attribute(lookup, semconv.DNS_ANSWERS) == resolution.addresses
    # One candidate, the name itself: the span does not repeat it.
    assert attribute(lookup, semconv.DNS_CANDIDATES) is None


async def test_a_failed_lookup_is_traced_before_its_caller_sees_the_error(
    make_resolver: MakeResolver, spans: InMemorySpanExporter
) -> None:
    resolver = make_resolver()

    with pytest.raises(NameNotFound):
        await resolver.resolve("missing.private.aws.internal.")

    (lookup,) = named(spans, "dns.lookup")
    assert attribute(lookup, semconv.ERROR_TYPE) == "NameNotFound"
    assert attribute(lookup, semconv.DNS_LIKELY_CAUSE)


async def test_closing_the_resolver_finishes_the_telemetry_still_pending(
    make_resolver: MakeResolver, spans: InMemorySpanExporter
) -> None:
    resolver = make_resolver()
    await resolver.resolve(RELAY)

    await resolver.close()

    (lookup,) = named(spans, "dns.lookup")
    assert attribute(lookup, semconv.DNS_SOURCE) == "wire"
