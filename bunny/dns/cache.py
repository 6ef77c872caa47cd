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

import dataclasses
from dataclasses import dataclass
from itertools import islice

from bunny.dns.model import DnsQuery, Resolution
from bunny.errors import DnsLookupFailed

# Enough for every name a client process talks to; a bound keeps a bug from growing it forever.
MAX_ENTRIES = 4096
# Past the bound, the oldest are dropped this many at a time (at least one).
_EVICT_FRACTION = 16


@dataclass(slots=True)
class _Positive:
    served: Resolution
    """What a cache hit returns (source "cache", no queries), built once at store time;
    a stale answer is made from it too (it only differs in source, TTL and queries).
    The answer as it came in is not kept: its queries would stay alive with it."""
    expires_at: float
    stale_until: float
    recheck_at: float = 0.0
    """While stale: no refresh before this time."""
    refresh_error: str = ""


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
        self._positive: dict[str, _Positive] = {}
        self._negative: dict[str, _Negative] = {}

    def fresh(self, name: str, now: float) -> Resolution | None:
        """The unexpired answer for ``name``, or None. The hot path: keep it this small."""
        entry = self._positive.get(name)
        if entry is not None and entry.expires_at > now:
            return entry.served
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
        if entry is None or entry.expires_at > now or now >= entry.recheck_at:
            return None
        if now >= entry.stale_until:
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
        if now >= entry.stale_until:
            del self._positive[name]
            return None
        if entry.expires_at > now:
            # Fresh after all (another lookup stored it meanwhile).
            return None
        entry.recheck_at = now + self._stale_recheck
        entry.refresh_error = type(error).__name__
        return self._stale_view(entry, now, queries=error.queries)

    def refresh_error(self, name: str) -> str:
        entry = self._positive.get(name)
        return entry.refresh_error if entry is not None else ""

    def expired_for(self, name: str, now: float) -> float:
        """Seconds since the kept answer for ``name`` expired (0 while fresh or unknown)."""
        entry = self._positive.get(name)
        return max(now - entry.expires_at, 0.0) if entry is not None else 0.0

    def _stale_view(
        self, entry: _Positive, now: float, queries: tuple[DnsQuery, ...]
    ) -> Resolution:
        return dataclasses.replace(
            entry.served,
            source="stale-cache",
            ttl=self._stale_ttl,
            queries=queries,
            expires_at=min(now + self._stale_ttl, entry.stale_until),
        )

    def store(self, resolution: Resolution) -> None:
        """Keep a positive answer until ``resolution.expires_at`` (+ ``stale_max`` as stale)."""
        name = resolution.name
        self._negative.pop(name, None)
        self._positive.pop(name, None)
        r = resolution
        # Built directly: dataclasses.replace costs several times more, once per miss.
        served = type(r)(r.name, r.fqdn, r.addresses, r.ttl, "cache", (), r.expires_at)
        positive = self._positive
        positive[name] = _Positive(served, r.expires_at, r.expires_at + self._stale_max)
        if len(positive) > MAX_ENTRIES:
            _bound(positive)

    def store_negative(self, name: str, error: DnsLookupFailed, now: float) -> None:
        """Remember that ``name`` does not exist (or has no addresses) for ``negative_ttl``.

        An authoritative "no" also ends any stale answer: serve-stale is for when
        the path fails, not for when the zone says the name is gone.
        """
        self._positive.pop(name, None)
        if self._negative_ttl <= 0:
            return
        negative = self._negative
        negative[name] = _Negative(error, now + self._negative_ttl)
        if len(negative) > MAX_ENTRIES:
            _bound(negative)

    def clear(self) -> None:
        self._positive.clear()
        self._negative.clear()


def _bound(entries: dict[str, _Positive] | dict[str, _Negative]) -> None:
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
