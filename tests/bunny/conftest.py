"""Fixtures for bunny's tests: a real DNS server on 127.0.0.1 and resolvers pointed at it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bunny.dns.resolver import Resolver
from bunny.dns.settings import ResolverSettings
from bunny.dns.tracing import DnsTelemetry, TracedResolver
from bunny.retry import Clock, Sleep
from lab.dnsserver import QueryLogEntry, ZoneServer
from tests.telemetry_fixtures import span_exporter

RELAY = "relay.private.aws.internal"
RELAY_IP = "10.20.0.5"
ZONE = "private.aws.internal"
# Like a pod's resolv.conf in AKS: three search domains, none of which holds relay.
SEARCH = ("bunny.svc.cluster.local", "svc.cluster.local", "cluster.local")

MakeResolver = Callable[..., TracedResolver]


class Arrivals:
    """Queries as they reach the zone server, for a test to wait on instead of sleeping."""

    def __init__(self) -> None:
        self.count = 0
        self._changed = asyncio.Event()

    def note(self, _: QueryLogEntry) -> None:
        self.count += 1
        self._changed.set()

    async def reach(self, count: int, *, within: float = 5.0) -> None:
        """Return once ``count`` queries have arrived in all."""
        async with asyncio.timeout(within):
            while self.count < count:
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
def arrivals() -> Arrivals:
    return Arrivals()


@pytest.fixture
async def dns(arrivals: Arrivals) -> AsyncIterator[ZoneServer]:
    """The zone's server. Its negative TTL is long on purpose: c-ares would keep an
    NXDOMAIN for a minute unless bunny flushes it."""
    async with ZoneServer(
        "127.0.0.1",
        0,
        zone=ZONE,
        negative_ttl=60,
        records={RELAY: {"A": [RELAY_IP]}},
        on_query=arrivals.note,
    ) as server:
        yield server


@pytest.fixture
async def make_resolver(dns: ZoneServer) -> AsyncIterator[MakeResolver]:
    """``make_resolver(**settings)``: a traced resolver asking ``dns`` (IPv4 only unless
    told), closed after the test. ``clock=`` and ``sleep=`` replace its own."""
    made: list[TracedResolver] = []
    telemetry = DnsTelemetry()

    def make(
        *, clock: Clock | None = None, sleep: Sleep | None = None, **overrides: Any
    ) -> TracedResolver:
        values: dict[str, Any] = {
            "nameservers": (dns.address,),
            "family": "ipv4",
            "timeout": 1.0,
            "attempts": 2,
        }
        values.update(overrides)
        settings = ResolverSettings(**values)
        resolver = Resolver(settings, clock=clock or time.monotonic, sleep=sleep or asyncio.sleep)
        traced = telemetry.wrap(resolver)
        made.append(traced)
        return traced

    yield make
    for resolver in made:
        await resolver.close()


@pytest.fixture
def spans() -> InMemorySpanExporter:
    exporter = span_exporter()
    exporter.clear()
    return exporter


async def telemetry_finished() -> None:
    """Let the loop pass once: a lookup answered from the wire finishes its span and
    metrics then, after its caller has the answer."""
    await asyncio.sleep(0)


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    """Finished spans called ``name``, in the order they started."""
    found = [span for span in exporter.get_finished_spans() if span.name == name]
    return sorted(found, key=lambda span: span.start_time or 0)


def attribute(span: ReadableSpan, key: str) -> object:
    """The span's attribute ``key`` (None when it has none)."""
    return (span.attributes or {}).get(key)
