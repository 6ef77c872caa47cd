"""bunny follows DNS while jobs flow: TTL expiry moves it, a dead DNS server does not stop it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bunny.batch import build_requests
from bunny.dns.resolver import Resolver
from bunny.dns.settings import ResolverSettings
from bunny.dns.tracing import DnsTelemetry, TracedResolver
from bunny.relaypool import RelayPool
from bunny.submitter import SubmitSettings, UnarySubmitter
from lab.dnsserver import ZoneServer
from tests.conftest import RELAY_NAME, StartRelay
from tests.relay.harness import wait_until


def _resolver(zone: ZoneServer, **overrides: Any) -> TracedResolver:
    settings = ResolverSettings(
        nameservers=(zone.address,), family="ipv4", timeout=0.3, attempts=2, **overrides
    )
    return DnsTelemetry().wrap(Resolver(settings))


async def test_ttl_expiry_moves_jobs_to_the_new_address_without_failures(
    zone: ZoneServer, start_relay: StartRelay
) -> None:
    async with start_relay("127.0.0.1:0") as old, start_relay(f"127.0.0.2:{old.port}") as new:
        zone.set_records(RELAY_NAME, "A", ["127.0.0.1"], ttl=1)
        resolver = _resolver(zone)
        pool = RelayPool(resolver, RELAY_NAME, old.port)
        runner = UnarySubmitter(pool, SubmitSettings(timeout_s=5))
        served: list[tuple[float, str | None]] = []
        failed = []
        moved_at = 0.0
        try:
            requests = build_requests(kind="echo", payload=b"x", count=10_000)
            started = time.monotonic()
            for request in requests:
                now = time.monotonic()
                if not moved_at and now - started > 0.5:
                    zone.set_records(RELAY_NAME, "A", ["127.0.0.2"], ttl=1)
                    moved_at = now
                if now - started > 3.5:
                    break
                outcome = await runner.run(request)
                served.append((time.monotonic(), outcome.relay_address))
                if not outcome.ok:
                    failed.append(outcome)
                await asyncio.sleep(0.02)
        finally:
            await runner.close()
            await pool.close()
            await resolver.close()
    assert not failed
    new_address = f"127.0.0.2:{new.port}"
    assert served[0][1] == f"127.0.0.1:{old.port}"
    # Followed within TTL (1 s) plus one second, and never went back.
    first_new = next(at for at, address in served if address == new_address)
    assert first_new - moved_at < 2.0
    assert all(address == new_address for at, address in served if at > first_new)


async def test_jobs_keep_flowing_from_stale_answer_when_dns_stops_answering(
    zone: ZoneServer, start_relay: StartRelay
) -> None:
    async with start_relay() as relay:
        zone.set_records(RELAY_NAME, "A", ["127.0.0.1"], ttl=1)
        resolver = _resolver(zone, stale_max=30.0)
        pool = RelayPool(resolver, RELAY_NAME, relay.port)
        runner = UnarySubmitter(pool, SubmitSettings(timeout_s=5))
        try:
            requests = build_requests(kind="echo", payload=b"x", count=3)
            first = await runner.run(next(requests))
            zone.go_silent()
            assert resolver.cached(RELAY_NAME) is not None
            # Real time is the subject: the answer's 1 s TTL runs out on the real clock.
            await wait_until(lambda: resolver.cached(RELAY_NAME) is None)
            stale = [await runner.run(request) for request in requests]
        finally:
            await runner.close()
            await pool.close()
            await resolver.close()
    assert first.ok
    assert first.dns_source == "wire"
    assert all(outcome.ok for outcome in stale)
    assert {outcome.dns_source for outcome in stale} == {"stale-cache"}
