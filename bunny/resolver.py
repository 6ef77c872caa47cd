"""bunny's resolver: aiodns queries, our own search list, retries and caches, every query traced.

Why not getaddrinfo or gRPC's resolver: they hide TTLs and retries, and gRPC's
only re-resolves on disconnect. Here every candidate FQDN, type and attempt is
a query of its own with a ``dns.query`` span under one ``dns.lookup`` span, so a
trace shows what ``ndots:5`` costs, which nameserver timed out, and whether an
answer came from the wire, from c-ares' cache, from ours, or was served stale.
A lookup that one query answered carries that query on its ``dns.lookup`` span
instead: a child span would only repeat it.

How a lookup goes:

1. bunny's cache: a fresh answer, a cached NXDOMAIN/NODATA (RFC 2308), or a
   stale answer while a failed refresh is backing off (RFC 8767).
2. Concurrent lookups of one name share a single one in flight.
3. Candidates from the search list (glibc order), one at a time. NXDOMAIN and
   NODATA move to the next candidate; a failure of the path (timeout, SERVFAIL,
   REFUSED, unreachable, bad answer) stops the lookup, as glibc does, rather than
   risk a wrong answer from a later candidate.
4. Per candidate, A and/or AAAA in parallel; each query is sent with c-ares' own
   retries off (``tries=1``), retried by us with tenacity and backoff, rotating
   through the nameservers, bounded by ``attempts`` and the caller's deadline.
5. If the refresh of a known name fails, the last good answer is served stale
   for up to ``stale_max`` past its expiry.

c-ares' own query cache (c-ares 1.34, ARES_OPT_QUERY_CACHE, which pycares gives
no way to turn off) answers a repeated question from memory until its TTL runs
out. Each channel keeps a ledger of the answers that came off the wire so a
query c-ares answers from memory is labelled ``c-ares-cache``, never ``wire``,
and the channel's cache is flushed whenever c-ares would otherwise hand back an
answer bunny must not trust (see ``_Channel.source_for``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import socket
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiodns
import aiodns.error
import pycares
from opentelemetry import context, metrics, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.stop import stop_base
from tenacity.wait import wait_base, wait_random_exponential

from bunny import resolvconf
from bunny.dnscache import AnswerCache
from bunny.errors import (
    BunnyError,
    DnsBadAnswer,
    DnsLookupFailed,
    DnsRefused,
    DnsServerFailure,
    DnsTimeout,
    DnsUnreachable,
    InvalidName,
    NameNotFound,
    NoAddresses,
)
from bunnyrelay import semconv
from bunnyrelay.settings import HostPort, SettingError

log = logging.getLogger("bunny.resolver")

FAMILIES: dict[str, tuple[str, ...]] = {"ipv4": ("A",), "ipv6": ("AAAA",), "any": ("A", "AAAA")}
_RECORD_TYPES = {"A": pycares.QUERY_TYPE_A, "AAAA": pycares.QUERY_TYPE_AAAA}
# Per record type: the address family it holds, and the other one.
_ADDRESS_FAMILIES = {
    "A": (socket.AF_INET, socket.AF_INET6),
    "AAAA": (socket.AF_INET6, socket.AF_INET),
}

# Full-jitter exponential backoff between attempts: small, because a DNS
# retry is cheap and a job is waiting on it.
_BACKOFF_BASE_S = 0.05
_BACKOFF_CAP_S = 1.0
# A deadline less than this past c-ares' own timeout gets a timer of ours; a later one
# does not need it, since c-ares reports its timeout first.
_TIMEOUT_SLACK_S = 0.1
# c-ares caps a query's timeout at 5 s unless ARES_OPT_MAXTIMEOUTMS is set (pycares cannot).
_ARES_MAX_TIMEOUT_S = 5.0
# The longest the loop waits before letting c-ares check its timeouts (aiodns' own tick).
_ARES_TIMER_MAX_S = 1.0
# c-ares' query cache keeps nothing longer than this (qcache_max_ttl's default).
_ARES_QCACHE_MAX_TTL = 3600
# How close to a second boundary the ledger stops trusting its own arithmetic.
_LEDGER_SLACK_S = 0.05
# RFC 2181 §8: a TTL with the top bit set is to be read as zero.
_TTL_TOP_BIT = 2**31

_ARES_RCODES: dict[int, str] = {
    aiodns.error.ARES_ENOTFOUND: "NXDOMAIN",
    aiodns.error.ARES_ENODATA: "NOERROR",
    aiodns.error.ARES_ESERVFAIL: "SERVFAIL",
    aiodns.error.ARES_ENOTIMP: "NOTIMP",
    aiodns.error.ARES_EREFUSED: "REFUSED",
    aiodns.error.ARES_ETIMEOUT: "TIMEOUT",
    aiodns.error.ARES_ECONNREFUSED: "UNREACHABLE",
    aiodns.error.ARES_EBADRESP: "BADRESP",
    aiodns.error.ARES_EFORMERR: "BADRESP",
}
_ARES_CANCELLED = frozenset({aiodns.error.ARES_ECANCELLED, aiodns.error.ARES_EDESTRUCTION})
_FAILURES: dict[str, type[DnsLookupFailed]] = {
    "SERVFAIL": DnsServerFailure,
    "NOTIMP": DnsServerFailure,
    "REFUSED": DnsRefused,
    "TIMEOUT": DnsTimeout,
    "UNREACHABLE": DnsUnreachable,
    "BADRESP": DnsBadAnswer,
}
# Seconds; the semantic conventions' advice for dns.lookup.duration.
_DURATION_BUCKETS = (0.0, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)


# --- settings ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResolverSettings:
    """How bunny resolves names. Build it with :meth:`from_sources` from flags and resolv.conf."""

    nameservers: tuple[HostPort, ...]
    """Nameservers to ask, in order; retries rotate through them."""
    search: tuple[str, ...] = ()
    """Search domains, applied by bunny (not c-ares) so each candidate is its own query."""
    ndots: int = 1
    """A name with at least this many dots is tried as given before the search list."""
    timeout: float = 2.0
    """Seconds to wait for one attempt of one query. An upper bound: c-ares 1.34 shortens it
    to 5x the nameserver's recent average latency (at least 0.25 s) and caps it at 5 s."""
    attempts: int = 2
    """Attempts per query (per candidate FQDN and type), across the nameservers in turn."""
    family: str = "any"
    """``ipv4`` (A only), ``ipv6`` (AAAA only) or ``any`` (A and AAAA in parallel)."""
    stale_max: float = 300.0
    """RFC 8767: how long past expiry a last-good answer may be served when a refresh fails."""
    stale_ttl: int = 30
    """TTL reported for a stale answer (RFC 8767 suggests 30 s)."""
    negative_ttl: float = 5.0
    """RFC 2308 negative caching of NXDOMAIN/NODATA, kept short so a new record shows up soon."""
    max_ttl: int = 3600
    """Answers are cached for at most this many seconds, whatever their TTL says."""
    stale_recheck: float = 5.0
    """While serving stale, wait this long after a failed refresh before trying again."""

    def __post_init__(self) -> None:
        if not self.nameservers:
            raise SettingError(
                "no nameserver to ask: give --nameserver or a resolv.conf with a nameserver line"
            )
        if self.family not in FAMILIES:
            raise SettingError(f"family {self.family!r} is not one of: {', '.join(FAMILIES)}")
        if not 0 <= self.ndots <= resolvconf.MAX_NDOTS:
            raise SettingError(f"ndots must be from 0 to {resolvconf.MAX_NDOTS}, not {self.ndots}")
        if not (self.timeout > 0 and math.isfinite(self.timeout)):
            raise SettingError(f"the DNS timeout must be more than 0 seconds, not {self.timeout}")
        if self.attempts < 1:
            raise SettingError(f"DNS attempts must be at least 1, not {self.attempts}")
        for name in ("stale_max", "stale_ttl", "negative_ttl", "max_ttl", "stale_recheck"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise SettingError(f"{name} must be a finite number of at least 0, not {value}")

    @classmethod
    def from_sources(
        cls,
        *,
        resolv_conf: str | None,
        nameservers: Sequence[HostPort],
        ndots: int | None,
        **overrides: Any,
    ) -> ResolverSettings:
        """Settings from flags and a resolv.conf; flags win.

        With ``--nameserver`` and no ``--resolv-conf`` no file is read at all (no
        search list, ndots 1), so a lab run never picks up the host's search
        domains. With neither, /etc/resolv.conf is read. ``overrides`` set any
        other field; ``None`` values are ignored, so unset flags can be passed as is.
        """
        given = {key: value for key, value in overrides.items() if value is not None}
        conf: resolvconf.ResolvConf | None = None
        if resolv_conf is not None or not nameservers:
            conf = resolvconf.read_resolv_conf(resolv_conf or resolvconf.DEFAULT_PATH)
        values: dict[str, Any] = {}
        if conf is not None:
            values.update(
                nameservers=conf.nameservers,
                search=conf.search,
                ndots=conf.ndots,
                timeout=conf.timeout,
                attempts=conf.attempts,
            )
        if nameservers:
            values["nameservers"] = tuple(nameservers)
        if ndots is not None:
            values["ndots"] = ndots
        values.update(given)
        if not values.get("nameservers"):
            where = resolv_conf or resolvconf.DEFAULT_PATH
            raise SettingError(f"{where}: no nameserver line, and no --nameserver given")
        return cls(**values)


# --- what a lookup returns -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DnsQuery:
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


@dataclass(frozen=True, slots=True)
class Resolution:
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
    """``wire``, ``c-ares-cache``, ``cache`` or ``stale-cache``."""
    queries: tuple[DnsQuery, ...]
    """The queries this lookup made (none for bunny's cache)."""
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
        lines.extend(_describe_query(query) for query in self.queries)
        return "\n".join(lines)


def _describe_query(query: DnsQuery) -> str:
    answers = ", ".join(query.answers) or "-"
    return (
        f"  {query.fqdn} {query.qtype} @{query.nameserver} attempt {query.attempt}: "
        f"{query.rcode} in {query.latency_ms:.1f} ms ({query.source}) -> {answers}"
    )


# --- candidates ----------------------------------------------------------------------------


def candidates(name: str, search: Sequence[str], ndots: int) -> tuple[str, ...]:
    """The FQDNs to ask for ``name``, in order (glibc's rules).

    A trailing dot means exactly that name. Otherwise a name with at least
    ``ndots`` dots is tried as given first and then with each search domain;
    one with fewer dots gets the search domains first.
    """
    lowered = name.lower()
    if lowered.endswith("."):
        return (lowered[:-1],)
    searched = [f"{lowered}.{domain}" for domain in search]
    ordered = [lowered, *searched] if lowered.count(".") >= ndots else [*searched, lowered]
    # A search domain that makes the name too long is skipped, as glibc does.
    return tuple(dict.fromkeys(c for c in ordered if len(c) <= 253))


# A name _check_name accepts: labels of 1 to 63 characters, none of them blank or quoting.
_PLAIN_NAME = re.compile(r"(?:[^\s\\\"'().]{1,63}\.)*[^\s\\\"'().]{1,63}")


def _check_name(name: str) -> None:
    bare = name[:-1] if name.endswith(".") else name
    # Almost every name is fine: one regular expression says so; the rest says why not.
    if bare.isascii() and len(bare) <= 253 and _PLAIN_NAME.fullmatch(bare):
        return
    if not bare:
        raise InvalidName(name, detail="the name is empty")
    if not bare.isascii():
        raise InvalidName(name, detail="only ASCII names can be asked (IDNA is not supported)")
    if len(bare) > 253:
        raise InvalidName(name, detail="longer than 253 characters")
    for label in bare.split("."):
        if not label:
            raise InvalidName(name, detail="it has an empty label")
        if len(label) > 63:
            raise InvalidName(name, detail=f"label {label[:20]}… is longer than 63 characters")
        if any(ch.isspace() or ch in "\\\"'()" for ch in label):
            raise InvalidName(name, detail=f"label {label!r} has characters DNS names cannot")


# --- aiodns on the event loop ---------------------------------------------------------------


class LoopDrivenResolver(aiodns.DNSResolver):
    """aiodns in its socket-callback mode: c-ares' sockets are watched by the event loop.

    aiodns 4 gives each channel a c-ares event thread when it can, and uses the
    socket-callback mode (``sock_state_cb``, the loop's own selector) only as a
    fallback. With the thread, every answer costs a hand-over: the thread takes
    c-ares' channel lock, waits for the GIL to run the Python callback and wakes the
    loop through its self-pipe, while the loop waits on the same lock to send the next
    query (py-spy shows both threads in ``ares_query_dnsrec`` and ``gil_ensure``); even
    bare aiodns spends about twice the CPU per lookup on it. This subclass asks for
    the fallback mode directly, so the lookups are still aiodns' (its futures, its
    socket handling, its errors), with no thread.

    One change to that mode: aiodns checks c-ares' timeouts on a fixed tick (the
    timeout, at most 1 s), so a query could time out up to a tick late. Here the tick
    follows c-ares' own next timeout instead, and a new query with an earlier one
    brings the tick forward.

    Both overrides are of aiodns' private methods; ``tests/bunny/test_resolver.py``
    fails if an aiodns release changes them.
    """

    def _make_channel(self, **kwargs: Any) -> tuple[bool, pycares.Channel]:
        owner = weakref.ref(self)

        def sock_state(fd: int, readable: bool, writable: bool) -> None:
            resolver = owner()
            if resolver is not None:
                resolver._sock_state_cb(fd, readable, writable)

        # False: no event thread, so aiodns settles futures directly, in the loop's thread.
        return False, pycares.Channel(sock_state_cb=sock_state, timeout=self._timeout, **kwargs)

    def _start_timer(self) -> None:
        wait = float(self._channel.timeout(_ARES_TIMER_MAX_S))  # type: ignore[no-untyped-call]
        self._timer = self.loop.call_later(wait, self._timer_cb)

    def query_dns(
        self, host: str, qtype: str, qclass: str | None = None
    ) -> asyncio.Future[pycares.DNSResult]:
        future = super().query_dns(host, qtype, qclass)
        timer = self._timer
        if timer is not None:
            due = self.loop.time() + float(
                self._channel.timeout(_ARES_TIMER_MAX_S)  # type: ignore[no-untyped-call]
            )
            if due < timer.when():
                timer.cancel()
                self._timer = self.loop.call_at(due, self._timer_cb)
        return future


# --- c-ares channels and what their caches hold --------------------------------------------


@dataclass(slots=True)
class _Held:
    """What c-ares' query cache may be holding for one question on one channel."""

    surely_until: int
    """c-ares holds it while floor(now) is below this (from when the query was sent)."""
    maybe_until: int
    """…and certainly not once floor(now) reaches this (from when the answer came in)."""
    trusted_until: float
    """bunny's own policy: after this (max_ttl), the answer must be fetched again."""
    flush_first: bool = False
    """Negative or unusable answers: their lifetime in c-ares is unknown or unwanted."""


class _Channel:
    """One aiodns resolver (one c-ares channel) for one nameserver, kept for the process.

    The ledger mirrors c-ares' query cache: it keys its entries by the lower-case
    question (as c-ares does), holds an answer for the minimum TTL of every record
    except SOA, capped at 3600 s, and counts that TTL from the whole second in
    which it stored the answer (c-ares' clock has one-second steps).
    """

    def __init__(self, nameserver: HostPort, timeout: float) -> None:
        self.server = nameserver
        self.nameserver = str(nameserver)
        # c-ares is handed one server per channel and a single try per query, so each
        # attempt, and the nameserver it went to, is ours to choose, retry and trace.
        self.resolver = LoopDrivenResolver(
            nameservers=[self.nameserver],
            loop=asyncio.get_running_loop(),
            tries=1,
            timeout=timeout,
        )
        decoy_port = 9 if nameserver.port != 9 else 10
        self._decoy = str(HostPort(nameserver.host, decoy_port))
        self._ledger: dict[tuple[str, str], _Held] = {}
        self.inflight = 0
        self.retired = False

    def source_for(self, fqdn: str, qtype: str, now: float) -> str:
        """Where the answer to this question is about to come from; flushes when it must.

        bunny's own caches decide when a name is asked again. c-ares must not
        overrule them, so its cache is flushed before asking again a question
        whose last answer was NXDOMAIN/NODATA (c-ares keeps those for the SOA
        minimum, which can be far longer than ``negative_ttl``: a record added to
        the zone would stay invisible) or unusable, one bunny no longer trusts
        (past ``max_ttl``), or one that sits on c-ares' one-second boundary where
        the ledger cannot tell hit from miss.
        """
        held = self._ledger.get((fqdn, qtype))
        if held is None:
            return "wire"
        second = math.floor(now)
        if second >= held.maybe_until:
            del self._ledger[(fqdn, qtype)]
            return "wire"
        if (
            not held.flush_first
            and now < held.trusted_until
            and math.floor(now + _LEDGER_SLACK_S) < held.surely_until
        ):
            return "c-ares-cache"
        self.flush()
        return "wire"

    def record(self, reply: _Reply, *, ares_ttl: int | None, trusted_for: float) -> None:
        """Note an answer that came off the wire (``ares_ttl`` None: negative or unusable)."""
        key, sent, received = (reply.fqdn, reply.qtype), reply.sent, reply.received
        if ares_ttl is None:
            held = _Held(math.floor(sent), math.floor(received) + _ARES_QCACHE_MAX_TTL, 0.0, True)
        elif ares_ttl <= 0:
            # c-ares does not cache what is already expired.
            self._ledger.pop(key, None)
            return
        else:
            ttl = min(ares_ttl, _ARES_QCACHE_MAX_TTL)
            held = _Held(math.floor(sent) + ttl, math.floor(received) + ttl, received + trusted_for)
        self._ledger[key] = held

    def flush(self) -> None:
        # c-ares empties its query cache whenever the server list changes, and
        # pycares offers no other way. Setting the same list again is no change.
        # Adding a second server keeps ours, and the queries in flight on it;
        # removing the decoy again is a second change back to where we were.
        # Nothing is sent to the decoy unless c-ares requeues a timed-out query
        # in the instant between the two calls; that query then fails and is
        # retried by us like any other.
        self.resolver.nameservers = [self.nameserver, self._decoy]
        self.resolver.nameservers = [self.nameserver]
        self._ledger.clear()

    async def close(self) -> None:
        await self.resolver.close()


# --- answers ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Answer:
    """The outcome of one query that got an answer (NOERROR or NXDOMAIN)."""

    qtype: str
    rcode: str
    """NOERROR or NXDOMAIN."""
    addresses: tuple[str, ...] = ()
    ttl: int | None = None
    source: str = "wire"


@dataclass(slots=True)
class _Reply:
    """What came back for one query, before it is judged."""

    fqdn: str
    qtype: str
    nameserver: str
    source: str
    """Where the ledger says the answer will come from: ``wire`` or ``c-ares-cache``."""
    sent: float
    received: float = 0.0
    result: pycares.DNSResult | None = None
    code: int | None = None
    """The c-ares status when there is no result."""
    timed_out_by_us: bool = False
    """Our own bound (timeout or deadline) fired before c-ares reported anything."""

    @property
    def latency_ms(self) -> float:
        return (self.received - self.sent) * 1000


@dataclass(slots=True)
class _Sent:
    """One query as it went, for its ``dns.query`` span, made when the lookup is over."""

    fqdn: str
    qtype: str
    nameserver: str
    attempt: int
    started_ns: int
    ended_ns: int = 0
    query: DnsQuery | None = None
    """None: it ended without an answer of any kind (the lookup was cancelled)."""
    failure: DnsLookupFailed | None = None


@dataclass(slots=True)
class _Lookup:
    """What one lookup has done so far."""

    name: str
    candidates: tuple[str, ...]
    deadline: float | None
    traced: bool = False
    """Its span records: keep what the trace will show of each query in ``sent``."""
    queries: list[DnsQuery] = field(default_factory=list)
    sent: list[_Sent] = field(default_factory=list)


def _as_query(
    reply: _Reply,
    attempt: int,
    *,
    answer: _Answer | None = None,
    failure: DnsLookupFailed | None = None,
) -> DnsQuery:
    """The query as it went, for the Resolution (and the trace)."""
    return DnsQuery(
        fqdn=reply.fqdn,
        qtype=reply.qtype,
        nameserver=reply.nameserver,
        attempt=attempt,
        rcode=answer.rcode if answer is not None else failure.rcode if failure else "",
        latency_ms=reply.latency_ms,
        answers=answer.addresses if answer is not None else (),
        ttl=answer.ttl if answer is not None else None,
        # A failure never comes from c-ares' cache: it keeps only answers.
        source=reply.source if failure is None else "wire",
    )


def _query_attributes(
    query: DnsQuery, failure: DnsLookupFailed | None
) -> dict[str, AttributeValue]:
    attributes: dict[str, AttributeValue] = {
        semconv.DNS_RCODE: query.rcode,
        semconv.DNS_SOURCE: query.source,
        semconv.DNS_ANSWERS: query.answers,
    }
    if query.ttl is not None:
        attributes[semconv.DNS_TTL] = query.ttl
    if failure is not None:
        attributes[semconv.ERROR_TYPE] = type(failure).__name__
    return attributes


def _clamp_ttl(ttl: int, max_ttl: int) -> int:
    if ttl < 0 or ttl >= _TTL_TOP_BIT:
        return 0
    return min(ttl, max_ttl)


def _validated(
    fqdn: str, qtype: str, result: pycares.DNSResult, max_ttl: int
) -> tuple[tuple[str, ...], int | None]:
    """Addresses and TTL from ``result``, trusting only the records for ``fqdn`` or its CNAMEs.

    Raises DnsBadAnswer for address records of the wrong name, type or class
    and for addresses that do not parse. Returns no addresses for NODATA (which
    includes a CNAME chain that ends in a name without ``qtype`` records).
    """
    wanted = _RECORD_TYPES[qtype]
    family, other = _ADDRESS_FAMILIES[qtype]
    owner = fqdn
    ttls: list[int] = []
    aliases = {
        record.name.lower().rstrip("."): record
        for record in result.answer
        if record.type == pycares.QUERY_TYPE_CNAME
    }
    seen: set[str] = set()
    # Follow the chain: every hop must be in the answer for the records to count.
    while owner in aliases and owner not in seen:
        seen.add(owner)
        alias = aliases[owner]
        ttls.append(_clamp_ttl(alias.ttl, max_ttl))
        owner = str(getattr(alias.data, "cname", "")).lower().rstrip(".")
    addresses: list[str] = []
    strays: list[str] = []
    for record in result.answer:
        if record.type not in (pycares.QUERY_TYPE_A, pycares.QUERY_TYPE_AAAA):
            continue
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
    # inet_pton/inet_ntop, not ipaddress: the same verdict for less than a tenth of the cost.
    try:
        return socket.inet_ntop(family, socket.inet_pton(family, text))
    except (OSError, ValueError):
        pass
    try:
        socket.inet_pton(other, text)
    except (OSError, ValueError):
        raise DnsBadAnswer(fqdn, detail=f"{text!r} is not an IP address") from None
    raise DnsBadAnswer(fqdn, detail=f"{text} in an {qtype} record")


def _ares_cache_ttl(result: pycares.DNSResult) -> int:
    """The TTL c-ares' query cache gives this answer: its smallest, SOA aside."""
    ttls = [
        record.ttl
        for section in (result.answer, result.authority, result.additional)
        for record in section
        if record.type != pycares.QUERY_TYPE_SOA
    ]
    return min(ttls) if ttls else 0


# --- tenacity pieces -------------------------------------------------------------------------


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, BunnyError) and exc.retryable


class _StopAtDeadline(stop_base):
    """Stop when the next attempt could not start before the caller's deadline."""

    def __init__(self, deadline: float | None) -> None:
        self._deadline = deadline

    def __call__(self, retry_state: RetryCallState) -> bool:
        if self._deadline is None:
            return False
        return time.monotonic() + retry_state.upcoming_sleep >= self._deadline


class _JitterUntilDeadline(wait_base):
    """Full-jitter exponential backoff, never sleeping past the deadline."""

    def __init__(self, deadline: float | None) -> None:
        self._deadline = deadline
        self._jitter = wait_random_exponential(multiplier=_BACKOFF_BASE_S, max=_BACKOFF_CAP_S)

    def __call__(self, retry_state: RetryCallState) -> float:
        pause = self._jitter(retry_state)
        if self._deadline is not None:
            pause = min(pause, max(self._deadline - time.monotonic(), 0.0))
        return pause


# --- the resolver ----------------------------------------------------------------------------


class _LeaderGoneError(Exception):
    """The lookup a caller was waiting for ended with the cancelled caller that ran it."""


def _settle(flight: asyncio.Future[Resolution], exc: BaseException) -> None:
    """Hand ``exc`` to the callers waiting on ``flight``, if it is still open."""
    if not flight.done():
        flight.set_exception(exc)
        # Retrieved here: with no one waiting, asyncio would log it as never retrieved.
        flight.exception()


class Resolver:
    """Resolves names to addresses for bunny; one per process, closed with :meth:`close`."""

    def __init__(
        self,
        settings: ResolverSettings,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        """The providers default to the global ones; tests pass their own."""
        self.settings = settings
        self._types = FAMILIES[settings.family]
        self._tracer = trace.get_tracer("bunny.resolver", tracer_provider=tracer_provider)
        meter = metrics.get_meter("bunny.resolver", meter_provider=meter_provider)
        self._duration = meter.create_histogram(
            semconv.METRIC_DNS_LOOKUP_DURATION,
            unit="s",
            description="How long a DNS lookup took, cache hits included.",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self._cache = AnswerCache(
            stale_max=settings.stale_max,
            stale_ttl=settings.stale_ttl,
            stale_recheck=settings.stale_recheck,
            negative_ttl=settings.negative_ttl,
        )
        self._channels: dict[HostPort, _Channel] = {}
        self._retired: set[_Channel] = set()
        self._inflight: dict[str, asyncio.Future[Resolution]] = {}
        """The lookup in flight for each name, for the callers that ask while it runs."""
        self._leaders: dict[str, trace.SpanContext] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    # The fast path: no span, no allocation, no await.
    def cached(self, name: str) -> Resolution | None:
        """A fresh (unexpired) answer for ``name`` from bunny's cache, or None."""
        return self._cache.fresh(name, time.monotonic())

    async def resolve(self, name: str, *, deadline: float | None = None) -> Resolution:
        """Resolve ``name``, from cache when fresh; ``deadline`` is a ``time.monotonic()`` value.

        Raises a DnsLookupFailed subclass saying what failed.
        """
        if self._closed:
            raise RuntimeError("Resolver.resolve() after close()")
        started = time.monotonic()
        # start_span and attach rather than start_as_current_span: the latter's two
        # generator-based context managers cost more than a cache hit.
        span = self._tracer.start_span(
            semconv.SPAN_DNS_LOOKUP, attributes={semconv.DNS_QUESTION_NAME: name}
        )
        token = context.attach(trace.set_span_in_context(span))
        try:
            try:
                resolution, sent = await self._resolve(name, deadline, span)
            except DnsLookupFailed as exc:
                self._mark_failed(span, exc)
                self._duration.record(
                    time.monotonic() - started,
                    {semconv.DNS_QUESTION_NAME: name, semconv.ERROR_TYPE: type(exc).__name__},
                )
                raise
            if span.is_recording():
                span.set_attributes(
                    {
                        semconv.DNS_SOURCE: resolution.source,
                        semconv.DNS_ANSWERS: resolution.addresses,
                        semconv.DNS_TTL: resolution.ttl,
                        semconv.DNS_QUERIES_SENT: sent,
                    }
                )
            if resolution.source == "stale-cache":
                reason = self._cache.refresh_error(name)
                span.set_attribute(semconv.DNS_REFRESH_ERROR, reason)
                span.add_event(semconv.EVENT_DNS_SERVE_STALE, {semconv.DNS_REFRESH_ERROR: reason})
            self._duration.record(time.monotonic() - started, {semconv.DNS_QUESTION_NAME: name})
            return resolution
        finally:
            context.detach(token)
            span.end()

    async def close(self) -> None:
        """Cancel lookups in flight and close every c-ares channel."""
        self._closed = True
        # Callers waiting on another's lookup end now; the lookups themselves end as
        # their channels close below (c-ares cancels what is in flight).
        for flight in self._inflight.values():
            flight.cancel()
        channels = [*self._channels.values(), *self._retired]
        self._channels.clear()
        self._retired.clear()
        await asyncio.gather(*(channel.close() for channel in channels))
        await asyncio.gather(*self._closing, return_exceptions=True)
        self._cache.clear()

    # --- one lookup, as the caller sees it --------------------------------------------------

    async def _resolve(
        self, name: str, deadline: float | None, span: Span
    ) -> tuple[Resolution, int]:
        """The answer and how many queries this call itself sent to the wire."""
        now = time.monotonic()
        hit = self._cache.fresh(name, now)
        if hit is not None:
            # Built directly: dataclasses.replace costs several times more.
            remaining = Resolution(
                hit.name,
                hit.fqdn,
                hit.addresses,
                max(int(hit.expires_at - now), 0),
                hit.source,
                hit.queries,
                hit.expires_at,
            )
            return remaining, 0
        known = self._cache.negative(name, now)
        if known is not None:
            raise known.again_from_negative_cache()
        stale = self._cache.stale_while_rechecking(name, now)
        if stale is not None:
            return stale, 0
        _check_name(name)

        flight = self._inflight.get(name)
        if flight is None:
            return await self._lead(name, deadline, span)
        span.set_attribute(semconv.DNS_COALESCED, True)
        leader_context = self._leaders.get(name)
        if leader_context is not None:
            span.add_link(leader_context)
        try:
            # Shielded: a follower that gives up must not cancel the answer for the others.
            if deadline is None:
                resolution = await asyncio.shield(flight)
            else:
                async with asyncio.timeout(max(deadline - now, 0.0)):
                    resolution = await asyncio.shield(flight)
        except _LeaderGoneError:
            # The caller that asked first was cancelled, and its lookup with it: ask again.
            return await self._resolve(name, deadline, span)
        except TimeoutError:
            late = DnsTimeout(
                name, detail="the deadline came while waiting for the same lookup in flight"
            )
            # RFC 8767's client response timer: a stale answer beats none.
            stale_answer = self._cache.serve_stale(name, time.monotonic(), late)
            if stale_answer is not None:
                return stale_answer, 0
            raise late from None
        return resolution, 0

    async def _lead(self, name: str, deadline: float | None, span: Span) -> tuple[Resolution, int]:
        """Look ``name`` up in the caller's own task; callers that ask meanwhile wait for it.

        Not in a task of its own: starting one, and shielding it from this caller's
        cancellation, cost two more passes of the event loop than the query itself
        (about a third of an uncached lookup's latency). The price is that when this
        caller is cancelled the lookup ends with it, and the callers waiting ask again.
        """
        flight: asyncio.Future[Resolution] = asyncio.get_running_loop().create_future()
        self._inflight[name] = flight
        self._leaders[name] = span.get_span_context()
        try:
            resolution = await self._lookup(name, deadline)
        except asyncio.CancelledError:
            _settle(flight, _LeaderGoneError())
            raise
        except BaseException as exc:
            _settle(flight, exc)
            raise
        finally:
            del self._inflight[name]
            del self._leaders[name]
        if not flight.done():
            flight.set_result(resolution)
        return resolution, sum(1 for query in resolution.queries if query.source == "wire")

    @staticmethod
    def _mark_failed(span: Span, exc: DnsLookupFailed) -> None:
        span.set_attributes(
            {
                semconv.ERROR_TYPE: type(exc).__name__,
                semconv.DNS_LIKELY_CAUSE: exc.likely_cause,
                semconv.DNS_SOURCE: "negative-cache" if exc.from_negative_cache else "wire",
                semconv.DNS_QUERIES_SENT: sum(1 for q in exc.queries if q.source == "wire"),
            }
        )
        span.set_status(Status(StatusCode.ERROR, str(exc)))

    # --- one lookup, as it runs ----------------------------------------------------------------

    async def _lookup(self, name: str, deadline: float | None) -> Resolution:
        """Ask, store, and fall back to a stale answer when the path fails."""
        span = trace.get_current_span()
        lookup = _Lookup(
            name,
            candidates(name, self.settings.search, self.settings.ndots),
            deadline,
            traced=span.is_recording(),
        )
        span.set_attribute(semconv.DNS_CANDIDATES, lookup.candidates)
        try:
            resolution = await self._ask(lookup)
        except DnsLookupFailed as exc:
            now = time.monotonic()
            if exc.retryable:
                stale = self._cache.serve_stale(name, now, exc)
                if stale is not None:
                    log.warning(
                        "serving a stale answer for %s: %s",
                        name,
                        exc,
                        extra={"event": "dns.serve_stale", "dns_name": name},
                    )
                    return stale
            elif isinstance(exc, NameNotFound | NoAddresses):
                self._cache.store_negative(name, exc, now)
            raise
        finally:
            if lookup.traced:
                self._trace_queries(span, lookup.sent)
        self._cache.store(resolution)
        return resolution

    def _trace_queries(self, span: Span, sent: Sequence[_Sent]) -> None:
        """The queries on the trace, once the lookup is over: when one query answered it,
        on the lookup's own span (a child span would only repeat it); otherwise a
        ``dns.query`` span each, with the times it ran, so that retries, the search
        list and what failed where are each a span of their own."""
        answered = sent[0].query if len(sent) == 1 and sent[0].failure is None else None
        if answered is not None:
            span.set_attributes(
                {
                    semconv.DNS_QUESTION_TYPE: answered.qtype,
                    semconv.DNS_NAMESERVER: answered.nameserver,
                    semconv.DNS_RCODE: answered.rcode,
                }
            )
            return
        for entry in sent:
            attributes: dict[str, AttributeValue] = {
                semconv.DNS_QUESTION_NAME: entry.fqdn,
                semconv.DNS_QUESTION_TYPE: entry.qtype,
                semconv.DNS_NAMESERVER: entry.nameserver,
                semconv.DNS_ATTEMPT: entry.attempt,
            }
            if entry.query is not None:
                attributes.update(_query_attributes(entry.query, entry.failure))
            child = self._tracer.start_span(
                semconv.SPAN_DNS_QUERY,
                kind=SpanKind.CLIENT,
                start_time=entry.started_ns,
                attributes=attributes,
            )
            if entry.failure is not None:
                child.set_status(Status(StatusCode.ERROR, str(entry.failure)))
            child.end(end_time=entry.ended_ns or time.time_ns())

    async def _ask(self, lookup: _Lookup) -> Resolution:
        """Each candidate in turn until one has addresses."""
        nodata: str | None = None
        for fqdn in lookup.candidates:
            try:
                answers = await self._ask_candidate(lookup, fqdn)
            except DnsLookupFailed as exc:
                raise self._whole(lookup, exc) from None
            usable = [answer for answer in answers if answer.addresses]
            if usable:
                now = time.monotonic()
                ttl = min(answer.ttl or 0 for answer in usable)
                from_ares = all(answer.source == "c-ares-cache" for answer in usable)
                return Resolution(
                    name=lookup.name,
                    fqdn=fqdn,
                    addresses=tuple(a for answer in usable for a in answer.addresses),
                    ttl=ttl,
                    source="c-ares-cache" if from_ares else "wire",
                    queries=tuple(lookup.queries),
                    expires_at=now + ttl,
                )
            if nodata is None and any(answer.rcode != "NXDOMAIN" for answer in answers):
                nodata = fqdn
        failure = NameNotFound if nodata is None else NoAddresses
        raise failure(
            lookup.name,
            fqdn=nodata or lookup.candidates[-1],
            candidates=lookup.candidates,
            nameservers=[query.nameserver for query in lookup.queries],
            attempts=1,
            queries=lookup.queries,
        )

    def _whole(self, lookup: _Lookup, exc: DnsLookupFailed) -> DnsLookupFailed:
        """The failure of one query, restated for the whole lookup (name as asked, all queries)."""
        mine = [q for q in lookup.queries if q.fqdn == exc.fqdn and q.qtype == exc.qtype]
        return type(exc)(
            lookup.name,
            fqdn=exc.fqdn,
            qtype=exc.qtype,
            candidates=lookup.candidates,
            nameservers=[q.nameserver for q in mine] or exc.nameservers,
            attempts=max(len(mine), exc.attempts),
            queries=lookup.queries,
            rcode=exc.rcode,
            detail=exc.detail,
        )

    async def _ask_candidate(self, lookup: _Lookup, fqdn: str) -> list[_Answer]:
        if len(self._types) == 1:
            return [await self._query(lookup, fqdn, self._types[0])]
        results = await asyncio.gather(
            *(self._query(lookup, fqdn, qtype) for qtype in self._types), return_exceptions=True
        )
        answers: list[_Answer] = []
        failures: list[DnsLookupFailed] = []
        for result in results:
            if isinstance(result, DnsLookupFailed):
                failures.append(result)
            elif isinstance(result, BaseException):
                raise result
            else:
                answers.append(result)
        # One family answering is enough: a path that loses only AAAA queries
        # (a classic middlebox fault) must not take IPv4 down with it.
        if failures and not any(answer.addresses for answer in answers):
            raise failures[0]
        return answers

    async def _query(self, lookup: _Lookup, fqdn: str, qtype: str) -> _Answer:
        """One question, with retries for failures of the path only."""
        try:
            return await self._attempt(lookup, fqdn, qtype, 1)
        except DnsLookupFailed as exc:
            if not exc.retryable or self.settings.attempts == 1:
                raise
            first = exc
        # Only now pay for tenacity. Its attempt 1 is the failure above, replayed,
        # so that its wait and stop rules see the attempt count as it is.
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.settings.attempts) | _StopAtDeadline(lookup.deadline),
            wait=_JitterUntilDeadline(lookup.deadline),
            retry=retry_if_exception(_retryable),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                number = attempt.retry_state.attempt_number
                if number == 1:
                    raise first
                return await self._attempt(lookup, fqdn, qtype, number)
        raise AssertionError("tenacity ended without an outcome")  # pragma: no cover

    async def _attempt(self, lookup: _Lookup, fqdn: str, qtype: str, attempt: int) -> _Answer:
        """Send one query; raise the typed error if the path failed."""
        servers = self.settings.nameservers
        server = servers[(attempt - 1) % len(servers)]
        # c-ares times the query out itself (tries=1, at most ``timeout``); a timer of
        # ours is only needed when the caller's deadline comes first.
        budget: float | None = None
        deadline_bound = False
        if lookup.deadline is not None:
            remaining = lookup.deadline - time.monotonic()
            if remaining <= 0:
                raise DnsTimeout(
                    fqdn,
                    qtype=qtype,
                    nameservers=[str(server)],
                    attempts=attempt - 1,
                    detail="the deadline had passed before it could be asked",
                )
            if remaining < self.settings.timeout + _TIMEOUT_SLACK_S:
                budget, deadline_bound = remaining, True

        channel = self._channel(server)
        sent: _Sent | None = None
        if lookup.traced:
            sent = _Sent(fqdn, qtype, channel.nameserver, attempt, time.time_ns())
            lookup.sent.append(sent)
        try:
            reply = await self._send(channel, fqdn, qtype, budget)
            if reply.code in _ARES_CANCELLED:
                raise asyncio.CancelledError(f"{fqdn} {qtype}: the resolver was closed")
            try:
                answer = self._interpret(channel, reply, deadline_bound)
            except DnsLookupFailed as failure:
                query = _as_query(reply, attempt, failure=failure)
                lookup.queries.append(query)
                if sent is not None:
                    sent.query, sent.failure = query, failure
                raise
            query = _as_query(reply, attempt, answer=answer)
            lookup.queries.append(query)
            if sent is not None:
                sent.query = query
            return answer
        finally:
            if sent is not None:
                sent.ended_ns = time.time_ns()

    async def _send(self, channel: _Channel, fqdn: str, qtype: str, budget: float | None) -> _Reply:
        """One query; ``budget`` bounds it when the deadline comes before c-ares' timeout."""
        sent = time.monotonic()
        reply = _Reply(fqdn, qtype, channel.nameserver, channel.source_for(fqdn, qtype, sent), sent)
        channel.inflight += 1
        try:
            if budget is None:
                # c-ares' own timeout (at most ours, tries=1) ends the query: no timer of ours.
                reply.result = await channel.resolver.query_dns(fqdn, qtype)
            else:
                async with asyncio.timeout(budget):
                    reply.result = await channel.resolver.query_dns(fqdn, qtype)
        except TimeoutError:
            reply.code, reply.timed_out_by_us = aiodns.error.ARES_ETIMEOUT, True
        except aiodns.error.DNSError as exc:
            reply.code = exc.args[0] if exc.args else aiodns.error.ARES_EBADRESP
        finally:
            channel.inflight -= 1
            self._release(channel)
        reply.received = time.monotonic()
        return reply

    def _interpret(self, channel: _Channel, reply: _Reply, deadline_bound: bool) -> _Answer:
        """The answer in ``reply``, noted in the channel's ledger; raises if the path failed."""
        fqdn, qtype = reply.fqdn, reply.qtype
        if reply.result is not None:
            try:
                addresses, ttl = _validated(fqdn, qtype, reply.result, self.settings.max_ttl)
            except DnsBadAnswer as bad:
                # c-ares cached it all the same; a retry must not be handed it again.
                channel.record(reply, ares_ttl=None, trusted_for=0)
                raise self._failure("BADRESP", reply, detail=bad.detail) from None
            if reply.source == "wire":
                ares_ttl = _ares_cache_ttl(reply.result) if addresses else None
                channel.record(reply, ares_ttl=ares_ttl, trusted_for=ttl or 0)
            return _Answer(qtype, "NOERROR", addresses, ttl, reply.source)

        rcode = _ARES_RCODES.get(reply.code or 0, "BADRESP")
        if rcode in ("NXDOMAIN", "NOERROR"):
            channel.record(reply, ares_ttl=None, trusted_for=0)
            return _Answer(qtype, rcode)
        detail = ""
        if rcode == "TIMEOUT":
            if deadline_bound and reply.timed_out_by_us:
                detail = "the deadline came first"
            else:
                detail = f"timeout {self.settings.timeout:g} s each"
            cut_short = reply.latency_ms < 900 * min(self.settings.timeout, _ARES_MAX_TIMEOUT_S)
            if cut_short and not reply.timed_out_by_us:
                self._retire_adaptive(channel)
        elif rcode == "UNREACHABLE":
            detail = "connection refused"
        elif reply.code is not None and reply.code not in _ARES_RCODES:
            detail = f"c-ares error {reply.code}: {pycares.errno.strerror(reply.code)!s}"
        raise self._failure(rcode, reply, detail=detail)

    @staticmethod
    def _failure(rcode: str, reply: _Reply, *, detail: str) -> DnsLookupFailed:
        return _FAILURES[rcode](
            reply.fqdn,
            qtype=reply.qtype,
            nameservers=[reply.nameserver],
            attempts=1,
            rcode=rcode,
            detail=detail,
        )

    # --- channels ------------------------------------------------------------------------------

    def _channel(self, server: HostPort) -> _Channel:
        channel = self._channels.get(server)
        if channel is None:
            if self._closed:
                # A lookup that was waiting to retry when close() ran: it ends as the
                # queries close() cut off do, without opening a channel no one will close.
                raise asyncio.CancelledError("the resolver was closed")
            channel = _Channel(server, self.settings.timeout)
            self._channels[server] = channel
        return channel

    def _retire_adaptive(self, channel: _Channel) -> None:
        """Replace a channel whose c-ares timed out sooner than our timeout.

        c-ares 1.34 sets each query's timeout to 5x the server's average
        latency (at least 250 ms) and learns that average only from answers
        that arrive in time. If the path slows down for good (a VPN failover),
        every query on the old channel times out and it never learns the new
        latency. A new channel starts from our configured timeout again.
        """
        if self._channels.get(channel.server) is not channel:
            return
        del self._channels[channel.server]
        channel.retired = True
        self._retired.add(channel)
        self._release(channel)

    def _release(self, channel: _Channel) -> None:
        if channel.retired and channel.inflight == 0 and channel in self._retired:
            self._retired.discard(channel)
            task = asyncio.get_running_loop().create_task(channel.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
