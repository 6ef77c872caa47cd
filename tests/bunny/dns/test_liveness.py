"""bunny.dns.liveness tells a DNS server that is up from one that is down or unreachable, by asking
it something it answers itself; real DNS servers over the wire."""

from __future__ import annotations

import socket

import pytest

from bunny.dns.alivequery import DEFAULT_QUERIES, AliveQuery, parse_alive_query
from bunny.dns.liveness import check
from bunnyrelay.settings import HostPort, SettingError
from lab.dnsserver import ZoneServer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cluster.local", AliveQuery("cluster.local", "SOA", "IN")),
        (".", AliveQuery(".", "SOA", "IN")),
        ("./ns", AliveQuery(".", "NS", "IN")),
        ("version.bind/TXT/CH", AliveQuery("version.bind", "TXT", "CHAOS")),
        ("svc.cluster.local/SOA/IN", AliveQuery("svc.cluster.local", "SOA", "IN")),
    ],
)
def test_an_alive_query_is_name_type_and_class(text: str, expected: AliveQuery) -> None:
    assert parse_alive_query(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("bad..name", "label"),
        ("cluster.local/HINFO", "the type must be one of"),
        ("version.bind/TXT/HS", "the class must be IN or CH"),
        ("a/SOA/IN/extra", "expected NAME"),
    ],
)
def test_a_bad_alive_query_says_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(SettingError, match=message):
        parse_alive_query(text)


async def test_a_server_that_answers_anything_is_up() -> None:
    async with ZoneServer(zone="private.aws.internal") as server:
        # A REFUSED or NXDOMAIN for a name outside its zone proves as much as an answer.
        found = await check(server.address, timeout=1.0, attempts=1)
    assert found.alive
    assert found.evidence.split(":")[0] in {str(query) for query in DEFAULT_QUERIES}


async def test_a_silent_server_shows_no_sign_of_life_within_the_timeout() -> None:
    async with ZoneServer(zone="private.aws.internal") as server:
        server.go_silent()
        found = await check(server.address, timeout=0.3, attempts=2)
    assert not found.alive
    assert found.evidence == "no answer to . NS, version.bind CH TXT within 0.6 s"


async def test_a_port_nobody_listens_on_is_told_apart_from_silence() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # The socket is closed: the port answers with ICMP port unreachable.
    found = await check(HostPort("127.0.0.1", port), timeout=1.0, attempts=1)
    assert not found.alive
    assert found.evidence == f"nothing listens on 127.0.0.1:{port} (the connection was refused)"
