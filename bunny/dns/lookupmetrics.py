"""The metrics an operator reads about bunny's lookups: how each ended, at which nameserver, why.

Four instruments, each answering a question a dashboard or an alert asks:

- ``bunnyrelay.dns.lookups`` (counter): every lookup that went past bunny's fresh
  cache, by ``bunnyrelay.dns.outcome`` (``answered``, ``stale``, ``failed``), the
  rcode or condition (``NOERROR``, ``NXDOMAIN``, ``SERVFAIL``, ``REFUSED``,
  ``TIMEOUT``…), ``error.type``, where the answer came from and the nameserver
  that gave the last word. A SERVFAIL or a timeout from the cluster's DNS is the
  forwarder or the tunnel beyond it; the runbook (docs/alerts.md) says whom to call.
- ``bunnyrelay.dns.lookup.queries`` (histogram): queries one lookup sent to the wire,
  by name: with ``ndots:5`` a name with fewer dots walks the search list first.
- ``bunnyrelay.dns.query.duration`` (histogram, seconds): each query sent to the wire,
  by nameserver and rcode: how long each server takes to answer, or to time out.
- ``bunnyrelay.dns.stale.age`` (histogram, seconds): for each stale answer served,
  how long past its expiry it was (how long the path has been failing, at least).

Every attribute set is built once and kept, keyed by what the lookup already has;
the values all come from a small set (the names bunny is told to reach, the
nameservers in resolv.conf, a dozen rcodes), and a bound keeps a stray caller
from growing them without end.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

from opentelemetry.metrics import Meter
from opentelemetry.util.types import AttributeValue

from bunny.dns.model import DnsQuery, Resolution
from bunny.dns.resolver import LookupNotes
from bunny.errors import DnsLookupFailed
from bunnyrelay import semconv
from bunnyrelay.histograms import HotHistogram
from bunnyrelay.tally import Tally

ANSWERED = "answered"
STALE = "stale"
FAILED = "failed"

# Queries: one per type per candidate per attempt; ndots:5 with a long search list is ~12.
_QUERY_BUCKETS = (0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32)
# Seconds past expiry: from a refresh that failed a moment ago to a day-long outage.
_STALE_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
# Seconds, the semantic conventions' advice for dns.lookup.duration.
_QUERY_DURATION_BUCKETS = (0.0, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5)
MAX_NAMES = 512
"""Names, and attribute sets, kept apart; past this many, new names count as one."""
_OTHER = "_other"

Attributes = Mapping[str, AttributeValue]


class LookupMetrics:
    """The lookup counter and histograms, made once per process and shared by its resolvers."""

    def __init__(self, meter: Meter) -> None:
        self._lookups = Tally(
            meter,
            semconv.METRIC_DNS_LOOKUPS,
            unit="{lookup}",
            description="DNS lookups past bunny's fresh cache, by outcome, rcode and nameserver",
        )
        self._queries = HotHistogram(
            meter,
            semconv.METRIC_DNS_LOOKUP_QUERIES,
            unit="{query}",
            description="Queries one DNS lookup sent to the wire (what the search list costs)",
            boundaries=_QUERY_BUCKETS,
        )
        self._stale_age = HotHistogram(
            meter,
            semconv.METRIC_DNS_STALE_AGE,
            unit="s",
            description="For each stale DNS answer served, how long past its expiry it was",
            boundaries=_STALE_BUCKETS,
        )
        self._query_duration = HotHistogram(
            meter,
            semconv.METRIC_DNS_QUERY_DURATION,
            unit="s",
            description="How long each DNS query sent took to be answered (or to time out)",
            boundaries=_QUERY_DURATION_BUCKETS,
        )
        self._sets: dict[Hashable, Attributes] = {}
        self._by_server: dict[tuple[str, str], Attributes] = {}
        self._by_name: dict[str, tuple[str, Attributes]] = {}

    def answered(self, name: str, resolution: Resolution, notes: LookupNotes) -> None:
        """A lookup that returned addresses, fresh or stale."""
        queries = resolution.queries
        nameserver = queries[-1].nameserver if queries else ""
        if resolution.source == "stale-cache":
            rcode = queries[-1].rcode if queries else ""
            self._count(name, STALE, "stale-cache", rcode, notes.refresh_error, nameserver)
            self._stale_age.record(*self._named(name), notes.stale_for)
        else:
            self._count(name, ANSWERED, resolution.source, "NOERROR", "", nameserver)
        if queries:
            self._time_queries(queries)
        if not notes.coalesced:
            named = self._by_name.get(name) or self._named(name)
            self._queries.record(named[0], named[1], notes.queries_sent)

    def failed(self, name: str, exc: DnsLookupFailed, notes: LookupNotes) -> None:
        """A lookup that raised."""
        source = "negative-cache" if exc.from_negative_cache else "wire"
        nameserver = exc.nameservers[-1] if exc.nameservers else ""
        self._count(name, FAILED, source, exc.rcode, type(exc).__name__, nameserver)
        self._time_queries(exc.queries)
        if not (notes.coalesced or exc.from_negative_cache):
            sent = sum(1 for query in exc.queries if query.source == "wire")
            self._queries.record(*self._named(name), sent)

    def _count(
        self, name: str, outcome: str, source: str, rcode: str, error_type: str, nameserver: str
    ) -> None:
        key = (name, outcome, source, rcode, error_type, nameserver)
        attributes = self._sets.get(key)
        if attributes is None and len(self._sets) >= MAX_NAMES:
            name = _OTHER
            key = (name, outcome, source, rcode, error_type, nameserver)
            attributes = self._sets.get(key)
        if attributes is None:
            attributes = {
                semconv.DNS_QUESTION_NAME: name,
                semconv.DNS_OUTCOME: outcome,
                semconv.DNS_SOURCE: source,
                semconv.DNS_RCODE: rcode,
                semconv.DNS_NAMESERVER: nameserver,
            }
            if error_type:
                attributes[semconv.ERROR_TYPE] = error_type
            self._sets[key] = attributes
        self._lookups.add(key, attributes)

    def _time_queries(self, queries: tuple[DnsQuery, ...]) -> None:
        for query in queries:
            if query.source != "wire":
                continue
            key = (query.nameserver, query.rcode)
            attributes = self._by_server.get(key)
            if attributes is None:
                if len(self._by_server) >= MAX_NAMES:
                    continue
                attributes = self._by_server[key] = {
                    semconv.DNS_NAMESERVER: query.nameserver,
                    semconv.DNS_RCODE: query.rcode,
                }
            self._query_duration.record(key, attributes, query.latency_ms / 1000)

    def _named(self, name: str) -> tuple[str, Attributes]:
        """The key and attribute set a histogram keeps ``name`` under (one-to-one)."""
        named = self._by_name.get(name)
        if named is None:
            if len(self._by_name) >= MAX_NAMES:
                return self._by_name.setdefault(
                    _OTHER, (_OTHER, {semconv.DNS_QUESTION_NAME: _OTHER})
                )
            named = self._by_name[name] = (name, {semconv.DNS_QUESTION_NAME: name})
        return named
