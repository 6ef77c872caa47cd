"""A job's trace as bunny makes it: ``job.submit`` at the root, the lookup and one CLIENT span
per RPC attempt under it, and a cache hit told on the root span instead of a span of its own.

Against a real DNS server and a real relay in this process; the spans are the SDK's.
"""

from __future__ import annotations

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from bunny.dns.resolver import Resolver
from bunny.dns.settings import ResolverSettings
from bunny.relaypool import RelayPool
from bunny.submitter import SubmitSettings, UnarySubmitter
from bunny.targets import LiteralAddress
from bunny.tracing import BunnyTelemetry
from bunnyrelay import semconv
from lab.dnsserver import ZoneServer
from tests.bunny.conftest import RELAY, named
from tests.relay.harness import job, local_relay


def _attributes(span: ReadableSpan) -> dict[str, object]:
    return dict(span.attributes or {})


async def test_a_cold_job_has_its_lookup_span_and_a_warm_one_says_cache_on_its_root_span(
    dns: ZoneServer, spans: InMemorySpanExporter
) -> None:
    dns.set_records(RELAY, "A", ["127.0.0.1"])
    telemetry = BunnyTelemetry()
    async with local_relay() as local:
        resolver = telemetry.dns.wrap(
            Resolver(ResolverSettings(nameservers=(dns.address,), family="ipv4"))
        )
        pool = RelayPool(resolver, RELAY, local.relay.port)
        submitter = UnarySubmitter(pool, SubmitSettings(timeout_s=10), telemetry)
        try:
            cold = await submitter.run(job("cold"))
            warm = await submitter.run(job("warm"))
        finally:
            await submitter.close()
            await pool.close()
            await resolver.close()

    assert (cold.ok, cold.dns_source, warm.ok, warm.dns_source) == (True, "wire", True, "cache")
    first, second = named(spans, "job.submit")
    assert first.context is not None
    assert second.context is not None
    assert cold.trace_id == f"{first.context.trace_id:032x}"
    # The cold job: a dns.lookup span under the job, its one query told on it.
    (lookup,) = named(spans, "dns.lookup")
    assert lookup.parent is not None
    assert lookup.parent.span_id == first.context.span_id
    assert _attributes(lookup)[semconv.DNS_RCODE] == "NOERROR"
    assert semconv.DNS_SOURCE not in _attributes(first)
    # The warm job: no lookup span; the answer is told on the job's own span.
    assert _attributes(second)[semconv.DNS_SOURCE] == "cache"
    assert _attributes(second)[semconv.DNS_QUESTION_NAME] == RELAY
    assert _attributes(second)[semconv.DNS_ANSWERS] == ("127.0.0.1",)
    # One CLIENT span per attempt, under each job, and relay's SERVER span under that.
    for root in (first, second):
        (client,) = [
            s
            for s in named(spans, "bunnyrelay.v1.JobService/Run")
            if s.kind is SpanKind.CLIENT
            and s.parent is not None
            and s.parent.span_id == root.context.span_id
        ]
        assert _attributes(client)[semconv.JOB_ATTEMPT] == 1
        assert _attributes(client)[semconv.SERVER_ADDRESS] == RELAY
        assert _attributes(client)[semconv.NETWORK_PEER_ADDRESS] == "127.0.0.1"
        assert client.context is not None
        servers = [
            s
            for s in named(spans, "bunnyrelay.v1.JobService/Run")
            if s.kind is SpanKind.SERVER
            and s.parent is not None
            and s.parent.span_id == client.context.span_id
        ]
        assert len(servers) == 1
        assert _attributes(root)[semconv.JOB_STATUS] == "SUCCEEDED"


async def test_a_failed_job_is_an_error_on_its_span_and_counted_by_kind_and_status(
    spans: InMemorySpanExporter,
) -> None:
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    telemetry = BunnyTelemetry(meter_provider=meters)
    async with local_relay() as local:
        pool = RelayPool(LiteralAddress("127.0.0.1"), "127.0.0.1", local.relay.port)
        submitter = UnarySubmitter(pool, SubmitSettings(timeout_s=10), telemetry)
        try:
            ok = await submitter.run(job("fine"))
            unknown = await submitter.run(job("odd", kind="no-such-kind"))
        finally:
            await pool.close()
    data = reader.get_metrics_data()
    meters.shutdown()

    assert ok.ok
    assert not unknown.ok
    root = next(s for s in named(spans, "job.submit") if _attributes(s)[semconv.JOB_ID] == "odd")
    assert root.status.status_code is StatusCode.ERROR
    assert _attributes(root)[semconv.ERROR_TYPE] == "JobRejected"
    fine = next(s for s in named(spans, "job.submit") if _attributes(s)[semconv.JOB_ID] == "fine")
    # An IP target has no lookup at all: the root span says so.
    assert _attributes(fine)[semconv.DNS_SOURCE] == "literal"
    assert data is not None
    counts = {
        (str(point.attributes[semconv.JOB_KIND]), str(point.attributes[semconv.JOB_STATUS])): (
            point.value
        )
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == semconv.METRIC_JOBS
        for point in metric.data.data_points
        if point.attributes is not None and isinstance(point, NumberDataPoint)
    }
    assert counts == {("echo", "SUCCEEDED"): 1, ("no-such-kind", "FAILED"): 1}
