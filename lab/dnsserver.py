"""A small authoritative DNS server for the demo and the tests, over UDP and TCP.

It stands in for the far end of the cross-cloud path (Route 53 behind the VPC
resolver): records can be changed while it runs, negative answers carry an SOA
in the authority section so resolvers can cache them (RFC 2308), and CNAMEs
inside the zone are chased like an authoritative server does.

For tests it can misbehave on purpose, the ways a real path does:

- ``drop_next(n)`` / ``drop_randomly(p)``: queries lost on the way (seeded RNG);
- ``answer_with_rcode("SERVFAIL" | "REFUSED", next_n)``: an upstream that fails;
- ``go_silent()`` / ``resume()``: a cut tunnel, nothing comes back at all;
- ``set_delay(seconds)``: a slow hop, per query;
- ``misname_next(n)``: answers whose records belong to another name;
- ``answer_hostile(mode, next_n)``: answers no honest server sends (see
  :data:`HOSTILE_MODES`: garbage, truncated packets, compression loops, answers
  to another question). Absurd TTLs and CNAME loops need no mode: they are
  records (``set_records(..., ttl=2**32 - 1)``, two CNAMEs naming each other).

Every query that arrives is written to ``log`` (name, type, transport, and the
rcode sent or ``"dropped"``), so a test can count what really reached the wire.

In-process::

    async with ZoneServer(records={"relay.private.aws.internal": {"A": ["10.1.2.3"]}}) as dns:
        print(dns.address)  # 127.0.0.1:<ephemeral port>

As a command (runs until SIGTERM or SIGINT)::

    python -m lab.dnsserver --listen 127.0.0.1:5353 \\
        --record relay.private.aws.internal=A:127.0.0.1 --ttl 30
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import os
import random
import signal
import socket
import struct
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from bunnyrelay.settings import HostPort, SettingError, parse_ip_port

DROPPED = "dropped"

HOSTILE_MODES: dict[str, str] = {
    "garbage": "random bytes after the query's own id, so the client reads them as the answer",
    "garbage-id": "random bytes with another id: an answer to nothing the client asked",
    "truncated": "the real answer cut off in the middle of its records",
    "pointer-loop": "a header, the question, and an answer whose name is a compression "
    "pointer to itself",
    "wrong-question": "a well-formed answer to another question (another name)",
    "empty": "a message of zero bytes",
    "always-tc": "the TC (truncated) flag and no records, over UDP and over TCP alike, so "
    "retrying over TCP never helps",
    "header-only": "twelve bytes of header claiming records that never follow",
}
"""What :meth:`ZoneServer.answer_hostile` can send instead of the answer; the query log's
outcome for such a query is ``hostile:<mode>``."""
_MAX_CNAME_CHAIN = 8
_MISNAME = dns.name.from_text("misnamed.invalid.")
# Answers without EDNS must fit the classic 512-byte UDP limit (RFC 1035).
_CLASSIC_UDP_SIZE = 512

_T = TypeVar("_T")

Records = Mapping[str, Mapping[str, Sequence[str]]]


@dataclass(frozen=True, slots=True)
class QueryLogEntry:
    """One query as it reached the server."""

    qname: str
    """The question name, lower case, without the trailing dot."""
    qtype: str
    """``A``, ``AAAA``, ``CNAME``…"""
    transport: str
    """``udp`` or ``tcp``."""
    outcome: str
    """The rcode sent back (``NOERROR``, ``NXDOMAIN``, ``SERVFAIL``…) or ``dropped``."""
    at: float
    """``time.monotonic()`` when it arrived."""


class ZoneServer:
    """An authoritative DNS server with records that change at runtime and fault controls."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        records: Records | None = None,
        ttl: int = 30,
        negative_ttl: int = 5,
        zone: str = ".",
        seed: int = 0,
        on_query: Callable[[QueryLogEntry], None] | None = None,
        log_limit: int = 100_000,
    ) -> None:
        """
        ``records`` maps a name to ``{type: [values]}`` (values in zone-file text,
        e.g. ``"10.1.2.3"`` or ``"target.example."`` for a CNAME), all served with
        ``ttl``. ``negative_ttl`` is the SOA minimum and SOA TTL sent with
        NXDOMAIN/NODATA, i.e. how long a resolver may cache the absence. ``zone``
        is the apex whose SOA goes with those answers. Names outside it are answered
        too (NXDOMAIN unless given records), the way the resolver path in front of
        Route 53 answers for the cluster's search domains. ``on_query`` is called
        with each query log entry as it is written; the log keeps the latest
        ``log_limit`` entries.
        """
        if ttl < 0 or negative_ttl < 0:
            raise ValueError("ttl and negative_ttl must be at least 0")
        self.host = host
        self._requested_port = port
        self.port = 0
        self.default_ttl = ttl
        self.negative_ttl = negative_ttl
        self.zone = dns.name.from_text(zone if zone.endswith(".") else zone + ".")
        self.log: deque[QueryLogEntry] = deque(maxlen=log_limit)
        self._on_query = on_query
        self._zone: dict[dns.name.Name, dict[dns.rdatatype.RdataType, dns.rrset.RRset]] = {}
        self._serial = 1
        self._rng = random.Random(seed)
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tcp_writers: set[asyncio.StreamWriter] = set()
        self._pending: set[asyncio.Task[None]] = set()
        self.clear_faults()
        for name, by_type in (records or {}).items():
            for rdtype, values in by_type.items():
                self.set_records(name, rdtype, values)

    # --- records -------------------------------------------------------------------

    def set_records(
        self, name: str, rdtype: str, values: Iterable[str], ttl: int | None = None
    ) -> None:
        """Replace the ``rdtype`` records of ``name``; an empty ``values`` removes them.

        A CNAME cannot share its name with other records (RFC 1034 §3.6.2), so
        setting one where the other exists raises ValueError.
        """
        owner = self._absolute(name)
        kind = dns.rdatatype.RdataType.make(rdtype.upper())
        texts = list(values)
        if not texts:
            self.remove_records(name, rdtype)
            return
        node = self._zone.get(owner, {})
        others = set(node) - {kind}
        if others and dns.rdatatype.CNAME in {kind, *others}:
            raise ValueError(f"{owner}: a CNAME cannot share its name with other records")
        rrset = dns.rrset.from_text_list(
            owner, self.default_ttl if ttl is None else ttl, dns.rdataclass.IN, kind, texts
        )
        node[kind] = rrset
        self._zone[owner] = node
        self._serial += 1

    def remove_records(self, name: str, rdtype: str | None = None) -> None:
        """Remove ``name``'s records of ``rdtype``, or all of them."""
        owner = self._absolute(name)
        node = self._zone.get(owner)
        if node is None:
            return
        if rdtype is None:
            del self._zone[owner]
        else:
            node.pop(dns.rdatatype.RdataType.make(rdtype.upper()), None)
            if not node:
                del self._zone[owner]
        self._serial += 1

    def _absolute(self, name: str) -> dns.name.Name:
        return dns.name.from_text(name if name.endswith(".") else name + ".")

    # --- faults ----------------------------------------------------------------------

    def clear_faults(self) -> None:
        """Answer every query normally again, at once."""
        self._silent = False
        self._drop_next = 0
        self._drop_probability = 0.0
        self._fault_rcode: dns.rcode.Rcode | None = None
        self._fault_rcode_left: int | None = None
        self._delay = 0.0
        self._misname_next = 0
        self._hostile: str | None = None
        self._hostile_left: int | None = None

    def drop_next(self, count: int) -> None:
        """Drop the next ``count`` queries without answering."""
        self._drop_next = count

    def drop_randomly(self, probability: float) -> None:
        """Drop each query with ``probability`` (from the server's seeded RNG)."""
        if not 0.0 <= probability <= 1.0:
            raise ValueError("probability must be between 0 and 1")
        self._drop_probability = probability

    def answer_with_rcode(self, rcode: str, next_n: int | None = None) -> None:
        """Answer with ``rcode`` (e.g. SERVFAIL, REFUSED): the next ``next_n`` queries, or all."""
        self._fault_rcode = dns.rcode.from_text(rcode)
        self._fault_rcode_left = next_n

    def go_silent(self) -> None:
        """Stop answering anything (queries are still logged, as dropped)."""
        self._silent = True

    def resume(self) -> None:
        """Answer again after :meth:`go_silent`."""
        self._silent = False

    def set_delay(self, seconds: float) -> None:
        """Hold every answer back by ``seconds``."""
        if seconds < 0:
            raise ValueError("delay must be at least 0")
        self._delay = seconds

    def misname_next(self, count: int) -> None:
        """Answer the next ``count`` queries with records owned by another name."""
        self._misname_next = count

    def answer_hostile(self, mode: str, next_n: int | None = None) -> None:
        """Send ``mode``'s malformed answer (:data:`HOSTILE_MODES`) to the next ``next_n``
        queries, or to all, over UDP and TCP alike."""
        if mode not in HOSTILE_MODES:
            raise ValueError(f"{mode!r} is not one of: {', '.join(HOSTILE_MODES)}")
        self._hostile = mode
        self._hostile_left = next_n

    def _take_hostile(self) -> str | None:
        mode = self._hostile
        if mode is not None and self._hostile_left is not None:
            self._hostile_left -= 1
            if self._hostile_left <= 0:
                self._hostile = None
        return mode

    # --- query log -------------------------------------------------------------------

    def queries(
        self, qname: str | None = None, qtype: str | None = None, outcome: str | None = None
    ) -> list[QueryLogEntry]:
        """The logged queries, optionally only those matching each given field."""
        wanted_name = qname.lower().rstrip(".") if qname is not None else None
        return [
            entry
            for entry in self.log
            if (wanted_name is None or entry.qname == wanted_name)
            and (qtype is None or entry.qtype == qtype.upper())
            and (outcome is None or entry.outcome == outcome)
        ]

    def clear_log(self) -> None:
        self.log.clear()

    # --- answering -------------------------------------------------------------------

    def _handle(self, wire: bytes, transport: str) -> tuple[bytes | None, float]:
        """Decide what to send back for one query: (the message's bytes, without TCP's
        length prefix, or None to drop; delay)."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            # Garbage gets no answer: there is no question to copy into one.
            self._note(QueryLogEntry("", "", transport, DROPPED, time.monotonic()))
            return None, 0.0
        if query.question:
            question = query.question[0]
            qname = question.name.to_text(omit_final_dot=True).lower()
            qtype = dns.rdatatype.to_text(question.rdtype)
        else:
            qname, qtype = "", ""
        response = self._respond(query) if not self._drops() else None
        if response is None:
            self._note(QueryLogEntry(qname, qtype, transport, DROPPED, time.monotonic()))
            return None, 0.0
        payload = _udp_wire(response) if transport == "udp" else response.to_wire()
        outcome = dns.rcode.to_text(response.rcode())
        mode = self._take_hostile()
        if mode is not None:
            payload = self._mangle(mode, query, payload)
            outcome = f"hostile:{mode}"
        self._note(QueryLogEntry(qname, qtype, transport, outcome, time.monotonic()))
        return payload, self._delay

    def _mangle(self, mode: str, query: dns.message.Message, answer: bytes) -> bytes:
        """The bytes ``mode`` sends in place of ``answer`` (the honest one)."""
        query_id = struct.pack("!H", query.id)
        noise = self._rng.randbytes(self._rng.randrange(1, 300))
        if mode == "garbage":
            return query_id + noise
        if mode == "garbage-id":
            return struct.pack("!H", (query.id + 1) % 65536) + noise
        if mode == "truncated":
            # The header promises every record; the bytes stop inside the first answer.
            header_and_question = 12 + len(_name_wire(query.question[0].name)) + 4
            return answer[: max(header_and_question + 3, (len(answer) + header_and_question) // 2)]
        if mode == "pointer-loop":
            question = query.question[0]
            qname = _name_wire(question.name)
            # ID, QR|AA|RD, one question, one answer; the answer's owner points at itself.
            header = query_id + struct.pack("!HHHHH", 0x8500, 1, 1, 0, 0)
            body = qname + struct.pack("!HH", question.rdtype, question.rdclass)
            here = len(header) + len(body)
            return (
                header
                + body
                + struct.pack("!H", 0xC000 | here)
                + struct.pack("!HHIH", question.rdtype, 1, 30, 4)
                + bytes(4)
            )
        if mode == "wrong-question":
            other = dns.message.make_query("wrong-question.invalid.", query.question[0].rdtype)
            other.id = query.id
            response = dns.message.make_response(other)
            response.answer.append(
                dns.rrset.from_text("wrong-question.invalid.", 30, "IN", "A", "192.0.2.66")
            )
            return response.to_wire()
        if mode == "empty":
            return b""
        if mode == "always-tc":
            truncated = dns.message.make_response(query)
            truncated.flags |= dns.flags.TC | dns.flags.AA
            return truncated.to_wire()
        assert mode == "header-only"
        return query_id + struct.pack("!HHHHH", 0x8500, 1, 1, 0, 0)

    def _note(self, entry: QueryLogEntry) -> None:
        self.log.append(entry)
        if self._on_query is not None:
            self._on_query(entry)

    def _drops(self) -> bool:
        if self._silent:
            return True
        if self._drop_next > 0:
            self._drop_next -= 1
            return True
        return self._drop_probability > 0 and self._rng.random() < self._drop_probability

    def _respond(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
            return response
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response
        if self._fault_rcode is not None:
            rcode = self._fault_rcode
            if self._fault_rcode_left is not None:
                self._fault_rcode_left -= 1
                if self._fault_rcode_left <= 0:
                    self._fault_rcode = None
            response.set_rcode(rcode)
            return response
        question = query.question[0]
        self._resolve_into(response, question.name, question.rdtype)
        if self._misname_next > 0 and response.answer:
            self._misname_next -= 1
            response.answer = [_renamed(rrset, _MISNAME) for rrset in response.answer]
        return response

    def _resolve_into(
        self, response: dns.message.Message, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType
    ) -> None:
        name = qname
        for _ in range(_MAX_CNAME_CHAIN):
            node = self._zone.get(name, {})
            if rdtype in node:
                response.answer.append(node[rdtype])
                return
            cname = node.get(dns.rdatatype.CNAME)
            if cname is None:
                break
            response.answer.append(cname)
            target = getattr(cname[0], "target", None)
            if not isinstance(target, dns.name.Name):
                return
            name = target
        else:
            return
        if not self._exists(name):
            response.set_rcode(dns.rcode.NXDOMAIN)
        response.authority.append(self._soa(name))

    def _exists(self, name: dns.name.Name) -> bool:
        # Empty non-terminals exist too (RFC 8020): NODATA, not NXDOMAIN.
        return name == self.zone or any(owner.is_subdomain(name) for owner in self._zone)

    def _soa(self, name: dns.name.Name) -> dns.rrset.RRset:
        # The SOA must be an ancestor of the name it speaks for.
        apex = self.zone if name.is_subdomain(self.zone) else dns.name.root
        return dns.rrset.from_text(
            apex,
            self.negative_ttl,
            dns.rdataclass.IN,
            dns.rdatatype.SOA,
            f"ns.lab.invalid. hostmaster.lab.invalid. {self._serial} 60 30 3600 "
            f"{self.negative_ttl}",
        )

    # --- transports ------------------------------------------------------------------

    @property
    def address(self) -> HostPort:
        """Where it listens (UDP and TCP share the port); valid once started."""
        return HostPort(self.host, self.port)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        # Port 0 picks a free UDP port; TCP must then get the same number, which
        # another process may hold, so try a few.
        tries = 20 if self._requested_port == 0 else 1
        for attempt in range(tries):
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self),
                local_addr=(self.host, self._requested_port),
            )
            port = int(transport.get_extra_info("sockname")[1])
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, self.host, port)
            except OSError as exc:
                transport.close()
                if exc.errno != errno.EADDRINUSE or attempt == tries - 1:
                    raise
                continue
            self._udp = transport
            self.port = port
            return

    async def stop(self) -> None:
        for task in list(self._pending):
            task.cancel()
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            for writer in list(self._tcp_writers):
                writer.close()
            await self._tcp.wait_closed()
            self._tcp = None

    async def __aenter__(self) -> ZoneServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _later(self, delay: float, send: Callable[[bytes], None], payload: bytes) -> None:
        task = asyncio.get_running_loop().create_task(_send_after(delay, send, payload))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _udp_received(self, data: bytes, addr: tuple[str, int]) -> None:
        payload, delay = self._handle(data, "udp")
        if payload is None or self._udp is None:
            return
        udp = self._udp

        def send(wire: bytes) -> None:
            if udp.is_closing():
                return
            if wire:
                udp.sendto(wire, addr)
                return
            # asyncio (before 3.12) drops empty datagrams; the "empty" mode means to send one.
            fileno = udp.get_extra_info("socket").fileno()
            with socket.socket(fileno=os.dup(fileno)) as raw:
                raw.sendto(b"", addr)

        if delay > 0:
            self._later(delay, send, payload)
        else:
            send(payload)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._tcp_writers.add(writer)
        try:
            while True:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                payload, delay = self._handle(await reader.readexactly(length), "tcp")
                if payload is None:
                    continue
                if delay > 0:
                    await asyncio.sleep(delay)
                writer.write(struct.pack("!H", len(payload)) + payload)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._tcp_writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def _send_after(delay: float, send: Callable[[bytes], None], payload: bytes) -> None:
    await asyncio.sleep(delay)
    send(payload)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: ZoneServer) -> None:
        self._server = server

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._server._udp_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors from clients that went away are not the server's problem.
        pass


def _udp_wire(response: dns.message.Message) -> bytes:
    limit = _CLASSIC_UDP_SIZE
    if response.edns >= 0:
        # make_response copied the client's advertised EDNS buffer size here.
        limit = max(response.request_payload, _CLASSIC_UDP_SIZE)
    return response.to_wire(max_size=limit, prefer_truncation=True)


def _name_wire(name: dns.name.Name) -> bytes:
    wire = name.to_wire()  # bytes when given no file to write to
    assert wire is not None
    return wire


def _renamed(rrset: dns.rrset.RRset, owner: dns.name.Name) -> dns.rrset.RRset:
    copy = dns.rrset.RRset(owner, rrset.rdclass, rrset.rdtype)
    copy.update_ttl(rrset.ttl)
    for rdata in rrset:
        copy.add(rdata)
    return copy


# --- command line ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordFlag:
    name: str
    rdtype: str
    value: str


def parse_record(text: str) -> RecordFlag:
    """Parse ``NAME=TYPE:VALUE`` (``relay.private.aws.internal=A:10.1.2.3``)."""
    name, sep, rest = text.partition("=")
    rdtype, sep2, value = rest.partition(":")
    if not sep or not sep2 or not name.strip() or not value.strip():
        raise SettingError(f"{text!r}: expected NAME=TYPE:VALUE, e.g. relay.example=A:10.0.0.1")
    rdtype = rdtype.strip().upper()
    try:
        kind = dns.rdatatype.RdataType.make(rdtype)
        dns.name.from_text(name.strip())
        dns.rdata.from_text(dns.rdataclass.IN, kind, value.strip())
    except (dns.exception.DNSException, ValueError) as exc:
        raise SettingError(f"{text!r}: {exc}") from None
    return RecordFlag(name.strip(), rdtype, value.strip())


def _converter(parse: Callable[[str], _T]) -> Callable[[str], _T]:
    """Turn SettingError into argparse's own "invalid value" message."""

    def convert(text: str) -> _T:
        try:
            return parse(text)
        except SettingError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__
    return convert


def _listen(text: str) -> HostPort:
    host, _, port = text.rpartition(":")
    bare_ipv6 = text.count(":") > 1 and not text.startswith("[")
    if port == "0" and host and not bare_ipv6:
        # Port 0 (any free port) is fine for a server, unlike for parse_ip_port's peers.
        return HostPort(parse_ip_port(host, default_port=53).host, 0)
    return parse_ip_port(text, default_port=53)


def _seconds(text: str) -> int:
    if not text.isdigit():
        raise SettingError(f"{text!r} is not a whole number of seconds")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lab.dnsserver",
        description="A small authoritative DNS server (UDP and TCP) for the bunny/relay lab.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--listen",
        type=_converter(_listen),
        default=HostPort("127.0.0.1", 5353),
        metavar="IP:PORT",
        help="address for UDP and TCP (port 0 picks a free one)",
    )
    parser.add_argument(
        "--record",
        type=_converter(parse_record),
        action="append",
        default=[],
        metavar="NAME=TYPE:VALUE",
        help="a record to serve (repeat for more; same name and type adds a value)",
    )
    parser.add_argument(
        "--ttl", type=_converter(_seconds), default=30, help="TTL of the records, in seconds"
    )
    parser.add_argument(
        "--negative-ttl",
        type=_converter(_seconds),
        default=5,
        help="SOA minimum for NXDOMAIN/NODATA answers, in seconds",
    )
    parser.add_argument(
        "--zone", default=".", help="zone apex, the owner of the SOA sent with negative answers"
    )
    parser.add_argument("--verbose", action="store_true", help="print one line per query")
    return parser


async def serve(args: argparse.Namespace) -> None:
    records: dict[str, dict[str, list[str]]] = {}
    for flag in args.record:
        records.setdefault(flag.name, {}).setdefault(flag.rdtype, []).append(flag.value)
    listen: HostPort = args.listen

    def show(entry: QueryLogEntry) -> None:
        line = f"dnsserver: {entry.transport} {entry.qname} {entry.qtype} -> {entry.outcome}"
        print(line, flush=True)

    server = ZoneServer(
        listen.host,
        listen.port,
        records=records,
        ttl=args.ttl,
        negative_ttl=args.negative_ttl,
        zone=args.zone,
        on_query=show if args.verbose else None,
        log_limit=10_000,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        # The first line says where it listens, for scripts that asked for port 0.
        count = len(args.record)
        print(f"dnsserver: serving {count} record(s) on udp+tcp {server.address}", flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        asyncio.run(serve(args))
    except OSError as exc:
        print(f"dnsserver: cannot listen on {args.listen}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
