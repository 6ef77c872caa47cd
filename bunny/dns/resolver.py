"""bunny's resolver: hosts file, cache, one lookup per name in flight, candidates in turn.

Why not getaddrinfo or gRPC's resolver: they hide TTLs and retries, and gRPC's
only re-resolves on disconnect. Here every candidate FQDN, type and attempt is a
query of its own, noted with the times it ran, so that the telemetry wrapped
around the resolver (:mod:`bunny.dns.tracing`) can show what ``ndots:5`` costs,
which nameserver timed out, and where each answer came from.

How a lookup goes:

1. The hosts file, as glibc's ``hosts: files dns`` reads it first.
2. bunny's cache: a fresh answer, a cached NXDOMAIN/NODATA (RFC 2308), or a
   stale answer while a failed refresh is backing off (RFC 8767).
3. Concurrent lookups of one name share a single one in flight.
4. Candidates from the search list (glibc order), one at a time. NXDOMAIN and
   NODATA move to the next candidate; a failure of the path (timeout, SERVFAIL,
   REFUSED, unreachable, bad answer) stops the lookup, as glibc does, rather than
   risk a wrong answer from a later candidate.
5. Per candidate, A and/or AAAA in parallel; each query is sent with c-ares' own
   retries off and retried by :func:`bunny.retry.retry_after_first`, rotating
   through the nameservers, bounded by ``attempts`` and the caller's deadline.
6. If the refresh of a known name fails, the last good answer is served stale
   for up to ``stale_max`` past its expiry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field

from bunny.dns.answers import Answer, as_query, judge
from bunny.dns.ares import Channels
from bunny.dns.cache import AnswerCache
from bunny.dns.hosts import HostsFile
from bunny.dns.model import FAMILIES, DnsQuery, Resolution
from bunny.dns.names import candidates, check_name
from bunny.dns.settings import ResolverSettings
from bunny.errors import DnsLookupFailed, DnsTimeout, NameNotFound, NoAddresses
from bunny.retry import Clock, RetryPolicy, Sleep, retry_after_first

log = logging.getLogger("bunny.resolver")

# Between attempts of one query: small, because a DNS retry is cheap and a job waits on it.
DNS_RETRY_BASE_S = 0.05
DNS_RETRY_MAX_S = 1.0


@dataclass(slots=True)
class SentQuery:
    """One query as it went, with its wall-clock times, for a span made after the fact."""

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
class LookupNotes:
    """What one call of :meth:`Resolver.resolve` did, for the telemetry around it.

    The caller makes it and reads it afterwards; the resolver only writes to it.
    """

    keep_sent: bool = False
    """Keep every query in ``sent`` (a trace will show them)."""
    handle: object = None
    """The caller's own (a span context): the callers that wait for this lookup get it."""
    candidates: tuple[str, ...] = ()
    sent: list[SentQuery] | None = None
    """Every query sent, when ``keep_sent``."""
    queries_sent: int = 0
    """Queries this call itself sent to the wire."""
    coalesced: bool = False
    """It waited for the same lookup in flight for another caller instead of asking."""
    waited_for: LookupNotes | None = None
    """The notes of the call whose lookup it waited for."""
    refresh_error: str = ""
    """For a stale answer: the error type of the refresh that failed."""
    stale_for: float = 0.0
    """For a stale answer: seconds since it expired."""


@dataclass(slots=True)
class _Lookup:
    """What one lookup has done so far."""

    name: str
    candidates: tuple[str, ...]
    deadline: float | None
    notes: LookupNotes | None
    """Only when the caller keeps every query sent."""
    queries: list[DnsQuery] = field(default_factory=list)


class _LeaderGoneError(Exception):
    """The lookup a caller was waiting for ended with the cancelled caller that ran it."""


class Resolver:
    """Resolves names to addresses for bunny; one per process, closed with :meth:`close`."""

    cached: Callable[[str], Resolution | None]
    """``cached(name)``: the hosts file's answer for ``name``, or a fresh one from bunny's
    cache, or None. The path every job takes: no allocation, no await."""

    def __init__(
        self,
        settings: ResolverSettings,
        *,
        retry: RetryPolicy | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        """``retry`` defaults to ``settings.attempts`` with a short backoff. ``clock`` is the
        time of the caches and deadlines (a test may move it; c-ares keeps its own), and
        ``sleep`` what waits between attempts."""
        self.settings = settings
        self._types = FAMILIES[settings.family]
        self._retry_policy = retry or RetryPolicy(
            attempts=settings.attempts,
            backoff_base_s=DNS_RETRY_BASE_S,
            backoff_max_s=DNS_RETRY_MAX_S,
        )
        self._clock = clock
        self._sleep = sleep
        self._cache = AnswerCache(
            stale_max=settings.stale_max,
            stale_ttl=settings.stale_ttl,
            stale_recheck=settings.stale_recheck,
            negative_ttl=settings.negative_ttl,
        )
        self._channels = Channels(settings.timeout)
        self._servers = tuple((server, str(server)) for server in settings.nameservers)
        """Each nameserver with its name as traces show it, made once."""
        self._hosts = (
            HostsFile(settings.hosts_file, self._types, clock=clock)
            if settings.hosts_file is not None
            else None
        )
        self._inflight: dict[str, LookupNotes | None] = {}
        """The lookup in flight for each name (its caller's notes), for the callers that ask
        while it runs."""
        self._waiting: dict[str, asyncio.Future[Resolution]] = {}
        """For a lookup in flight that others wait for: what they wait on. Made by the first
        of them, so that a lookup no one else asks for costs no future."""
        self._closed = False
        self.cached = self._fast_path()

    def _fast_path(self) -> Callable[[str], Resolution | None]:
        # A closure over what it needs, chosen once: this runs for every job.
        fresh, clock, hosts = self._cache.fresh, self._clock, self._hosts
        if hosts is None:

            def cached(name: str) -> Resolution | None:
                return fresh(name, clock())

            return cached
        known, look, remember = hosts.answers, hosts.look, hosts.remember

        def cached_after_hosts(name: str) -> Resolution | None:
            now = clock()
            if now >= hosts.next_look:
                look(now)
            try:
                answer = known[name]
            except KeyError:
                answer = remember(name)
            return answer if answer is not None else fresh(name, now)

        return cached_after_hosts

    def resolve(
        self, name: str, *, deadline: float | None = None, notes: LookupNotes | None = None
    ) -> Coroutine[None, None, Resolution]:
        """Resolve ``name``, from cache when fresh; ``deadline`` is a value of the clock.

        The lookup raises a DnsLookupFailed subclass saying what failed. ``notes``
        gets what this call did.
        """
        if self._closed:
            raise RuntimeError("Resolver.resolve() after close()")
        return self._resolve(name, deadline, notes)

    async def close(self) -> None:
        """Cancel lookups in flight and close every c-ares channel."""
        self._closed = True
        # Callers waiting on another's lookup end now; the lookups themselves end as
        # their channels close below (c-ares cancels what is in flight).
        for waiting in self._waiting.values():
            waiting.cancel()
        await self._channels.close()
        self._cache.clear()

    # --- one lookup, as the caller sees it --------------------------------------------------

    async def _resolve(
        self, name: str, deadline: float | None, notes: LookupNotes | None
    ) -> Resolution:
        now = self._clock()
        if self._hosts is not None:
            listed = self._hosts.answer(name, now)
            if listed is not None:
                return listed
        hit = self._cache.fresh(name, now)
        if hit is not None:
            # The TTL left, not the TTL as stored. Built directly: this is a cache hit.
            return Resolution(
                hit.name,
                hit.fqdn,
                hit.addresses,
                max(int(hit.expires_at - now), 0),
                hit.source,
                hit.queries,
                hit.expires_at,
            )
        known = self._cache.negative(name, now)
        if known is not None:
            raise known.again_from_negative_cache()
        stale = self._cache.stale_while_rechecking(name, now)
        if stale is not None:
            return self._stale(stale, notes)
        check_name(name)

        inflight = self._inflight
        if name not in inflight:
            return await self._lead(name, deadline, notes)
        leader = inflight[name]
        future = self._waiting.get(name)
        if future is None:
            future = self._waiting[name] = asyncio.get_running_loop().create_future()
        if notes is not None:
            notes.coalesced, notes.waited_for = True, leader
        try:
            # Shielded: a follower that gives up must not cancel the answer for the others.
            if deadline is None:
                return await asyncio.shield(future)
            async with asyncio.timeout(max(deadline - now, 0.0)):
                return await asyncio.shield(future)
        except _LeaderGoneError:
            # The caller that asked first was cancelled, and its lookup with it: ask again.
            return await self._resolve(name, deadline, notes)
        except TimeoutError:
            late = DnsTimeout(
                name, detail="the deadline came while waiting for the same lookup in flight"
            )
            # RFC 8767's client response timer: a stale answer beats none.
            stale_answer = self._cache.serve_stale(name, self._clock(), late)
            if stale_answer is not None:
                return self._stale(stale_answer, notes)
            raise late from None

    def _stale(self, stale: Resolution, notes: LookupNotes | None) -> Resolution:
        if notes is not None:
            notes.refresh_error = self._cache.refresh_error(stale.name)
            notes.stale_for = self._cache.expired_for(stale.name, self._clock())
        return stale

    async def _lead(
        self, name: str, deadline: float | None, notes: LookupNotes | None
    ) -> Resolution:
        """Look ``name`` up in the caller's own task; callers that ask meanwhile wait for it.

        Not in a task of its own: starting one, and shielding it from this caller's
        cancellation, costs two more passes of the event loop than the query itself.
        The price is that when this caller is cancelled the lookup ends with it, and
        the callers waiting ask again.
        """
        lookup = _Lookup(
            name,
            candidates(name, self.settings.search, self.settings.ndots),
            deadline,
            notes if notes is not None and notes.keep_sent else None,
        )
        if notes is not None:
            notes.candidates = lookup.candidates
            if notes.keep_sent and notes.sent is None:
                notes.sent = []
        self._inflight[name] = notes
        try:
            try:
                resolution = await self._ask(lookup)
            except DnsLookupFailed as exc:
                resolution = self._failed(name, exc, notes)
            else:
                self._cache.store(resolution)
        except asyncio.CancelledError:
            self._settle(name, _LeaderGoneError())
            raise
        except BaseException as exc:
            self._settle(name, exc)
            raise
        finally:
            del self._inflight[name]
        if self._waiting:
            waiting = self._waiting.pop(name, None)
            if waiting is not None and not waiting.done():
                waiting.set_result(resolution)
        if notes is not None:
            for query in resolution.queries:
                if query.source == "wire":
                    notes.queries_sent += 1
        return resolution

    def _settle(self, name: str, exc: BaseException) -> None:
        """Hand ``exc`` to the callers waiting for the lookup of ``name``, if any still are."""
        waiting = self._waiting.pop(name, None)
        if waiting is not None and not waiting.done():
            waiting.set_exception(exc)
            # Retrieved here: with no one waiting, asyncio would log it as never retrieved.
            waiting.exception()

    def _failed(self, name: str, exc: DnsLookupFailed, notes: LookupNotes | None) -> Resolution:
        """After the lookup failed: a stale answer when the path failed, else ``exc`` raised
        (an authoritative "no" kept in the negative cache)."""
        now = self._clock()
        if exc.retryable:
            stale = self._cache.serve_stale(name, now, exc)
            if stale is not None:
                log.warning(
                    "serving a stale answer for %s: %s",
                    name,
                    exc,
                    extra={"event": "dns.serve_stale", "dns_name": name},
                )
                return self._stale(stale, notes)
        elif isinstance(exc, NameNotFound | NoAddresses):
            self._cache.store_negative(name, exc, now)
        raise exc

    async def _ask(self, lookup: _Lookup) -> Resolution:
        """Each candidate in turn until one has addresses."""
        nodata: str | None = None
        for fqdn in lookup.candidates:
            try:
                if len(self._types) == 1:
                    # The first try straight from here: one coroutine less per lookup.
                    qtype = self._types[0]
                    try:
                        answer = await self._attempt(lookup, fqdn, qtype, 1)
                    except DnsLookupFailed as exc:
                        answer = await self._retry(lookup, fqdn, qtype, exc)
                    answers = [answer]
                else:
                    answers = await self._ask_families(lookup, fqdn)
            except DnsLookupFailed as exc:
                raise self._whole(lookup, exc) from None
            if len(answers) == 1:
                # One family asked (the common case): its answer is the whole of it.
                only = answers[0]
                if only.addresses:
                    ttl = only.ttl or 0
                    return Resolution(
                        lookup.name,
                        fqdn,
                        only.addresses,
                        ttl,
                        only.source,
                        tuple(lookup.queries),
                        self._clock() + ttl,
                    )
            else:
                usable = [answer for answer in answers if answer.addresses]
                if usable:
                    ttl = min(answer.ttl or 0 for answer in usable)
                    from_ares = all(answer.source == "c-ares-cache" for answer in usable)
                    return Resolution(
                        lookup.name,
                        fqdn,
                        tuple(a for answer in usable for a in answer.addresses),
                        ttl,
                        "c-ares-cache" if from_ares else "wire",
                        tuple(lookup.queries),
                        self._clock() + ttl,
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

    async def _ask_families(self, lookup: _Lookup, fqdn: str) -> list[Answer]:
        """A and AAAA for one candidate, in parallel."""
        results = await asyncio.gather(
            *(self._query(lookup, fqdn, qtype) for qtype in self._types), return_exceptions=True
        )
        answers: list[Answer] = []
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

    async def _query(self, lookup: _Lookup, fqdn: str, qtype: str) -> Answer:
        """One question, with retries for failures of the path only.

        The first try is made here rather than through :func:`bunny.retry.call_with_retries`: almost
        every query is answered at once, and would otherwise pay a coroutine and a
        closure for retries it never makes.
        """
        try:
            return await self._attempt(lookup, fqdn, qtype, 1)
        except DnsLookupFailed as exc:
            first = exc
        return await self._retry(lookup, fqdn, qtype, first)

    async def _retry(
        self, lookup: _Lookup, fqdn: str, qtype: str, first: DnsLookupFailed
    ) -> Answer:
        """Attempts 2, 3, … of one question whose first try failed with ``first``."""
        return await retry_after_first(
            lambda attempt: self._attempt(lookup, fqdn, qtype, attempt),
            first,
            policy=self._retry_policy,
            deadline=lookup.deadline,
            clock=self._clock,
            sleep=self._sleep,
        )

    async def _attempt(self, lookup: _Lookup, fqdn: str, qtype: str, attempt: int) -> Answer:
        """Send one query; raise the typed error if the path failed."""
        servers = self._servers
        server, server_name = servers[(attempt - 1) % len(servers)]
        remaining: float | None = None
        if lookup.deadline is not None:
            remaining = lookup.deadline - self._clock()
            if remaining <= 0:
                raise DnsTimeout(
                    fqdn,
                    qtype=qtype,
                    nameservers=[server_name],
                    attempts=attempt - 1,
                    detail="the deadline had passed before it could be asked",
                )
        sent: SentQuery | None = None
        if lookup.notes is not None and lookup.notes.sent is not None:
            sent = SentQuery(fqdn, qtype, server_name, attempt, time.time_ns())
            lookup.notes.sent.append(sent)
        try:
            reply = await self._channels.ask(server, fqdn, qtype, remaining)
            if reply.cancelled:
                raise asyncio.CancelledError(f"{fqdn} {qtype}: the resolver was closed")
            answer: Answer | None = None
            try:
                answer = judge(reply, max_ttl=self.settings.max_ttl, timeout=self.settings.timeout)
            except DnsLookupFailed as failure:
                query = as_query(reply, attempt, failure=failure)
                lookup.queries.append(query)
                if sent is not None:
                    sent.query, sent.failure = query, failure
                raise
            finally:
                self._channels.settle(
                    reply, usable=answer is not None, ttl=answer.ttl if answer else None
                )
            query = as_query(reply, attempt, answer=answer)
            lookup.queries.append(query)
            if sent is not None:
                sent.query = query
            return answer
        finally:
            if sent is not None:
                sent.ended_ns = time.time_ns()
