"""bunny's resolver against a real DNS server on 127.0.0.1: what it sends, caches and answers."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from bunny.errors import (
    DnsRefused,
    DnsServerFailure,
    DnsTimeout,
    DnsUnreachable,
    InvalidName,
    NameNotFound,
    NoAddresses,
)
from bunnyrelay import semconv
from bunnyrelay.settings import HostPort
from lab.dnsserver import ZoneServer
from tests.bunny.conftest import (
    RELAY,
    RELAY_IP,
    SEARCH,
    Arrivals,
    MakeResolver,
    attribute,
    named,
    telemetry_finished,
)
from tests.fakeclock import FakeClock


async def _sleep_until(moment: float) -> None:
    # Real time is the subject: c-ares' own cache expires on the real clock, not on ours.
    await asyncio.sleep(max(moment - time.monotonic(), 0.0) + 0.05)


async def test_ndots_5_sends_the_search_candidates_first_and_the_trace_shows_the_waste(
    dns: ZoneServer, make_resolver: MakeResolver, spans: InMemorySpanExporter
) -> None:
    resolver = make_resolver(search=SEARCH, ndots=5)

    resolution = await resolver.resolve(RELAY)
    await telemetry_finished()

    assert resolution.addresses == (RELAY_IP,)
    assert resolution.fqdn == RELAY
    assert resolution.source == "wire"
    wire = [(entry.qname, entry.outcome) for entry in dns.log]
    assert wire == [
        (f"{RELAY}.bunny.svc.cluster.local", "NXDOMAIN"),
        (f"{RELAY}.svc.cluster.local", "NXDOMAIN"),
        (f"{RELAY}.cluster.local", "NXDOMAIN"),
        (RELAY, "NOERROR"),
    ]
    queries = named(spans, "dns.query")
    assert [
        (attribute(q, "dns.question.name"), attribute(q, semconv.DNS_RCODE)) for q in queries
    ] == [
        (f"{RELAY}.bunny.svc.cluster.local", "NXDOMAIN"),
        (f"{RELAY}.svc.cluster.local", "NXDOMAIN"),
        (f"{RELAY}.cluster.local", "NXDOMAIN"),
        (RELAY, "NOERROR"),
    ]
    # An NXDOMAIN for a search candidate is an answer, not an error of the lookup.
    assert all(q.status.status_code is StatusCode.UNSET for q in queries)
    (lookup,) = named(spans, "dns.lookup")
    # Each query's span is made when the lookup ends, with the times the query ran:
    # under the lookup, inside it, one candidate after the other.
    assert all(q.parent is not None and q.parent.span_id == lookup.context.span_id for q in queries)
    times = [(q.start_time or 0, q.end_time or 0) for q in queries]
    assert (lookup.start_time or 0) <= times[0][0]
    assert all(start < end for start, end in times)
    assert all(times[i][1] <= times[i + 1][0] for i in range(len(times) - 1))
    assert times[-1][1] <= (lookup.end_time or 0)
    assert attribute(lookup, semconv.DNS_QUERIES_SENT) == 4
    assert len(attribute(lookup, semconv.DNS_CANDIDATES)) == 4  # type: ignore[arg-type]
    assert attribute(lookup, semconv.DNS_ANSWERS) == (RELAY_IP,)
    assert [q.fqdn for q in resolution.queries] == [
        str(attribute(q, "dns.question.name")) for q in queries
    ]


@pytest.mark.parametrize(
    ("name", "ndots"), [(f"{RELAY}.", 5), (RELAY, 3)], ids=["trailing-dot", "ndots-override"]
)
async def test_trailing_dot_or_lower_ndots_sends_exactly_one_query_per_type(
    dns: ZoneServer, make_resolver: MakeResolver, name: str, ndots: int
) -> None:
    dns.set_records(RELAY, "AAAA", ["fd00::5"])
    resolver = make_resolver(search=SEARCH, ndots=ndots, family="any")

    resolution = await resolver.resolve(name)

    assert resolution.addresses == (RELAY_IP, "fd00::5")
    assert sorted((e.qname, e.qtype) for e in dns.log) == [(RELAY, "A"), (RELAY, "AAAA")]


async def test_a_cname_chain_in_the_answer_is_followed(
    dns: ZoneServer, make_resolver: MakeResolver
) -> None:
    dns.set_records("jobs.private.aws.internal", "CNAME", [f"{RELAY}."], ttl=10)
    resolver = make_resolver()

    resolution = await resolver.resolve("jobs.private.aws.internal.")

    assert resolution.addresses == (RELAY_IP,)
    assert resolution.ttl == 10  # the CNAME's shorter TTL bounds the answer


async def test_ttl_expiry_moves_to_the_new_address(
    dns: ZoneServer, make_resolver: MakeResolver
) -> None:
    dns.set_records(RELAY, "A", ["10.20.0.5"], ttl=1)
    resolver = make_resolver()
    first = await resolver.resolve(RELAY)
    dns.set_records(RELAY, "A", ["10.20.0.6"], ttl=1)

    cached = await resolver.resolve(RELAY)
    assert (cached.addresses, cached.source) == (("10.20.0.5",), "cache")
    await _sleep_until(first.expires_at)
    assert resolver.cached(RELAY) is None
    moved = await resolver.resolve(RELAY)

    assert (moved.addresses, moved.source) == (("10.20.0.6",), "wire")
    assert [e.outcome for e in dns.queries(RELAY)] == ["NOERROR", "NOERROR"]


async def test_serves_stale_when_the_server_stops_answering_then_gives_up_after_stale_max(
    dns: ZoneServer, make_resolver: MakeResolver, spans: InMemorySpanExporter
) -> None:
    # TTL 0: c-ares keeps nothing, so bunny's own clock alone says what is stale.
    dns.set_records(RELAY, "A", [RELAY_IP], ttl=0)
    clock = FakeClock()
    resolver = make_resolver(
        clock=clock, timeout=0.3, attempts=2, stale_max=2.0, stale_ttl=7, stale_recheck=5.0
    )
    await resolver.resolve(RELAY)
    await telemetry_finished()
    dns.go_silent()
    spans.clear()

    stale = await resolver.resolve(RELAY)
    await telemetry_finished()

    assert (stale.addresses, stale.source, stale.ttl) == ((RELAY_IP,), "stale-cache", 7)
    assert [q.rcode for q in stale.queries] == ["TIMEOUT", "TIMEOUT"]
    (lookup,) = named(spans, "dns.lookup")
    assert attribute(lookup, semconv.DNS_SOURCE) == "stale-cache"
    assert attribute(lookup, semconv.DNS_REFRESH_ERROR) == "DnsTimeout"
    assert [event.name for event in lookup.events] == [semconv.EVENT_DNS_SERVE_STALE]
    # The event is as of the answer, within the span, though the span was finished later.
    assert lookup.end_time is not None
    assert lookup.events[0].timestamp <= lookup.end_time
    assert len(named(spans, "dns.query")) == 2

    # While the failed refresh backs off, stale answers come without asking again.
    sent = len(dns.log)
    clock.advance(1.0)
    assert (await resolver.resolve(RELAY)).source == "stale-cache"
    assert len(dns.log) == sent

    clock.advance(1.5)  # past stale_max
    with pytest.raises(DnsTimeout):
        await resolver.resolve(RELAY)
    assert len(dns.log) == sent + 2


async def test_negative_answer_is_cached_then_a_new_record_is_seen_after_negative_ttl(
    dns: ZoneServer, make_resolver: MakeResolver
) -> None:
    name = "new.private.aws.internal."
    clock = FakeClock()
    resolver = make_resolver(clock=clock, negative_ttl=0.5)
    with pytest.raises(NameNotFound) as first:
        await resolver.resolve(name)
    assert not first.value.from_negative_cache
    dns.set_records(name, "A", ["10.20.0.9"])

    with pytest.raises(NameNotFound) as again:
        await resolver.resolve(name)
    assert again.value.from_negative_cache
    assert "negative cache" in str(again.value)
    assert again.value.queries == ()
    assert len(dns.queries(name)) == 1

    clock.advance(0.6)
    resolution = await resolver.resolve(name)

    # The server's SOA says NXDOMAIN may be cached for 60 s, and c-ares would;
    # bunny flushed c-ares' cache, so the second question really went out.
    assert resolution.addresses == ("10.20.0.9",)
    assert resolution.source == "wire"
    assert [e.outcome for e in dns.queries(name)] == ["NXDOMAIN", "NOERROR"]


async def test_concurrent_resolves_of_one_name_share_one_query(
    dns: ZoneServer, make_resolver: MakeResolver, spans: InMemorySpanExporter
) -> None:
    resolver = make_resolver()
    dns.set_delay(0.1)

    results = await asyncio.gather(*(resolver.resolve(RELAY) for _ in range(20)))

    assert {r.addresses for r in results} == {(RELAY_IP,)}
    assert len(dns.log) == 1
    lookups = named(spans, "dns.lookup")
    assert len(lookups) == 20
    assert sum(1 for s in lookups if attribute(s, semconv.DNS_COALESCED)) == 19
    assert sum(int(str(attribute(s, semconv.DNS_QUERIES_SENT))) for s in lookups) == 1
    # One query answered the lookup: it is told on the lookup's own span, not a child.
    (leader,) = [s for s in lookups if not attribute(s, semconv.DNS_COALESCED)]
    assert attribute(leader, semconv.DNS_RCODE) == "NOERROR"
    assert attribute(leader, semconv.DNS_QUESTION_TYPE) == "A"
    assert named(spans, "dns.query") == []


async def test_concurrent_callers_of_a_missing_name_share_one_query_and_its_nxdomain(
    dns: ZoneServer, make_resolver: MakeResolver, spans: InMemorySpanExporter
) -> None:
    resolver = make_resolver()
    dns.set_delay(0.1)
    missing = f"missing.{RELAY}."

    outcomes = await asyncio.gather(
        *(resolver.resolve(missing) for _ in range(5)), return_exceptions=True
    )

    assert all(isinstance(outcome, NameNotFound) for outcome in outcomes)
    assert len(dns.log) == 1
    failed = named(spans, "dns.lookup")
    assert len(failed) == 5
    assert {attribute(s, semconv.ERROR_TYPE) for s in failed} == {"NameNotFound"}
    assert sum(1 for s in failed if attribute(s, semconv.DNS_COALESCED)) == 4
    # Once it is over, nothing of it is left in flight: the name is asked afresh (here
    # from the negative cache) by the next caller, who waits for no one.
    with pytest.raises(NameNotFound):
        await resolver.resolve(missing)
    assert len(dns.log) == 1


async def test_callers_waiting_on_a_cancelled_callers_lookup_ask_again_and_get_the_answer(
    dns: ZoneServer, make_resolver: MakeResolver, arrivals: Arrivals
) -> None:
    resolver = make_resolver()
    dns.set_delay(0.3)
    first = asyncio.ensure_future(resolver.resolve(RELAY))
    await arrivals.reach(1)
    waiting = [asyncio.ensure_future(resolver.resolve(RELAY)) for _ in range(3)]
    await asyncio.sleep(0)  # one pass of the loop: each is now waiting on the lookup in flight

    first.cancel()
    results = await asyncio.wait_for(asyncio.gather(*waiting), timeout=5)

    assert {r.addresses for r in results} == {(RELAY_IP,)}
    with pytest.raises(asyncio.CancelledError):
        await first
    # The cancelled caller's query, then one more that the three waiting callers share.
    assert len(dns.log) == 2


async def test_a_dropped_query_is_retried_and_succeeds_on_attempt_two(
    dns: ZoneServer, make_resolver: MakeResolver, spans: InMemorySpanExporter
) -> None:
    resolver = make_resolver(timeout=0.5, attempts=2)
    dns.drop_next(1)

    resolution = await resolver.resolve(f"{RELAY}.")
    await telemetry_finished()

    assert resolution.addresses == (RELAY_IP,)
    assert [e.outcome for e in dns.log] == ["dropped", "NOERROR"]
    first, second = named(spans, "dns.query")
    assert (attribute(first, semconv.DNS_ATTEMPT), attribute(first, semconv.DNS_RCODE)) == (
        1,
        "TIMEOUT",
    )
    assert attribute(first, semconv.ERROR_TYPE) == "DnsTimeout"
    assert first.status.status_code is StatusCode.ERROR
    assert (attribute(second, semconv.DNS_ATTEMPT), attribute(second, semconv.DNS_RCODE)) == (
        2,
        "NOERROR",
    )


async def test_servfail_is_retried(
    dns: ZoneServer, make_resolver: MakeResolver, spans: InMemorySpanExporter
) -> None:
    resolver = make_resolver(attempts=3)
    dns.answer_with_rcode("SERVFAIL", next_n=1)

    resolution = await resolver.resolve(f"{RELAY}.")
    await telemetry_finished()

    assert resolution.addresses == (RELAY_IP,)
    assert [e.outcome for e in dns.log] == ["SERVFAIL", "NOERROR"]
    assert [attribute(s, semconv.DNS_RCODE) for s in named(spans, "dns.query")] == [
        "SERVFAIL",
        "NOERROR",
    ]


async def test_nxdomain_is_an_answer_and_is_never_retried(
    dns: ZoneServer, make_resolver: MakeResolver
) -> None:
    resolver = make_resolver(attempts=3, search=SEARCH[1:], ndots=1)

    with pytest.raises(NameNotFound) as caught:
        await resolver.resolve("nothing.private.aws.internal")

    asked = [(e.qname, e.outcome) for e in dns.log]
    assert asked == [
        ("nothing.private.aws.internal", "NXDOMAIN"),
        ("nothing.private.aws.internal.svc.cluster.local", "NXDOMAIN"),
        ("nothing.private.aws.internal.cluster.local", "NXDOMAIN"),
    ]
    assert not caught.value.retryable
    assert str(caught.value) == (
        "nothing.private.aws.internal: NXDOMAIN for every candidate "
        "(nothing.private.aws.internal, nothing.private.aws.internal.svc.cluster.local, "
        f"nothing.private.aws.internal.cluster.local) from {dns.address}"
    )


async def test_a_retryable_failure_stops_the_search_instead_of_trying_the_next_candidate(
    dns: ZoneServer, make_resolver: MakeResolver
) -> None:
    resolver = make_resolver(attempts=2, search=SEARCH, ndots=5)
    dns.answer_with_rcode("SERVFAIL")

    with pytest.raises(DnsServerFailure) as caught:
        await resolver.resolve(RELAY)

    assert {e.qname for e in dns.log} == {f"{RELAY}.{SEARCH[0]}"}
    assert caught.value.attempts == 2
    assert str(caught.value) == (
        f"{RELAY} (as {RELAY}.{SEARCH[0]}): SERVFAIL from {dns.address} after 2 attempts"
    )


async def test_retries_rotate_through_the_nameservers(
    dns: ZoneServer, make_resolver: MakeResolver, spans: InMemorySpanExporter
) -> None:
    async with ZoneServer("127.0.0.1", 0, records={RELAY: {"A": [RELAY_IP]}}) as silent:
        silent.go_silent()
        resolver = make_resolver(nameservers=(silent.address, dns.address), timeout=0.3)

        resolution = await resolver.resolve(f"{RELAY}.")
    await telemetry_finished()

    assert resolution.addresses == (RELAY_IP,)
    assert [attribute(s, semconv.DNS_NAMESERVER) for s in named(spans, "dns.query")] == [
        str(silent.address),
        str(dns.address),
    ]


async def test_an_existing_name_without_addresses_is_no_addresses_not_name_not_found(
    dns: ZoneServer, make_resolver: MakeResolver, spans: InMemorySpanExporter
) -> None:
    dns.set_records("txt.private.aws.internal", "TXT", ['"hello"'])
    resolver = make_resolver(attempts=3)

    with pytest.raises(NoAddresses) as caught:
        await resolver.resolve("txt.private.aws.internal.")

    assert len(dns.log) == 1
    assert str(caught.value) == (
        f"txt.private.aws.internal.: no address records (NOERROR, no data) from {dns.address}"
    )
    (lookup,) = named(spans, "dns.lookup")
    assert lookup.status.status_code is StatusCode.ERROR
    assert attribute(lookup, semconv.ERROR_TYPE) == "NoAddresses"


async def test_refused_is_retried_then_reported_with_the_nameserver(
    dns: ZoneServer, make_resolver: MakeResolver
) -> None:
    resolver = make_resolver(attempts=2)
    dns.answer_with_rcode("REFUSED")

    with pytest.raises(DnsRefused) as caught:
        await resolver.resolve(f"{RELAY}.")

    assert caught.value.retryable
    assert [e.outcome for e in dns.log] == ["REFUSED", "REFUSED"]
    assert str(caught.value) == f"{RELAY}.: REFUSED from {dns.address} after 2 attempts"


async def test_a_closed_port_is_unreachable(make_resolver: MakeResolver) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        closed = HostPort("127.0.0.1", probe.getsockname()[1])
    resolver = make_resolver(nameservers=(closed,), attempts=2)

    with pytest.raises(DnsUnreachable) as caught:
        await resolver.resolve(f"{RELAY}.")

    assert [q.rcode for q in caught.value.queries] == ["UNREACHABLE", "UNREACHABLE"]
    assert str(caught.value) == (
        f"{RELAY}.: {closed} unreachable (connection refused) after 2 attempts"
    )


async def test_timeout_says_which_nameserver_and_how_many_attempts(
    dns: ZoneServer, make_resolver: MakeResolver
) -> None:
    resolver = make_resolver(timeout=0.3, attempts=2)
    dns.go_silent()

    with pytest.raises(DnsTimeout) as caught:
        await resolver.resolve(f"{RELAY}.")

    assert [e.outcome for e in dns.log] == ["dropped", "dropped"]
    assert str(caught.value) == (
        f"{RELAY}.: no answer from {dns.address} after 2 attempts (timeout 0.3 s each)"
    )


async def test_an_invalid_name_is_refused_before_anything_is_sent(
    dns: ZoneServer, make_resolver: MakeResolver
) -> None:
    resolver = make_resolver()

    with pytest.raises(InvalidName, match="empty label"):
        await resolver.resolve("relay..internal")
    assert not dns.log


async def test_a_deadline_bounds_the_whole_lookup_when_the_server_is_silent(
    dns: ZoneServer, make_resolver: MakeResolver
) -> None:
    resolver = make_resolver(timeout=2.0, attempts=5, search=SEARCH, ndots=5)
    dns.go_silent()
    started = time.monotonic()

    with pytest.raises(DnsTimeout):
        await resolver.resolve(RELAY, deadline=started + 0.5)

    assert time.monotonic() - started < 3.0


async def test_a_deadline_already_past_raises_at_once_without_a_query(
    dns: ZoneServer, make_resolver: MakeResolver
) -> None:
    resolver = make_resolver()

    with pytest.raises(DnsTimeout, match="deadline"):
        await resolver.resolve(f"{RELAY}.", deadline=time.monotonic() - 1)
    assert not dns.log


async def test_resolution_as_dict_is_json_ready(make_resolver: MakeResolver) -> None:
    resolver = make_resolver()
    resolution = await resolver.resolve(f"{RELAY}.")

    shown = json.loads(json.dumps(resolution.as_dict()))

    assert shown["addresses"] == [RELAY_IP]
    assert shown["source"] == "wire"
    assert shown["queries"][0]["rcode"] == "NOERROR"
    assert shown["queries"][0]["fqdn"] == RELAY
    assert RELAY_IP in resolution.describe()


async def test_close_ends_a_lookup_waiting_to_retry_and_no_query_goes_out_after_it(
    dns: ZoneServer, make_resolver: MakeResolver
) -> None:
    waiting = asyncio.Event()
    released = asyncio.Event()

    async def backoff_until_released(_: float) -> None:
        waiting.set()
        await released.wait()

    resolver = make_resolver(timeout=0.1, attempts=3, sleep=backoff_until_released)
    dns.go_silent()
    pending = asyncio.ensure_future(resolver.resolve(f"{RELAY}."))
    await asyncio.wait_for(waiting.wait(), timeout=3)

    await resolver.close()
    sent = len(dns.log)
    released.set()  # a lookup that close() left waiting would now go on to its retry

    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(pending, timeout=3)
    assert len(dns.log) == sent == 1


async def test_close_ends_a_lookup_in_flight_and_resolve_after_close_is_an_error(
    dns: ZoneServer, make_resolver: MakeResolver, arrivals: Arrivals
) -> None:
    resolver = make_resolver(timeout=5.0)
    dns.go_silent()
    pending = asyncio.ensure_future(resolver.resolve(f"{RELAY}."))
    await arrivals.reach(1)  # the query is out, and will never be answered

    await resolver.close()

    with pytest.raises(asyncio.CancelledError):
        await pending
    with pytest.raises(RuntimeError):
        await resolver.resolve(f"{RELAY}.")
