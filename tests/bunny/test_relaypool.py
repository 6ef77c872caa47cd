"""The relay pool: its lookups against a real DNS server (what each job's trace says about
DNS) and the settings of its connections to relay."""

from __future__ import annotations

import re

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bunny.cli import build_parser
from bunny.relaypool import Keepalive, RelayPool
from bunnyrelay import semconv
from lab.dnsserver import ZoneServer
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


def test_keepalive_pings_by_default_and_zero_turns_only_the_pings_off() -> None:
    default = dict(Keepalive().channel_options())
    off = dict(Keepalive(interval_s=0).channel_options())

    assert default["grpc.keepalive_time_ms"] == 30_000
    assert default["grpc.http2.ping_timeout_ms"] == default["grpc.keepalive_timeout_ms"] == 10_000
    assert "grpc.keepalive_time_ms" not in off
    # Reconnecting stays prompt either way (gRPC's own cap is two minutes).
    assert default["grpc.max_reconnect_backoff_ms"] == off["grpc.max_reconnect_backoff_ms"] == 5000


@pytest.mark.parametrize(
    ("interval", "timeout", "message"),
    [(0.5, 10.0, "at least 1 s"), (-1.0, 10.0, "0 (off) or more"), (30.0, 0.0, "more than 0")],
)
def test_keepalive_rejects_what_relay_would_refuse_or_grpc_cannot_do(
    interval: float, timeout: float, message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Keepalive(interval_s=interval, timeout_s=timeout)


def test_bunny_submit_keepalive_flag_and_variable_say_what_is_wrong(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert build_parser().parse_args(["submit", "--keepalive", "0"]).keepalive == 0
    with pytest.raises(SystemExit) as flag:
        build_parser().parse_args(["submit", "--keepalive", "0.2"])
    assert flag.value.code == 2
    assert "0 (off) or at least 1 s" in capsys.readouterr().err

    monkeypatch.setenv("BUNNY_KEEPALIVE", "often")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["submit"])
    assert "BUNNY_KEEPALIVE" in capsys.readouterr().err
