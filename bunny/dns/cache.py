"""bunny's own answer cache: TTL-honouring, serve-stale (RFC 8767), negative caching (RFC 2308).

Keyed by the name as the caller asked it, so a hit costs one dict lookup and
one clock read. The resolver decides *when* to use each kind of entry; this
module only keeps them and their clocks:

- a positive entry is fresh until its TTL runs out, then may be served stale
  for ``stale_max`` more seconds, but only after a refresh has failed, and then
  without re-trying the refresh for ``stale_recheck`` seconds so a dead path is
  not hammered on every call;
- a negative entry (NXDOMAIN / NODATA) is raised again for ``negative_ttl``.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice

from bunny.dns.model import DnsQuery, Resolution
from bunny.errors import DnsLookupFailed

# Enough for every name a client process talks to; a bound keeps a bug from growing it forever.
MAX_ENTRIES = 4096
# Past the bound, the oldest are dropped this many at a time (at least one).
_EVICT_FRACTION = 16


@dataclass(slots=True)
class _Rechecking:
    """A stale answer's refresh that failed: when to try again, and what failed."""

    recheck_at: float
    refresh_error: str


@dataclass(slots=True)
class _Negative:
    error: DnsLookupFailed
    expires_at: float


class AnswerCache:
    def __init__(
        self, *, stale_max: float, stale_ttl: int, stale_recheck: float, negative_ttl: float
    ) -> None:
        self._stale_max = stale_max
        self._stale_ttl = stale_ttl
        self._stale_recheck = stale_recheck
        self._negative_ttl = negative_ttl
        # A positive entry is the Resolution a hit returns (source "cache", no queries),
        # built once at store time; a stale answer is made from it. Nothing else is kept
        # per name: with every name new, each entry outlives the young collections, and
        # every object in it is traversed again by the older ones.
        self._positive: dict[str, Resolution] = {}
        self._rechecking: dict[str, _Rechecking] = {}
        """Only the names whose refresh failed while their answer was stale."""
        self._negative: dict[str, _Negative] = {}

    def fresh(self, name: str, now: float) -> Resolution | None:
        """The unexpired answer for ``name``, or None. The hot path: keep it this small."""
        entry = self._positive.get(name)
        if entry is not None and entry.expires_at > now:
            return entry
        return None

    def negative(self, name: str, now: float) -> DnsLookupFailed | None:
        """The cached NXDOMAIN/NODATA error for ``name``, while it lasts."""
        entry = self._negative.get(name)
        if entry is None:
            return None
        if entry.expires_at > now:
            return entry.error
        del self._negative[name]
        return None

    def stale_while_rechecking(self, name: str, now: float) -> Resolution | None:
        """A stale answer when a refresh failed a moment ago and should not be retried yet."""
        entry = self._positive.get(name)
        if entry is None or entry.expires_at > now:
            return None
        rechecking = self._rechecking.get(name)
        if rechecking is None or now >= rechecking.recheck_at:
            return None
        if now >= entry.expires_at + self._stale_max:
            return None
        return self._stale_view(entry, now, queries=())

    def serve_stale(self, name: str, now: float, error: DnsLookupFailed) -> Resolution | None:
        """After a refresh failed with ``error``: the last good answer if still servable.

        The stale Resolution carries the failed refresh's queries; serving it
        starts the recheck back-off.
        """
        entry = self._positive.get(name)
        if entry is None:
            return None
        if now >= entry.expires_at + self._stale_max:
            self._forget(name)
            return None
        if entry.expires_at > now:
            # Fresh after all (another lookup stored it meanwhile).
            return None
        self._rechecking[name] = _Rechecking(now + self._stale_recheck, type(error).__name__)
        return self._stale_view(entry, now, queries=error.queries)

    def refresh_error(self, name: str) -> str:
        rechecking = self._rechecking.get(name)
        return rechecking.refresh_error if rechecking is not None else ""

    def expired_for(self, name: str, now: float) -> float:
        """Seconds since the kept answer for ``name`` expired (0 while fresh or unknown)."""
        entry = self._positive.get(name)
        return max(now - entry.expires_at, 0.0) if entry is not None else 0.0

    def _stale_view(
        self, entry: Resolution, now: float, queries: tuple[DnsQuery, ...]
    ) -> Resolution:
        return entry._replace(
            source="stale-cache",
            ttl=self._stale_ttl,
            queries=queries,
            expires_at=min(now + self._stale_ttl, entry.expires_at + self._stale_max),
        )

    def _forget(self, name: str) -> None:
        self._positive.pop(name, None)
        if self._rechecking:
            self._rechecking.pop(name, None)

    def store(self, resolution: Resolution) -> None:
        """Keep a positive answer until ``resolution.expires_at`` (+ ``stale_max`` as stale)."""
        name = resolution.name
        self._negative.pop(name, None)
        # Popped first: store() re-inserts, so that the first keys stay the oldest.
        self._forget(name)
        r = resolution
        # Built directly: _replace costs several times more, once per miss.
        positive = self._positive
        positive[name] = type(r)(r.name, r.fqdn, r.addresses, r.ttl, "cache", (), r.expires_at)
        if len(positive) > MAX_ENTRIES:
            _bound(positive)
            rechecking = self._rechecking
            for gone in [each for each in rechecking if each not in positive]:
                del rechecking[gone]

    def store_negative(self, name: str, error: DnsLookupFailed, now: float) -> None:
        """Remember that ``name`` does not exist (or has no addresses) for ``negative_ttl``.

        An authoritative "no" also ends any stale answer: serve-stale is for when
        the path fails, not for when the zone says the name is gone.
        """
        self._forget(name)
        if self._negative_ttl <= 0:
            return
        negative = self._negative
        negative[name] = _Negative(error, now + self._negative_ttl)
        if len(negative) > MAX_ENTRIES:
            _bound(negative)

    def clear(self) -> None:
        self._positive.clear()
        self._rechecking.clear()
        self._negative.clear()


def _bound(entries: dict[str, Resolution] | dict[str, _Negative]) -> None:
    """Drop the oldest entries: dicts keep insertion order and store() re-inserts, so
    the first keys are the oldest.

    A batch at a time: a dict keeps the slots of deleted keys until it next resizes,
    and finding its first key walks past all of them, so dropping one entry per
    store would walk thousands of empty slots each time once full.
    """
    excess = len(entries) - MAX_ENTRIES
    if excess <= 0:
        return
    batch = max(excess, MAX_ENTRIES // _EVICT_FRACTION)
    for name in list(islice(entries, min(batch, len(entries)))):
        del entries[name]
