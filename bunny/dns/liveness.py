"""Is a DNS server up? Ask it a question it answers itself.

Many forwarders (dnsmasq, BIND, Windows DNS) drop a query their upstream leaves
unanswered instead of answering SERVFAIL, so a hop that gives no answer for relay's
name may be down, or up with a silent upstream: two different teams to call. Any
answer to a question a server answers without its upstream tells them apart, whatever
its rcode (REFUSED from a forwarder that serves one zone only proves as much as NOERROR).

The questions asked by default, all at once, the first answer deciding:

- the root's NS (``. NS``): a recursive resolver answers it from its root hints or its
  cache, a conditional forwarder (and CoreDNS without a root zone) answers REFUSED;
- ``version.bind`` in the CHAOS class: dnsmasq, BIND and Unbound answer it themselves,
  even when they forward everything else.

An operator adds names a hop answers itself (its own zone's SOA, e.g. ``cluster.local``
for a cluster's DNS) with ``bunny diagnose --alive-query NAME[/TYPE[/CLASS]]``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

import aiodns
import aiodns.error
import pycares

from bunny.dns.alivequery import DEFAULT_QUERIES, AliveQuery
from bunnyrelay.settings import HostPort

# c-ares errors that are an answer from the server, with the rcode it carried.
_ANSWERED = {
    pycares.errno.ARES_ENOTFOUND: "NXDOMAIN",
    pycares.errno.ARES_ENODATA: "NODATA",
    pycares.errno.ARES_ESERVFAIL: "SERVFAIL",
    pycares.errno.ARES_EREFUSED: "REFUSED",
    pycares.errno.ARES_ENOTIMP: "NOTIMP",
    pycares.errno.ARES_EFORMERR: "FORMERR",
    pycares.errno.ARES_EBADRESP: "a malformed answer",
}


@dataclass(frozen=True, slots=True)
class Liveness:
    alive: bool
    evidence: str
    """What was answered (``. NS: REFUSED in 0.4 ms``), or what went unanswered."""


async def check(
    server: HostPort,
    queries: Sequence[AliveQuery] = DEFAULT_QUERIES,
    *,
    timeout: float,
    attempts: int,
) -> Liveness:
    """Ask ``server`` every one of ``queries`` at once; up if it answers any of them."""
    resolver = aiodns.DNSResolver(nameservers=[str(server)], timeout=timeout, tries=attempts)
    started = time.monotonic()

    refused = False

    async def ask(query: AliveQuery) -> str | None:
        """The rcode ``server`` answered ``query`` with, or None without an answer."""
        nonlocal refused
        try:
            await resolver.query_dns(query.name, query.qtype, query.qclass)
        except aiodns.error.DNSError as error:
            refused |= error.args[0] == pycares.errno.ARES_ECONNREFUSED
            return _ANSWERED.get(error.args[0])
        return "NOERROR"

    pending = {asyncio.ensure_future(ask(query)): query for query in queries}
    try:
        while pending:
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                query = pending.pop(task)
                rcode = task.result()
                if rcode is not None:
                    took = (time.monotonic() - started) * 1000
                    return Liveness(True, f"{query}: {rcode} in {took:.1f} ms")
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await resolver.close()
    if refused:
        return Liveness(False, f"nothing listens on {server} (the connection was refused)")
    asked = ", ".join(str(query) for query in queries)
    return Liveness(False, f"no answer to {asked} within {timeout * attempts:g} s")
