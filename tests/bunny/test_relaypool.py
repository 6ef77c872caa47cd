"""The relay pool's lookups against a real DNS server: what each job's trace says about DNS."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bunny.relaypool import RelayPool
from bunnyrelay import semconv
from bunnyrelay.lab.dnsserver import ZoneServer
from tests.bunny.conftest import RELAY, RELAY_IP, MakeResolver, named


async def test_a_cached_answer_is_told_on_the_jobs_span_and_a_miss_gets_its_lookup_span(
    dns: ZoneServer, make_resolver: MakeResolver, spans: InMemorySpanExporter
) -> None:
    pool = RelayPool(make_resolver(), RELAY, 50051)
    tracer = trace.get_tracer("test")
    try:
        with tracer.start_as_current_span("job.submit"):
            cold = await pool.lookup()
        with tracer.start_as_current_span("job.submit"):
            warm = await pool.lookup()
    finally:
        await pool.close()

    assert (cold.source, warm.source) == ("wire", "cache")
    assert warm.addresses == cold.addresses == (RELAY_IP,)
    assert len(dns.log) == 1
    first_job, second_job = named(spans, "job.submit")
    # The cold job: a dns.lookup span under the job, with its one query told on it.
    (lookup,) = named(spans, "dns.lookup")
    assert lookup.parent is not None
    assert lookup.parent.span_id == first_job.context.span_id
    assert lookup.attributes is not None
    assert lookup.attributes[semconv.DNS_RCODE] == "NOERROR"
    assert named(spans, "dns.query") == []
    # The warm job: no span of its own for the cache hit, the facts on the job's span.
    assert second_job.attributes is not None
    assert second_job.attributes[semconv.DNS_SOURCE] == "cache"
    assert second_job.attributes[semconv.DNS_QUESTION_NAME] == RELAY
    assert second_job.attributes[semconv.DNS_ANSWERS] == (RELAY_IP,)
    assert first_job.attributes is not None
    assert semconv.DNS_SOURCE not in first_job.attributes
