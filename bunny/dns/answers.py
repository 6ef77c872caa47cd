"""An answer judged: the addresses and TTL bunny may use, or the typed failure of the path.

Only records for the name asked (or the CNAME chain from it, every link present)
count; address records of another name, type or class, and addresses that do
not parse, make the answer a :class:`~bunny.errors.DnsBadAnswer`. NXDOMAIN and
NODATA are answers; every other outcome is a failure of the path, typed by rcode.
"""

from __future__ import annotations

import socket
from typing import NamedTuple

import pycares

from bunny.dns.ares import Reply
from bunny.dns.model import DnsQuery
from bunny.errors import (
    DnsBadAnswer,
    DnsLookupFailed,
    DnsRefused,
    DnsServerFailure,
    DnsTimeout,
    DnsUnreachable,
)

_RECORD_TYPES = {"A": pycares.QUERY_TYPE_A, "AAAA": pycares.QUERY_TYPE_AAAA}
# Per record type: the address family it holds, and the other one.
_ADDRESS_FAMILIES = {
    "A": (socket.AF_INET, socket.AF_INET6),
    "AAAA": (socket.AF_INET6, socket.AF_INET),
}
_CNAME = pycares.QUERY_TYPE_CNAME
_ADDRESS_TYPES = (pycares.QUERY_TYPE_A, pycares.QUERY_TYPE_AAAA)
# RFC 2181 §8: a TTL with the top bit set is to be read as zero.
_TTL_TOP_BIT = 2**31

_FAILURES: dict[str, type[DnsLookupFailed]] = {
    "SERVFAIL": DnsServerFailure,
    "NOTIMP": DnsServerFailure,
    "REFUSED": DnsRefused,
    "TIMEOUT": DnsTimeout,
    "UNREACHABLE": DnsUnreachable,
    "BADRESP": DnsBadAnswer,
}


class Answer(NamedTuple):
    """The outcome of one query that got an answer (NOERROR or NXDOMAIN).

    A named tuple, as :mod:`bunny.dns.model`'s records are: one is made per query."""

    qtype: str
    rcode: str
    """NOERROR or NXDOMAIN."""
    addresses: tuple[str, ...] = ()
    ttl: int | None = None
    source: str = "wire"


def judge(reply: Reply, *, max_ttl: int, timeout: float) -> Answer:
    """The answer in ``reply``; raises the typed failure when the path failed.

    ``timeout`` is the configured per-query timeout, for the message of a timeout.
    """
    fqdn, qtype = reply.fqdn, reply.qtype
    if reply.result is not None:
        try:
            addresses, ttl = validated(fqdn, qtype, reply.result, max_ttl)
        except DnsBadAnswer as bad:
            raise _failure("BADRESP", reply, detail=bad.detail) from None
        return Answer(qtype, "NOERROR", addresses, ttl, reply.source)
    rcode = reply.rcode
    if rcode in ("NXDOMAIN", "NOERROR"):
        return Answer(qtype, rcode)
    detail = reply.unknown_error
    if rcode == "TIMEOUT":
        if reply.deadline_bound and reply.timed_out_by_us:
            detail = "the deadline came first"
        else:
            detail = f"timeout {timeout:g} s each"
    elif rcode == "UNREACHABLE":
        detail = "connection refused"
    raise _failure(rcode, reply, detail=detail)


def _failure(rcode: str, reply: Reply, *, detail: str) -> DnsLookupFailed:
    return _FAILURES[rcode](
        reply.fqdn,
        qtype=reply.qtype,
        nameservers=[reply.nameserver],
        attempts=1,
        rcode=rcode,
        detail=detail,
    )


def as_query(
    reply: Reply,
    attempt: int,
    *,
    answer: Answer | None = None,
    failure: DnsLookupFailed | None = None,
) -> DnsQuery:
    """The query as it went, for the Resolution (and the trace)."""
    # Positional, in DnsQuery's order: keywords double the cost of making a named tuple.
    return DnsQuery(
        reply.fqdn,
        reply.qtype,
        reply.nameserver,
        attempt,
        answer.rcode if answer is not None else failure.rcode if failure else "",
        reply.latency_ms,
        answer.addresses if answer is not None else (),
        answer.ttl if answer is not None else None,
        # A failure never comes from c-ares' cache: it keeps only answers.
        reply.source if failure is None else "wire",
    )


def _clamp_ttl(ttl: int, max_ttl: int) -> int:
    if ttl < 0 or ttl >= _TTL_TOP_BIT:
        return 0
    return min(ttl, max_ttl)


def validated(
    fqdn: str, qtype: str, result: pycares.DNSResult, max_ttl: int
) -> tuple[tuple[str, ...], int | None]:
    """Addresses and TTL from ``result``, trusting only the records for ``fqdn`` or its CNAMEs.

    Raises DnsBadAnswer for address records of the wrong name, type or class
    and for addresses that do not parse. Returns no addresses for NODATA (which
    includes a CNAME chain that ends in a name without ``qtype`` records).
    """
    wanted = _RECORD_TYPES[qtype]
    family, other = _ADDRESS_FAMILIES[qtype]
    records = result.answer
    if len(records) == 1:
        # The usual answer, one address record for the name asked: no lists to build.
        only = records[0]
        if (
            only.type == wanted
            and only.record_class == pycares.QUERY_CLASS_IN
            and only.name.lower().rstrip(".") == fqdn
        ):
            text = str(getattr(only.data, "addr", ""))
            address = _canonical_address(fqdn, qtype, text, family, other)
            return (address,), _clamp_ttl(only.ttl, max_ttl)
    owner = fqdn
    ttls: list[int] = []
    aliases: dict[str, pycares.DNSRecord] = {}
    found: list[pycares.DNSRecord] = []
    # One pass sorts the records; most answers hold no CNAME and one address.
    for record in records:
        kind = record.type
        if kind == _CNAME:
            aliases[record.name.lower().rstrip(".")] = record
        elif kind in _ADDRESS_TYPES:
            found.append(record)
    if aliases:
        seen: set[str] = set()
        # Follow the chain: every hop must be in the answer for the records to count.
        while owner in aliases and owner not in seen:
            seen.add(owner)
            alias = aliases[owner]
            ttls.append(_clamp_ttl(alias.ttl, max_ttl))
            owner = str(getattr(alias.data, "cname", "")).lower().rstrip(".")
    addresses: list[str] = []
    strays: list[str] = []
    for record in found:
        text = str(getattr(record.data, "addr", ""))
        record_name = record.name.lower().rstrip(".")
        if (
            record.type != wanted
            or record_name != owner
            or record.record_class != pycares.QUERY_CLASS_IN
        ):
            strays.append(f"{record_name} {'A' if record.type == pycares.QUERY_TYPE_A else 'AAAA'}")
            continue
        address = _canonical_address(fqdn, qtype, text, family, other)
        if address not in addresses:
            addresses.append(address)
        ttls.append(_clamp_ttl(record.ttl, max_ttl))
    if strays and not addresses:
        raise DnsBadAnswer(
            fqdn, detail=f"records for {', '.join(strays[:3])}, not for {owner} {qtype}"
        )
    if not addresses:
        return (), None
    return tuple(addresses), min(ttls)


def _canonical_address(fqdn: str, qtype: str, text: str, family: int, other: int) -> str:
    """``text`` as an address of ``family`` in its canonical form; DnsBadAnswer if it is not."""
    # inet_pton/inet_ntop rather than ipaddress: the same verdict, far cheaper per answer.
    try:
        return socket.inet_ntop(family, socket.inet_pton(family, text))
    except (OSError, ValueError):
        pass
    try:
        socket.inet_pton(other, text)
    except (OSError, ValueError):
        raise DnsBadAnswer(fqdn, detail=f"{text!r} is not an IP address") from None
    raise DnsBadAnswer(fqdn, detail=f"{text} in an {qtype} record")
