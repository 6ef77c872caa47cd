"""c-ares under bunny: on the event loop, its own cache told apart from the wire, its
adaptive timeout kept from misjudging a path that slowed down."""

from __future__ import annotations

import asyncio
import time

import aiodns
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bunny.dns import ares
from bunny.dns.ares import LoopDrivenResolver
from bunny.errors import (
    DnsBadAnswer,
    DnsTimeout,
)
from bunnyrelay import semconv
from lab.dnsserver import ZoneServer
from tests.bunny.conftest import RELAY, RELAY_IP, MakeResolver, attribute, named, telemetry_finished


async def test_aiodns_runs_on_the_event_loop_without_an_event_thread() -> None:
    # bunny's resolver overrides private methods of aiodns.DNSResolver to choose its
    # socket-callback mode; an aiodns release that renames them must fail here.
    for name in ("_make_channel", "_sock_state_cb", "_start_timer", "_timer_cb"):
        assert callable(getattr(aiodns.DNSResolver, name, None)), name
    resolver = LoopDrivenResolver(nameservers=["127.0.0.1"], tries=1, timeout=1.0)
    try:
        assert resolver._event_thread is False
    finally:
        await resolver.close()


async def test_c_ares_cache_answers_are_labelled_as_such_not_as_wire(
    dns: ZoneServer, make_resolver: MakeResolver, spans: InMemorySpanExporter
) -> None:
    resolver = make_resolver()
    await resolver.resolve(RELAY)
    await telemetry_finished()
    spans.clear()

    # Another spelling is another entry in bunny's cache, but the same question
    # to c-ares, which answers it from memory.
    second = await resolver.resolve(f"{RELAY}.")
    await telemetry_finished()

    assert len(dns.log) == 1
    assert second.source == "c-ares-cache"
    assert [q.source for q in second.queries] == ["c-ares-cache"]
    (lookup,) = named(spans, "dns.lookup")
    assert attribute(lookup, semconv.DNS_SOURCE) == "c-ares-cache"
    assert attribute(lookup, semconv.DNS_RCODE) == "NOERROR"
    assert attribute(lookup, semconv.DNS_QUERIES_SENT) == 0


async def test_records_for_another_name_are_a_bad_answer(
    dns: ZoneServer, make_resolver: MakeResolver, spans: InMemorySpanExporter
) -> None:
    resolver = make_resolver(attempts=2)
    dns.misname_next(5)

    with pytest.raises(DnsBadAnswer) as caught:
        await resolver.resolve(f"{RELAY}.")

    # The retry really went out: the bad answer was flushed from c-ares' cache.
    assert len(dns.log) == 2
    assert "misnamed.invalid A" in str(caught.value)
    assert [attribute(s, semconv.ERROR_TYPE) for s in named(spans, "dns.query")] == [
        "DnsBadAnswer",
        "DnsBadAnswer",
    ]


async def test_a_query_cut_short_by_c_ares_adaptive_timeout_is_retried_on_a_fresh_channel(
    dns: ZoneServer, make_resolver: MakeResolver, spans: InMemorySpanExporter
) -> None:
    resolver = make_resolver(timeout=2.0, attempts=2)
    for n in range(4):  # c-ares learns a sub-millisecond latency for this server
        dns.set_records(f"warm{n}.private.aws.internal", "A", ["10.0.0.1"])
        await resolver.resolve(f"warm{n}.private.aws.internal.")
    dns.set_delay(0.6)  # now the path is slower, but well inside our 2 s timeout
    await telemetry_finished()
    spans.clear()

    resolution = await resolver.resolve(f"{RELAY}.")
    await telemetry_finished()

    assert resolution.addresses == (RELAY_IP,)
    first, second = named(spans, "dns.query")
    # c-ares gave up after 5x its average latency (250 ms at least), not our 2 s...
    assert attribute(first, semconv.DNS_RCODE) == "TIMEOUT"
    assert resolution.queries[0].latency_ms < 1500
    # ...and a new channel, which starts from our timeout, got the answer.
    assert attribute(second, semconv.DNS_RCODE) == "NOERROR"


async def test_a_timeout_follows_c_ares_own_clock_on_a_channel_already_in_use(
    dns: ZoneServer, make_resolver: MakeResolver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # After a first answer the channel is idle: c-ares 1.34 closes its socket, and a c-ares
    # that keeps it open ticks on with nothing pending, the next tick up to a second away.
    # A query sent then must still time out on its own 0.3 s.
    idle = asyncio.Event()
    sock_state, tick = LoopDrivenResolver._sock_state_cb, LoopDrivenResolver._timer_cb

    def noted_sock_state(self: LoopDrivenResolver, fd: int, readable: bool, writable: bool) -> None:
        sock_state(self, fd, readable, writable)
        if self._timer is None:  # the last socket closed
            idle.set()

    def noted_tick(self: LoopDrivenResolver) -> None:
        tick(self)
        idle.set()

    monkeypatch.setattr(LoopDrivenResolver, "_sock_state_cb", noted_sock_state)
    monkeypatch.setattr(LoopDrivenResolver, "_timer_cb", noted_tick)
    resolver = make_resolver(timeout=0.3, attempts=1)
    await resolver.resolve(f"{RELAY}.")
    await asyncio.wait_for(idle.wait(), timeout=3)
    dns.go_silent()
    started = time.monotonic()

    with pytest.raises(DnsTimeout):
        await resolver.resolve(f"other.{RELAY}.")

    # Generous: the point is "its own 0.3 s", not "whenever the 1 s tick comes".
    assert time.monotonic() - started < 0.9


async def test_the_ledger_of_c_ares_cache_stays_bounded_and_true_to_what_c_ares_holds(
    dns: ZoneServer, make_resolver: MakeResolver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A resolver asked ever new names (one per job, say) must not grow without end;
    # past the bound nothing has expired, so c-ares' cache is emptied with the ledger.
    monkeypatch.setattr(ares, "LEDGER_MAX_ENTRIES", 4)
    resolver = make_resolver()
    names = [f"n{n}.private.aws.internal" for n in range(6)]
    for name in names:
        dns.set_records(name, "A", ["10.0.0.1"])
        await resolver.resolve(name)
    asked = len(dns.log)

    # Another spelling skips bunny's cache and reaches c-ares: the first names were
    # flushed out of it, so they go to the wire again; the newest is still held.
    first = await resolver.resolve(f"{names[0]}.")
    newest = await resolver.resolve(f"{names[-1]}.")

    assert first.source == "wire"
    assert newest.source == "c-ares-cache"
    assert len(dns.log) == asked + 1
