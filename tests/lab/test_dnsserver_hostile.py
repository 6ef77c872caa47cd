"""The lab's DNS server's hostile answers are what they say they are, read off the wire."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator

import dns.exception
import dns.flags
import dns.message
import pytest

from lab.dnsserver import HOSTILE_MODES, ZoneServer

RELAY = "relay.private.aws.internal"


@pytest.fixture
async def server() -> AsyncIterator[ZoneServer]:
    async with ZoneServer(
        zone="private.aws.internal", records={RELAY: {"A": ["10.20.0.5"]}}
    ) as zone:
        yield zone


class _OneAnswer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.answer.done():
            self.answer.set_result(data)


async def _raw_udp(server: ZoneServer, query: dns.message.Message) -> bytes:
    """The bytes the server sends back, unparsed."""
    transport, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
        _OneAnswer, remote_addr=(server.host, server.port)
    )
    try:
        transport.sendto(query.to_wire())
        return await asyncio.wait_for(protocol.answer, timeout=2)
    finally:
        transport.close()


async def _raw_tcp(server: ZoneServer, query: dns.message.Message) -> bytes:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        wire = query.to_wire()
        writer.write(struct.pack("!H", len(wire)) + wire)
        (length,) = struct.unpack("!H", await reader.readexactly(2))
        return await reader.readexactly(length)
    finally:
        writer.close()
        await writer.wait_closed()


def _parses(wire: bytes) -> dns.message.Message | None:
    try:
        return dns.message.from_wire(wire)
    except dns.exception.DNSException:
        return None


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
async def test_each_hostile_mode_sends_what_it_names_and_logs_it(
    server: ZoneServer, tcp: bool
) -> None:
    for mode in HOSTILE_MODES:
        server.answer_hostile(mode, next_n=1)
        query = dns.message.make_query(RELAY, "A")
        wire = await (_raw_tcp if tcp else _raw_udp)(server, query)
        parsed = _parses(wire)
        query_id = struct.pack("!H", query.id)
        if mode == "garbage":
            assert wire[:2] == query_id
        elif mode == "garbage-id":
            assert wire[:2] != query_id
        elif mode in ("truncated", "pointer-loop", "header-only"):
            assert wire[:2] == query_id
            assert parsed is None, mode
        elif mode == "wrong-question":
            assert parsed is not None
            assert parsed.id == query.id
            assert str(parsed.question[0].name) == "wrong-question.invalid."
        elif mode == "empty":
            assert wire == b""
        else:
            assert mode == "always-tc"
            assert parsed is not None
            assert parsed.flags & dns.flags.TC
            assert not parsed.answer
        assert server.log[-1].outcome == f"hostile:{mode}"
    # next_n=1: the mode ends, and the next answer is an honest one.
    honest = _parses(await _raw_udp(server, dns.message.make_query(RELAY, "A")))
    assert honest is not None
    assert honest.answer


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="garbage"):
        ZoneServer().answer_hostile("polite")
