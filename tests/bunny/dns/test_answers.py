"""A hostile DNS server: bunny's resolver answers with a typed error, in bounded time, or
with a sane answer; it never hangs and never trusts what it should not.

The server is real (UDP and TCP on loopback); only its answers are malformed on purpose
(``ZoneServer.answer_hostile``), the way a broken middlebox or a spoofer would send them.
"""

from __future__ import annotations

import time

import pytest

from bunny.errors import (
    BunnyError,
    DnsBadAnswer,
    DnsLookupFailed,
    DnsTimeout,
    NameNotFound,
    NoAddresses,
)
from lab.dnsserver import HOSTILE_MODES, ZoneServer
from tests.bunny.conftest import RELAY, RELAY_IP, MakeResolver

TIMEOUT_S = 0.5
ATTEMPTS = 2
# Every attempt may take the whole timeout; the rest is backoff and bookkeeping.
BOUND_S = TIMEOUT_S * ATTEMPTS + 1.0

EXPECTED: dict[str, type[DnsLookupFailed]] = {
    "garbage": DnsBadAnswer,
    "garbage-id": DnsBadAnswer,
    "truncated": DnsBadAnswer,
    "pointer-loop": DnsBadAnswer,
    "header-only": DnsBadAnswer,
    # c-ares drops these as answers to nothing it asked, and waits: a timeout.
    "wrong-question": DnsTimeout,
    "empty": DnsTimeout,
    # Truncated over UDP, and again over TCP with no records: c-ares reports no data.
    "always-tc": NoAddresses,
}


def test_every_hostile_mode_has_an_expected_outcome() -> None:
    assert set(EXPECTED) == set(HOSTILE_MODES)


@pytest.mark.parametrize("mode", sorted(HOSTILE_MODES))
async def test_a_hostile_answer_is_a_typed_error_within_timeout_times_attempts(
    dns: ZoneServer, make_resolver: MakeResolver, mode: str
) -> None:
    resolver = make_resolver(timeout=TIMEOUT_S, attempts=ATTEMPTS)
    dns.answer_hostile(mode)
    started = time.monotonic()
    with pytest.raises(BunnyError) as failed:
        await resolver.resolve(RELAY)
    elapsed = time.monotonic() - started

    assert isinstance(failed.value, EXPECTED[mode]), repr(failed.value)
    assert failed.value.name == RELAY
    assert str(dns.address) in str(failed.value), "the error names the nameserver"
    assert elapsed < BOUND_S, f"{mode}: {elapsed:.2f} s"
    assert len(dns.queries(RELAY)) >= 1


async def test_after_the_hostile_answers_stop_the_name_resolves_again(
    dns: ZoneServer, make_resolver: MakeResolver
) -> None:
    resolver = make_resolver(timeout=TIMEOUT_S, attempts=ATTEMPTS)
    dns.answer_hostile("garbage", next_n=ATTEMPTS)
    with pytest.raises(DnsBadAnswer):
        await resolver.resolve(RELAY)
    resolution = await resolver.resolve(RELAY)
    assert resolution.addresses == (RELAY_IP,)


async def test_a_retry_gets_past_one_hostile_answer(
    dns: ZoneServer, make_resolver: MakeResolver
) -> None:
    resolver = make_resolver(timeout=TIMEOUT_S, attempts=ATTEMPTS)
    dns.answer_hostile("truncated", next_n=1)
    resolution = await resolver.resolve(RELAY)
    assert resolution.addresses == (RELAY_IP,)
    assert [q.rcode for q in resolution.queries] == ["BADRESP", "NOERROR"]


@pytest.mark.parametrize(
    ("ttl", "expected"),
    [(2**32 - 1, 0), (2**31, 0), (2**31 - 1, 3600), (86_400 * 365, 3600)],
    ids=["all-ones", "top-bit-set", "largest-valid", "a-year"],
)
async def test_absurd_ttls_are_read_as_zero_or_capped(
    dns: ZoneServer, make_resolver: MakeResolver, ttl: int, expected: int
) -> None:
    dns.set_records(RELAY, "A", [RELAY_IP], ttl=ttl)
    resolution = await make_resolver(max_ttl=3600).resolve(RELAY)
    # RFC 2181 §8: a TTL with the top bit set means zero; anything else is capped.
    assert resolution.ttl == expected
    assert resolution.addresses == (RELAY_IP,)


async def test_a_cname_loop_ends_in_a_typed_error_at_once(
    dns: ZoneServer, make_resolver: MakeResolver
) -> None:
    dns.set_records("loop-a.private.aws.internal", "CNAME", ["loop-b.private.aws.internal."])
    dns.set_records("loop-b.private.aws.internal", "CNAME", ["loop-a.private.aws.internal."])
    started = time.monotonic()
    with pytest.raises(NoAddresses):
        await make_resolver().resolve("loop-a.private.aws.internal")
    assert time.monotonic() - started < BOUND_S


async def test_records_for_another_name_are_never_used(
    dns: ZoneServer, make_resolver: MakeResolver
) -> None:
    dns.misname_next(100)
    with pytest.raises(DnsBadAnswer, match=r"misnamed\.invalid"):
        await make_resolver(timeout=TIMEOUT_S, attempts=ATTEMPTS).resolve(RELAY)


async def test_each_query_a_lookup_reports_says_what_went_where_field_by_field(
    dns: ZoneServer, make_resolver: MakeResolver
) -> None:
    resolver = make_resolver(family="any")

    answered = await resolver.resolve(RELAY)
    with pytest.raises(NameNotFound) as missing:
        await resolver.resolve(f"nothing.{RELAY}.")

    by_type = {query.qtype: query for query in answered.queries}
    a, aaaa = by_type["A"], by_type["AAAA"]
    assert (a.fqdn, a.nameserver, a.attempt, a.rcode, a.source) == (
        RELAY,
        str(dns.address),
        1,
        "NOERROR",
        "wire",
    )
    assert (a.answers, isinstance(a.ttl, int), a.latency_ms >= 0) == ((RELAY_IP,), True, True)
    assert (aaaa.rcode, aaaa.answers, aaaa.ttl) == ("NOERROR", (), None)
    assert answered.addresses == (RELAY_IP,)
    assert answered.source == "wire"
    assert {(q.qtype, q.rcode, q.answers) for q in missing.value.queries} == {
        ("A", "NXDOMAIN", ()),
        ("AAAA", "NXDOMAIN", ()),
    }
