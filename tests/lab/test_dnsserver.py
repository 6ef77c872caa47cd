"""The lab's DNS server answers like an authoritative server, over UDP and TCP, and misbehaves
on request; queried here with dnspython's own client."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from bunnyrelay.settings import SettingError
from lab.dnsserver import ZoneServer, parse_record

RELAY = "relay.private.aws.internal"
ZONE = "private.aws.internal"


@pytest.fixture
async def server() -> AsyncIterator[ZoneServer]:
    async with ZoneServer(
        zone=ZONE, ttl=30, negative_ttl=7, records={RELAY: {"A": ["10.20.0.5", "10.20.0.6"]}}
    ) as zone:
        yield zone


async def _ask(
    server: ZoneServer, name: str, rdtype: str = "A", *, tcp: bool = False, wait: float = 2.0
) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    send = dns.asyncquery.tcp if tcp else dns.asyncquery.udp
    return await send(query, server.host, timeout=wait, port=server.port)


def _addresses(response: dns.message.Message) -> list[str]:
    return sorted(
        rdata.to_text()
        for rrset in response.answer
        if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)
        for rdata in rrset
    )


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
async def test_answers_authoritatively_over_udp_and_tcp(server: ZoneServer, tcp: bool) -> None:
    response = await _ask(server, RELAY, tcp=tcp)

    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    assert _addresses(response) == ["10.20.0.5", "10.20.0.6"]
    assert response.answer[0].ttl == 30
    (entry,) = server.log
    assert (entry.qname, entry.qtype, entry.transport, entry.outcome) == (
        RELAY,
        "A",
        "tcp" if tcp else "udp",
        "NOERROR",
    )


async def test_binds_an_ephemeral_port_on_loopback_when_asked_for_port_0(
    server: ZoneServer,
) -> None:
    assert server.port > 0
    assert str(server.address) == f"127.0.0.1:{server.port}"


async def test_nxdomain_and_nodata_carry_the_zone_soa_with_the_negative_ttl(
    server: ZoneServer,
) -> None:
    missing = await _ask(server, f"nope.{ZONE}")
    nodata = await _ask(server, RELAY, "AAAA")
    empty_non_terminal = await _ask(server, ZONE.split(".", 1)[1])  # aws.internal
    outside = await _ask(server, "relay.svc.cluster.local")

    assert missing.rcode() == dns.rcode.NXDOMAIN
    assert nodata.rcode() == dns.rcode.NOERROR
    assert nodata.answer == []
    for response in (missing, nodata):
        (soa,) = response.authority
        assert soa.rdtype == dns.rdatatype.SOA
        assert soa.name.to_text() == f"{ZONE}."
        assert soa.ttl == 7
        assert soa[0].minimum == 7
    # A parent of a name that exists exists too (RFC 8020): NODATA, not NXDOMAIN.
    assert empty_non_terminal.rcode() == dns.rcode.NOERROR
    # Names outside the zone (a pod's search domains) are NXDOMAIN with the root's SOA.
    assert outside.rcode() == dns.rcode.NXDOMAIN
    assert outside.authority[0].name.to_text() == "."


async def test_records_change_at_runtime(server: ZoneServer) -> None:
    server.set_records(RELAY, "A", ["10.20.0.9"], ttl=1)
    changed = await _ask(server, RELAY)
    server.remove_records(RELAY)
    removed = await _ask(server, RELAY)

    assert _addresses(changed) == ["10.20.0.9"]
    assert changed.answer[0].ttl == 1
    assert removed.rcode() == dns.rcode.NXDOMAIN


async def test_cnames_in_the_zone_are_chased(server: ZoneServer) -> None:
    server.set_records(f"jobs.{ZONE}", "CNAME", [f"{RELAY}."])

    response = await _ask(server, f"jobs.{ZONE}")

    assert [rrset.rdtype for rrset in response.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]
    assert _addresses(response) == ["10.20.0.5", "10.20.0.6"]
    with pytest.raises(ValueError, match="CNAME"):
        server.set_records(f"jobs.{ZONE}", "A", ["10.0.0.1"])


async def test_drop_next_loses_exactly_that_many_queries(server: ZoneServer) -> None:
    server.drop_next(1)

    with pytest.raises(dns.exception.Timeout):
        await _ask(server, RELAY, wait=0.3)
    answered = await _ask(server, RELAY)

    assert _addresses(answered)
    assert [entry.outcome for entry in server.log] == ["dropped", "NOERROR"]


async def test_random_drops_follow_the_seed() -> None:
    patterns = []
    for _ in range(2):
        async with ZoneServer(seed=42, records={RELAY: {"A": ["10.20.0.5"]}}) as zone:
            zone.drop_randomly(0.5)
            for _ in range(12):
                with contextlib.suppress(dns.exception.Timeout):
                    await _ask(zone, RELAY, wait=0.1)
            patterns.append([entry.outcome for entry in zone.log])
    assert patterns[0] == patterns[1]
    assert "dropped" in patterns[0]
    assert "NOERROR" in patterns[0]


async def test_servfail_for_the_next_n_then_normal_answers(server: ZoneServer) -> None:
    server.answer_with_rcode("SERVFAIL", next_n=2)

    rcodes = [(await _ask(server, RELAY)).rcode() for _ in range(3)]

    assert rcodes == [dns.rcode.SERVFAIL, dns.rcode.SERVFAIL, dns.rcode.NOERROR]


async def test_refused_until_faults_are_cleared(server: ZoneServer) -> None:
    server.answer_with_rcode("REFUSED")
    refused = [(await _ask(server, RELAY, tcp=tcp)).rcode() for tcp in (False, True)]
    server.clear_faults()

    assert refused == [dns.rcode.REFUSED, dns.rcode.REFUSED]
    assert (await _ask(server, RELAY)).rcode() == dns.rcode.NOERROR


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
async def test_silent_answers_nothing_until_resumed(server: ZoneServer, tcp: bool) -> None:
    server.go_silent()
    with pytest.raises(dns.exception.Timeout):
        await _ask(server, RELAY, tcp=tcp, wait=0.3)
    server.resume()

    assert _addresses(await _ask(server, RELAY, tcp=tcp))
    assert [entry.outcome for entry in server.log] == ["dropped", "NOERROR"]


async def test_delay_holds_each_answer_back(server: ZoneServer) -> None:
    server.set_delay(0.4)

    with pytest.raises(dns.exception.Timeout):
        await _ask(server, RELAY, wait=0.1)
    # The delayed answers are sent concurrently, not one after another.
    answers = await asyncio.gather(*(_ask(server, RELAY, wait=2.0) for _ in range(5)))

    assert all(_addresses(answer) for answer in answers)


async def test_misname_answers_with_records_of_another_owner(server: ZoneServer) -> None:
    server.misname_next(1)

    misnamed = await _ask(server, RELAY)
    normal = await _ask(server, RELAY)

    assert misnamed.question[0].name.to_text() == f"{RELAY}."
    assert misnamed.answer[0].name.to_text() == "misnamed.invalid."
    assert normal.answer[0].name.to_text() == f"{RELAY}."


async def test_a_large_answer_is_truncated_over_udp_and_whole_over_tcp(
    server: ZoneServer,
) -> None:
    server.set_records(RELAY, "A", [f"10.30.{n // 256}.{n % 256}" for n in range(100)])
    query = dns.message.make_query(RELAY, "A", use_edns=False)

    over_udp = await dns.asyncquery.udp(query, server.host, timeout=2, port=server.port)
    over_tcp = await dns.asyncquery.tcp(query, server.host, timeout=2, port=server.port)

    assert over_udp.flags & dns.flags.TC
    assert len(_addresses(over_tcp)) == 100


def test_record_flags_are_checked() -> None:
    flag = parse_record("relay.private.aws.internal=A:10.0.0.1")
    assert (flag.name, flag.rdtype, flag.value) == (RELAY, "A", "10.0.0.1")
    assert parse_record("relay=aaaa:fd00::1").value == "fd00::1"
    for bad in ("relay", "relay=A", "relay=A:not-an-ip", "relay=BOGUS:1"):
        with pytest.raises(SettingError):
            parse_record(bad)


async def test_runs_as_a_command_until_sigterm() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lab.dnsserver",
        "--listen",
        "127.0.0.1:0",
        "--record",
        f"{RELAY}=A:127.0.0.1",
        "--ttl",
        "30",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
        port = int(line.rsplit(":", 1)[1])
        query = dns.message.make_query(RELAY, "A")
        response = await dns.asyncquery.udp(query, "127.0.0.1", timeout=2, port=port)
        assert _addresses(response) == ["127.0.0.1"]
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--record", "relay"], "expected NAME=TYPE:VALUE"),
        (["--listen", "localhost:53"], "is not an IP address"),
        (["--listen", "127.0.0.1:70000"], "the port must be a number"),
        (["--ttl", "soon"], "is not a whole number"),
    ],
)
async def test_bad_flags_are_rejected_clearly(args: list[str], message: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lab.dnsserver",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 2
    assert message in stderr.decode()
