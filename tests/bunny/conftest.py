"""Fixtures for the resolver tests: a real DNS server on 127.0.0.1 and resolvers pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bunny.resolver import Resolver, ResolverSettings
from lab.dnsserver import ZoneServer
from tests.telemetry_fixtures import span_exporter

RELAY = "relay.private.aws.internal"
RELAY_IP = "10.20.0.5"
ZONE = "private.aws.internal"
# Like a pod's resolv.conf in AKS: three search domains, none of which holds relay.
SEARCH = ("bunny.svc.cluster.local", "svc.cluster.local", "cluster.local")

MakeResolver = Callable[..., Resolver]


@pytest.fixture
async def dns() -> AsyncIterator[ZoneServer]:
    """The zone's server. Its negative TTL is long on purpose: c-ares would keep an
    NXDOMAIN for a minute unless bunny flushes it."""
    async with ZoneServer(
        "127.0.0.1", 0, zone=ZONE, negative_ttl=60, records={RELAY: {"A": [RELAY_IP]}}
    ) as server:
        yield server


@pytest.fixture
async def make_resolver(dns: ZoneServer) -> AsyncIterator[MakeResolver]:
    """``make_resolver(**settings)``: a Resolver asking ``dns`` (IPv4 only unless told),
    closed after the test."""
    made: list[Resolver] = []

    def make(**overrides: Any) -> Resolver:
        values: dict[str, Any] = {
            "nameservers": (dns.address,),
            "family": "ipv4",
            "timeout": 1.0,
            "attempts": 2,
        }
        values.update(overrides)
        resolver = Resolver(ResolverSettings(**values))
        made.append(resolver)
        return resolver

    yield make
    for resolver in made:
        await resolver.close()


@pytest.fixture
def spans() -> InMemorySpanExporter:
    exporter = span_exporter()
    exporter.clear()
    return exporter


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    """Finished spans called ``name``, in the order they started."""
    found = [span for span in exporter.get_finished_spans() if span.name == name]
    return sorted(found, key=lambda span: span.start_time or 0)
