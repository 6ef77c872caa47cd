"""The lookup metrics an operator reads: each lookup's outcome, rcode and nameserver, its
queries, and how old the stale answers served were, from a real DNS server over the wire."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from bunny.dns import lookupmetrics
from bunny.dns.resolver import Resolver
from bunny.dns.settings import ResolverSettings
from bunny.dns.tracing import DnsTelemetry, TracedResolver
from bunny.errors import DnsServerFailure, DnsTimeout, NameNotFound
from bunnyrelay import semconv
from lab.dnsserver import ZoneServer
from tests.bunny.conftest import RELAY, RELAY_IP, SEARCH, telemetry_finished
from tests.fakeclock import FakeClock
from tests.metrics_capture import MetricsCapture

Points = Callable[[str], list[tuple[dict[str, Any], Any]]]
"""``points(metric)``: (attributes, data point) of every point of ``metric`` collected now."""


@pytest.fixture
async def measured(
    dns: ZoneServer,
) -> AsyncIterator[tuple[Callable[..., TracedResolver], Points]]:
    capture = MetricsCapture()
    provider = capture.provider
    telemetry = DnsTelemetry(meter_provider=provider)
    made: list[TracedResolver] = []

    def make(*, clock: FakeClock | None = None, **overrides: Any) -> TracedResolver:
        values: dict[str, Any] = {
            "nameservers": (dns.address,),
            "family": "ipv4",
            "timeout": 0.3,
            "attempts": 2,
        }
        values.update(overrides)
        resolver = telemetry.wrap(
            Resolver(ResolverSettings(**values), clock=clock or time.monotonic)
        )
        made.append(resolver)
        return resolver

    yield make, capture.points
    for resolver in made:
        await resolver.close()
    provider.shutdown()


def _lookups(points: Points) -> dict[tuple[str, str, str], int]:
    """(outcome, rcode, error.type) -> count."""
    return {
        (
            str(attributes[semconv.DNS_OUTCOME]),
            str(attributes[semconv.DNS_RCODE]),
            str(attributes.get(semconv.ERROR_TYPE, "")),
        ): point.value
        for attributes, point in points(semconv.METRIC_DNS_LOOKUPS)
    }


async def test_lookups_are_counted_by_outcome_rcode_and_the_nameserver_that_answered(
    dns: ZoneServer, measured: tuple[Callable[..., TracedResolver], Points]
) -> None:
    make, points = measured
    resolver = make()
    await resolver.resolve(RELAY)
    with pytest.raises(NameNotFound):
        await resolver.resolve("missing.private.aws.internal.")
    dns.answer_with_rcode("SERVFAIL")
    with pytest.raises(DnsServerFailure):
        await resolver.resolve("other.private.aws.internal.")
    dns.clear_faults()
    dns.answer_with_rcode("REFUSED")
    with pytest.raises(Exception, match="REFUSED"):
        await resolver.resolve("third.private.aws.internal.")
    dns.clear_faults()
    dns.go_silent()
    with pytest.raises(DnsTimeout):
        await resolver.resolve("fourth.private.aws.internal.")

    assert _lookups(points) == {
        ("answered", "NOERROR", ""): 1,
        ("failed", "NXDOMAIN", "NameNotFound"): 1,
        ("failed", "SERVFAIL", "DnsServerFailure"): 1,
        ("failed", "REFUSED", "DnsRefused"): 1,
        ("failed", "TIMEOUT", "DnsTimeout"): 1,
    }
    nameservers = {
        attributes[semconv.DNS_NAMESERVER] for attributes, _ in points(semconv.METRIC_DNS_LOOKUPS)
    }
    assert nameservers == {str(dns.address)}
    timed = {
        str(attributes[semconv.DNS_RCODE]): point.count
        for attributes, point in points(semconv.METRIC_DNS_QUERY_DURATION)
    }
    # Two attempts for each failure worth retrying, one query for the rest.
    assert timed == {"NOERROR": 1, "NXDOMAIN": 1, "SERVFAIL": 2, "REFUSED": 2, "TIMEOUT": 2}


async def test_queries_per_lookup_show_what_the_search_list_costs(
    measured: tuple[Callable[..., TracedResolver], Points],
) -> None:
    make, points = measured
    # ndots:5 and two search domains: the absolute name is asked last, the third candidate.
    resolver = make(search=SEARCH[:2], ndots=5)
    await resolver.resolve(RELAY.rstrip("."))
    await telemetry_finished()
    (point,) = [point for _, point in points(semconv.METRIC_DNS_LOOKUP_QUERIES)]
    assert (point.count, point.sum) == (1, 3)


async def test_stale_answers_are_counted_with_how_long_past_expiry_they_were(
    dns: ZoneServer, measured: tuple[Callable[..., TracedResolver], Points]
) -> None:
    make, points = measured
    dns.set_records(RELAY, "A", [RELAY_IP], ttl=0)
    clock = FakeClock()
    resolver = make(clock=clock, stale_max=600.0, stale_recheck=30.0)
    await resolver.resolve(RELAY)
    dns.go_silent()
    clock.advance(40)
    assert (await resolver.resolve(RELAY)).source == "stale-cache"
    clock.advance(20)  # within the recheck back-off: stale again, no query
    assert (await resolver.resolve(RELAY)).source == "stale-cache"
    await telemetry_finished()

    assert _lookups(points)[("stale", "TIMEOUT", "DnsTimeout")] == 1
    assert _lookups(points)[("stale", "", "DnsTimeout")] == 1
    (point,) = [point for _, point in points(semconv.METRIC_DNS_STALE_AGE)]
    assert point.count == 2
    assert point.sum == pytest.approx(40 + 60)


async def test_past_the_bound_new_names_share_one_series_rather_than_one_each(
    measured: tuple[Callable[..., TracedResolver], Points],
) -> None:
    make, points = measured
    resolver = make()
    for n in range(lookupmetrics.MAX_NAMES + 8):
        with pytest.raises(NameNotFound):
            await resolver.resolve(f"gone{n}.private.aws.internal.")

    names = [
        str(attributes[semconv.DNS_QUESTION_NAME])
        for attributes, _ in points(semconv.METRIC_DNS_LOOKUP_QUERIES)
    ]
    # One point per attribute set: the names past the bound are counted together.
    assert len(names) == len(set(names)) == lookupmetrics.MAX_NAMES + 1
    assert "_other" in names
