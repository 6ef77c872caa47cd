"""The DNS benchmark's server: real CoreDNS serving the bench zone, and a DNS-only smoke run.

Nothing here checks a timing: the smoke run checks that every method looked names up
without failures and that the report says which server answered.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import dns.asyncquery
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from lab.bench.zone import (
    CACHED_NAME,
    UNCACHED_NAME,
    CoreDnsZone,
    coredns_zone,
    numbered,
)
from lab.tools import COREDNS, ToolMissingError, tool
from tests.lab.bench.harness import run_bench_module


@pytest.fixture
async def zone(tmp_path: Path) -> AsyncIterator[CoreDnsZone]:
    try:
        tool(COREDNS)
    except ToolMissingError as error:
        pytest.fail(str(error), pytrace=False)
    async with coredns_zone(tmp_path) as running:
        yield running


async def _ask(zone: CoreDnsZone, name: str, rdtype: str) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    return await dns.asyncquery.udp(query, zone.address.host, port=zone.address.port, timeout=2.0)


@pytest.mark.parametrize(
    ("name", "ttl"),
    [(numbered(0), 300), (numbered(987654321), 300), (CACHED_NAME, 300), (UNCACHED_NAME, 0)],
)
async def test_coredns_answers_every_bench_name_with_one_a_record(
    zone: CoreDnsZone, name: str, ttl: int
) -> None:
    answer = await _ask(zone, name, "A")

    assert answer.rcode() == dns.rcode.NOERROR
    (rrset,) = answer.answer
    assert rrset.name.to_text() == name + "."
    assert rrset.rdtype == dns.rdatatype.A
    assert rrset.ttl == ttl
    assert [rdata.to_text() for rdata in rrset] == ["127.0.0.1"]


async def test_coredns_says_nodata_for_aaaa_and_nxdomain_for_other_names(
    zone: CoreDnsZone,
) -> None:
    nodata = await _ask(zone, numbered(7), "AAAA")
    missing = await _ask(zone, f"elsewhere.{CACHED_NAME}", "A")

    assert nodata.rcode() == dns.rcode.NOERROR
    assert not nodata.answer
    assert missing.rcode() == dns.rcode.NXDOMAIN
    assert zone.version.startswith("1.")


@pytest.mark.timeout(180)
async def test_dns_only_run_asks_coredns_and_every_method_succeeds() -> None:
    result = await run_bench_module("--dns-only", "--quick", within=150)

    assert result["cases"] == []
    dns_result = result["dns"]
    assert dns_result["server"].startswith("CoreDNS ")
    assert any(note.startswith("every client asks CoreDNS") for note in dns_result["notes"])
    uncached = {
        row["method"]: row
        for row in dns_result["rows"]
        if row["group"] == "uncached" and row["lookups_per_s"] is not None
    }
    assert set(uncached) == {
        "aiodns query_dns (bare)",
        "dnspython async resolve",
        "bunny resolve(), traced, exported",
        "bunny resolve(), tracing off",
        "the floor: aiodns on the loop + one exported span + the histogram",
    }
    for row in dns_result["rows"]:
        assert row["failed"] == 0, row
    assert {target["target"] for target in dns_result["targets"]} >= {
        "traced uncached latency / bare aiodns (p50)",
        "traced uncached lookups/s / dnspython",
        "traced uncached CPU per lookup / the floor's",
        "the floor (aiodns on the loop + one exported span + the histogram): latency / bare aiodns",
    }
