"""At the sampling rates people run, what went wrong keeps its trace; the rest costs nothing.

Real relay processes, the real bunny command, a real DNS server and an OTLP receiver,
with ``parentbased_traceidratio`` at 1 % and every other flag at its default (but the
threshold where it is the subject).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from lab.dnsserver import ZoneServer
from lab.otlpsink import OtlpSink, SinkSpan
from lab.processes import run_bunny
from tests.conftest import RELAY_NAME, StartRelay

ONE_PERCENT = {
    "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
    "OTEL_TRACES_SAMPLER_ARG": "0.01",
}
KEPT = "bunnyrelay.sampling.kept"


async def _submit(
    zone: ZoneServer, sink: OtlpSink, port: int, *args: str
) -> tuple[int, list[dict[str, Any]], str]:
    code, out, err = await run_bunny(
        "submit",
        "--target",
        f"{RELAY_NAME}:{port}",
        "--nameserver",
        str(zone.address),
        "--json",
        *args,
        env={**sink.env("bunny"), **ONE_PERCENT},
    )
    return code, [json.loads(line) for line in out.splitlines() if line.strip()], err


def _roots(spans: list[SinkSpan]) -> dict[str, SinkSpan]:
    """bunny's job spans by trace id."""
    return {s.trace_id: s for s in spans if s.service == "bunny" and s.name == "job.submit"}


def _has_roots(trace_ids: set[str]) -> Any:
    return lambda spans: trace_ids <= set(_roots(spans))


async def test_at_1_percent_every_failed_job_keeps_its_trace_naming_the_hop(
    zone: ZoneServer, sink: OtlpSink
) -> None:
    # The name is missing from the zone: every job fails its lookup with NXDOMAIN.
    code, lines, err = await _submit(zone, sink, 50051, "--count", "100", "--family", "ipv4")
    assert code == 1, err
    assert len(lines) == 100
    assert all(line["status"] == "FAILED" for line in lines)
    failed = {line["trace_id"] for line in lines}
    assert len(failed) == 100

    await sink.wait_for(_has_roots(failed))
    kept = 0
    for trace_id in failed:
        spans = sink.trace(trace_id)
        (root,) = [s for s in spans if s.name == "job.submit"]
        assert root.status == "ERROR"
        # Kept because it failed, or (about one in a hundred) sampled by the head sampler.
        assert root.attributes.get(KEPT, "sampled") in ("error", "sampled")
        kept += KEPT in root.attributes
        assert root.attributes["error.type"] == "NameNotFound"
        (lookup,) = [s for s in spans if s.name == "dns.lookup"]
        assert lookup.parent_id == root.span_id
        assert lookup.attributes["dns.question.name"] == RELAY_NAME
        assert lookup.attributes["error.type"] == "NameNotFound"
        # The hop that answered NXDOMAIN, and what that usually means there.
        assert f"NXDOMAIN from {zone.address}" in lookup.status_message
        assert "missing from the zone" in lookup.attributes["bunnyrelay.dns.likely_cause"]
    assert kept >= 90, "Binomial(100, 0.99) kept: fewer than 90 has a chance below 10^-6"


async def test_at_1_percent_successful_fast_jobs_export_about_one_in_a_hundred(
    zone: ZoneServer, sink: OtlpSink, start_relay: StartRelay
) -> None:
    async with start_relay(env=ONE_PERCENT) as relay:
        zone.set_records(RELAY_NAME, "A", ["127.0.0.1"], ttl=300)
        code, lines, err = await _submit(
            zone, sink, relay.port, "--count", "1000", "--concurrency", "32"
        )
        assert await relay.terminate() == 0
    assert code == 0, err
    assert len(lines) == 1000
    # Both processes have exited: every span either was going to export is in.
    kept = {s.trace_id: s for s in sink.spans if KEPT in s.attributes}
    sampled = {s.trace_id for s in sink.spans} - set(kept)
    # Binomial(1000, 0.01): 10 expected; none or 30 and more have a chance below 10^-4.
    assert 1 <= len(sampled) < 30, f"{len(sampled)} traces sampled for 1000 jobs"
    # Nothing failed or was retried: a trace kept besides is one the machine made slow,
    # and its span says so.
    for span in kept.values():
        assert span.attributes[KEPT] == "slow"
    for root in _roots(sink.spans).values():
        if KEPT in root.attributes:
            assert root.duration_ms >= 1000


async def test_a_lookup_slowed_past_the_threshold_keeps_its_trace_marked_slow(
    zone: ZoneServer, sink: OtlpSink, start_relay: StartRelay
) -> None:
    async with start_relay(env=ONE_PERCENT) as relay:
        zone.set_records(RELAY_NAME, "A", ["127.0.0.1"])
        # A slow tunnel: every answer takes longer than the default threshold (1 s), and
        # less than the resolver's query timeout, so the lookup succeeds the first time.
        zone.set_delay(1.3)
        code, lines, err = await _submit(zone, sink, relay.port, "--family", "ipv4")
    assert code == 0, err
    (line,) = lines
    assert line["status"] == "SUCCEEDED"
    await sink.wait_for(_has_roots({line["trace_id"]}))
    spans = sink.trace(line["trace_id"])
    (root,) = [s for s in spans if s.name == "job.submit"]
    (lookup,) = [s for s in spans if s.name == "dns.lookup"]
    (client,) = [s for s in spans if s.name == "bunnyrelay.v1.JobService/Run"]
    if root.attributes.get(KEPT) is None:
        pytest.fail("the head sampler picked this trace (1 in 100): the run proves nothing")
    assert root.attributes[KEPT] == "slow"
    assert lookup.parent_id == root.span_id
    assert client.parent_id == root.span_id
    assert lookup.duration_ms >= 1300
    assert lookup.attributes["bunnyrelay.dns.nameserver"] == str(zone.address)


async def test_a_lookup_retried_keeps_its_trace_marked_retried(
    zone: ZoneServer, sink: OtlpSink, start_relay: StartRelay
) -> None:
    async with start_relay(env=ONE_PERCENT) as relay:
        zone.set_records(RELAY_NAME, "A", ["127.0.0.1"])
        zone.answer_with_rcode("SERVFAIL", next_n=1)
        code, lines, err = await _submit(zone, sink, relay.port, "--family", "ipv4")
    assert code == 0, err
    (line,) = lines
    await sink.wait_for(_has_roots({line["trace_id"]}))
    spans = sink.trace(line["trace_id"])
    (root,) = [s for s in spans if s.name == "job.submit"]
    assert root.attributes[KEPT] == "retried"
    queries = [s for s in spans if s.name == "dns.query"]
    assert [q.attributes["bunnyrelay.dns.rcode"] for q in queries] == ["SERVFAIL", "NOERROR"]
    assert all(s.attributes[KEPT] == "retried" for s in spans)


@pytest.mark.parametrize("mode", [[], ["--stream"]], ids=["unary", "stream"])
async def test_a_job_failing_on_relay_keeps_relays_spans_in_the_same_trace(
    zone: ZoneServer, sink: OtlpSink, start_relay: StartRelay, mode: list[str]
) -> None:
    async with start_relay(env=ONE_PERCENT) as relay:
        zone.set_records(RELAY_NAME, "A", ["127.0.0.1"])
        code, lines, err = await _submit(
            zone, sink, relay.port, "--kind", "fail", "--payload", "boom", "--count", "5", *mode
        )
        assert code == 1, err
        assert len(lines) == 5
        # Drained and stopped as in production, relay exports what it held on its way out.
        assert await relay.terminate() == 0
    method = "RunBatches" if mode else "Run"
    for line in lines:
        trace_id = line["trace_id"]
        spans = sink.trace(trace_id)
        (root,) = [s for s in spans if s.service == "bunny" and s.name == "job.submit"]
        rpc = f"bunnyrelay.v1.JobService/{method}"
        (client,) = [s for s in spans if s.service == "bunny" and s.name == rpc]
        (server,) = [s for s in spans if s.service == "relay" and s.name == rpc]
        (job,) = [s for s in spans if s.service == "relay" and s.name == "job fail"]
        assert client.kind == "CLIENT"
        assert server.kind == "SERVER"
        # One tree across both processes, each side kept by its own decision.
        assert client.parent_id == root.span_id
        assert server.parent_id == client.span_id
        assert job.parent_id == server.span_id
        assert job.status == "ERROR"
        if root.attributes.get(KEPT) is not None:
            assert root.attributes[KEPT] == "error"
            assert job.attributes[KEPT] == "error"
            assert server.attributes[KEPT] == "error"


@pytest.mark.parametrize("mode", [[], ["--stream"]], ids=["unary", "stream"])
async def test_a_job_slow_on_relay_keeps_both_sides_marked_slow(
    zone: ZoneServer, sink: OtlpSink, start_relay: StartRelay, mode: list[str]
) -> None:
    async with start_relay(env=ONE_PERCENT) as relay:
        zone.set_records(RELAY_NAME, "A", ["127.0.0.1"])
        code, lines, err = await _submit(
            zone, sink, relay.port, "--kind", "sleep", "--payload", "1100", *mode
        )
        assert code == 0, err
        assert await relay.terminate() == 0
    (line,) = lines
    spans = sink.trace(line["trace_id"])
    (root,) = [s for s in spans if s.service == "bunny" and s.name == "job.submit"]
    if KEPT not in root.attributes:
        pytest.fail("the head sampler picked this trace (1 in 100): the run proves nothing")
    rpc = "bunnyrelay.v1.JobService/"
    (client,) = [s for s in spans if s.service == "bunny" and s.name.startswith(rpc)]
    (server,) = [s for s in spans if s.service == "relay" and s.name.startswith(rpc)]
    (job,) = [s for s in spans if s.service == "relay" and s.name == "job sleep"]
    assert server.parent_id == client.span_id
    assert job.parent_id == server.span_id
    assert {s.attributes[KEPT] for s in (root, client, server, job)} == {"slow"}
    assert job.duration_ms >= 1100
    assert job.attributes["bunnyrelay.job.status"] == "SUCCEEDED"
