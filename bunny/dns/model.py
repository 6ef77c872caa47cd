"""What a lookup returns: the queries it sent and the addresses it found.

Plain data with no behaviour beyond showing itself, so that the error tree
(:mod:`bunny.errors`), the cache and the resolver can all name it without
importing one another.

Both are named tuples: immutable, as what bunny's cache hands every caller must be, and
the cheapest immutable record Python makes. A lookup makes a query and two resolutions
(its own and the cache's), and a frozen dataclass sets each field through
``object.__setattr__``: about four times a named tuple's cost.
"""

from __future__ import annotations

import math
import time
from typing import NamedTuple

FAMILIES: dict[str, tuple[str, ...]] = {"ipv4": ("A",), "ipv6": ("AAAA",), "any": ("A", "AAAA")}
"""The record types asked for each ``--family``."""


class DnsQuery(NamedTuple):
    """One query as sent (or as answered from c-ares' own cache)."""

    fqdn: str
    qtype: str
    nameserver: str
    """``IP:PORT``."""
    attempt: int
    """1 for the first try of this FQDN and type."""
    rcode: str
    """NOERROR, NXDOMAIN, SERVFAIL, NOTIMP, REFUSED, or TIMEOUT, UNREACHABLE, BADRESP."""
    latency_ms: float
    answers: tuple[str, ...]
    """Addresses in the answer (NOERROR with none is NODATA)."""
    ttl: int | None
    source: str
    """``wire``, or ``c-ares-cache`` when c-ares answered from memory."""

    def as_dict(self) -> dict[str, object]:
        return {
            "fqdn": self.fqdn,
            "type": self.qtype,
            "nameserver": self.nameserver,
            "attempt": self.attempt,
            "rcode": self.rcode,
            "latency_ms": round(self.latency_ms, 3),
            "answers": list(self.answers),
            "ttl": self.ttl,
            "source": self.source,
        }

    def describe(self) -> str:
        """One line for people."""
        answers = ", ".join(self.answers) or "-"
        return (
            f"  {self.fqdn} {self.qtype} @{self.nameserver} attempt {self.attempt}: "
            f"{self.rcode} in {self.latency_ms:.1f} ms ({self.source}) -> {answers}"
        )


class Resolution(NamedTuple):
    """The addresses for a name, with where they came from and what it took."""

    name: str
    """The name as asked."""
    fqdn: str
    """The candidate that answered."""
    addresses: tuple[str, ...]
    """IPv4 addresses first, then IPv6, in answer order."""
    ttl: int
    """Seconds the answer is good for, as of when this Resolution was made (stale: stale_ttl)."""
    source: str
    """``hosts``, ``wire``, ``c-ares-cache``, ``cache``, ``stale-cache`` or ``literal``."""
    queries: tuple[DnsQuery, ...]
    """The queries this lookup made (none for bunny's cache or the hosts file)."""
    expires_at: float
    """``time.monotonic()`` after which bunny asks again."""

    def as_dict(self) -> dict[str, object]:
        """JSON-ready, for ``bunny resolve --json``."""
        remaining = self.expires_at - time.monotonic()
        return {
            "name": self.name,
            "fqdn": self.fqdn,
            "addresses": list(self.addresses),
            "ttl": self.ttl,
            "source": self.source,
            "expires_in_s": round(max(remaining, 0.0), 3) if math.isfinite(remaining) else None,
            "queries": [query.as_dict() for query in self.queries],
        }

    def describe(self) -> str:
        """For people: the answer, then one line per query."""
        lines = [
            f"{self.name}: {', '.join(self.addresses)}  (ttl {self.ttl} s, from {self.source}"
            + (f", as {self.fqdn})" if self.fqdn != self.name.rstrip(".") else ")")
        ]
        lines.extend(query.describe() for query in self.queries)
        return "\n".join(lines)
