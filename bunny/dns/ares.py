"""c-ares, through aiodns, on the event loop; and a ledger of what c-ares' own cache holds.

Everything here exists because of how c-ares and aiodns behave today, and goes
when they change:

- aiodns 4 runs each channel on an event thread of c-ares' when it can. Every
  answer then costs a hand-over between that thread and the loop (c-ares' channel
  lock, the GIL, the loop's self-pipe); bare aiodns pays little for it, but behind
  bunny's own work on the loop the thread waits for the GIL, and a lookup costs
  more CPU than on the loop. :class:`LoopDrivenResolver` asks aiodns for its
  socket-callback mode instead, through two of aiodns' private methods.
- c-ares 1.34 keeps a query cache (ARES_OPT_QUERY_CACHE) that pycares gives no way
  to turn off: a repeated question inside its TTL never reaches the wire. Each
  :class:`Channel` keeps a ledger of the answers that came off the wire, so a query
  c-ares answers from memory is labelled ``c-ares-cache``, never ``wire``, and the
  cache is flushed whenever c-ares would hand back an answer bunny must not trust.
  When pycares can turn the cache off, the ledger goes.
- c-ares 1.34 shortens a query's timeout to 5x the server's average latency and
  learns that average only from answers that arrive in time; a channel that timed
  out sooner than bunny's timeout is replaced (:meth:`Channels.settle`).

bunny's resolver sees only :meth:`Channels.ask` and :meth:`Channels.settle`.
"""

from __future__ import annotations

import asyncio
import math
import time
import weakref
from dataclasses import dataclass
from typing import Any

import aiodns
import aiodns.error
import pycares

from bunnyrelay.settings import HostPort

# A deadline less than this past c-ares' own timeout gets a timer of ours; a later one
# does not need it, since c-ares reports its timeout first.
_TIMEOUT_SLACK_S = 0.1
# c-ares caps a query's timeout at 5 s unless ARES_OPT_MAXTIMEOUTMS is set (pycares cannot).
_ARES_MAX_TIMEOUT_S = 5.0
# The longest the loop waits before letting c-ares check its timeouts (aiodns' own tick).
_ARES_TIMER_MAX_S = 1.0
# c-ares 1.34 gives no query less than this (its adaptive timeout's lower bound), unless
# the channel's own timeout is shorter.
_ARES_MIN_TIMEOUT_S = 0.25
# c-ares' query cache keeps nothing longer than this (qcache_max_ttl's default).
_ARES_QCACHE_MAX_TTL = 3600
# How close to a second boundary the ledger stops trusting its own arithmetic.
_LEDGER_SLACK_S = 0.05
# The most questions a channel's ledger follows. An entry goes when its question is asked
# again after c-ares forgot it; one never asked again would stay for good, so past this
# the expired ones are swept, and if that is not enough c-ares' cache is flushed with the
# ledger (what c-ares no longer holds, the ledger need not follow).
LEDGER_MAX_ENTRIES = 4096

_RCODES: dict[int, str] = {
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
_CANCELLED = frozenset({aiodns.error.ARES_ECANCELLED, aiodns.error.ARES_EDESTRUCTION})


class LoopDrivenResolver(aiodns.DNSResolver):
    """aiodns in its socket-callback mode: c-ares' sockets are watched by the event loop.

    The lookups are still aiodns' (its futures, its socket handling, its errors),
    with no event thread. One change to that mode: aiodns checks c-ares' timeouts on
    a fixed tick (the timeout, at most 1 s), so a query could time out up to a tick
    late. Here the tick follows c-ares' own next timeout instead, and a new query
    with an earlier one brings the tick forward (c-ares is asked only when the tick
    is due later than the shortest timeout c-ares gives a query).

    Both overrides are of aiodns' private methods; ``tests/bunny/dns/test_ares.py``
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
        if timer is None:
            return future
        now = self.loop.time()
        # A tick due before any new query could time out needs no moving, and asking
        # c-ares costs a call that gives up the GIL, which the export thread then holds.
        if timer.when() <= now + min(self._timeout or 0.0, _ARES_MIN_TIMEOUT_S):
            return future
        due = now + float(self._channel.timeout(_ARES_TIMER_MAX_S))  # type: ignore[no-untyped-call]
        if due < timer.when():
            timer.cancel()
            self._timer = self.loop.call_at(due, self._timer_cb)
        return future


@dataclass(slots=True)
class Reply:
    """What came back for one query, before it is judged."""

    channel: Channel
    fqdn: str
    qtype: str
    source: str
    """Where the ledger says the answer came from: ``wire`` or ``c-ares-cache``."""
    sent: float
    received: float = 0.0
    result: pycares.DNSResult | None = None
    code: int | None = None
    """The c-ares status when there is no result."""
    timed_out_by_us: bool = False
    """Our own bound (the caller's deadline) fired before c-ares reported anything."""
    deadline_bound: bool = False
    """The caller's deadline, not c-ares' timeout, bounded this query."""

    @property
    def nameserver(self) -> str:
        return self.channel.nameserver

    @property
    def latency_ms(self) -> float:
        return (self.received - self.sent) * 1000

    @property
    def rcode(self) -> str:
        """NOERROR (a result, or NODATA), NXDOMAIN, SERVFAIL, … or BADRESP for the unknown."""
        if self.result is not None:
            return "NOERROR"
        return _RCODES.get(self.code or 0, "BADRESP")

    @property
    def cancelled(self) -> bool:
        """c-ares cancelled the query: its channel was closed under it."""
        return self.code in _CANCELLED

    @property
    def unknown_error(self) -> str:
        """For a c-ares status without an rcode of its own: what c-ares calls it."""
        if self.result is not None or self.code is None or self.code in _RCODES:
            return ""
        return f"c-ares error {self.code}: {pycares.errno.strerror(self.code)!s}"


_Held = tuple[int, int, float, bool]
"""What c-ares' query cache may be holding for one question on one channel:

- ``surely_until``: c-ares holds it while floor(now) is below this (from when the query
  was sent);
- ``maybe_until``: …and certainly not once floor(now) reaches this (from when the answer
  came in);
- ``trusted_until``: bunny's own policy: after this (max_ttl), the answer must be fetched
  again;
- ``flush_first``: negative or unusable answers, whose lifetime in c-ares is unknown or
  unwanted.

A plain tuple of numbers: an entry outlives many young collections, and the collector
stops tracking such a tuple the first time it sees one, where an object of a class of
ours would be traversed by every older collection for as long as it is kept.
"""
_MAYBE_UNTIL = 1
"""The index of ``maybe_until`` in a :data:`_Held`."""


class Channel:
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
        # attempt, and the nameserver it went to, is bunny's to choose, retry and trace.
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
        surely_until, maybe_until, trusted_until, flush_first = held
        if second >= maybe_until:
            del self._ledger[(fqdn, qtype)]
            return "wire"
        if (
            not flush_first
            and now < trusted_until
            and math.floor(now + _LEDGER_SLACK_S) < surely_until
        ):
            return "c-ares-cache"
        self.flush()
        return "wire"

    def record(self, reply: Reply, *, ares_ttl: int | None, trusted_for: float) -> None:
        """Note an answer that came off the wire (``ares_ttl`` None: negative or unusable)."""
        key, sent, received = (reply.fqdn, reply.qtype), reply.sent, reply.received
        if ares_ttl is None:
            held = (math.floor(sent), math.floor(received) + _ARES_QCACHE_MAX_TTL, 0.0, True)
        elif ares_ttl <= 0:
            # c-ares does not cache what is already expired.
            self._ledger.pop(key, None)
            return
        else:
            ttl = min(ares_ttl, _ARES_QCACHE_MAX_TTL)
            held = (
                math.floor(sent) + ttl,
                math.floor(received) + ttl,
                received + trusted_for,
                False,
            )
        if len(self._ledger) >= LEDGER_MAX_ENTRIES and key not in self._ledger:
            self._make_room(math.floor(received))
        self._ledger[key] = held

    def _make_room(self, second: int) -> None:
        """Forget what c-ares has surely dropped; if that frees nothing, empty both caches."""
        ledger = self._ledger
        for key in [k for k, held in ledger.items() if second >= held[_MAYBE_UNTIL]]:
            del ledger[key]
        if len(ledger) >= LEDGER_MAX_ENTRIES:
            self.flush()

    def flush(self) -> None:
        # c-ares empties its query cache whenever the server list changes, and
        # pycares offers no other way. Setting the same list again is no change.
        # Adding a second server keeps ours, and the queries in flight on it;
        # removing the decoy again is a second change back to where we were.
        # Nothing is sent to the decoy unless c-ares requeues a timed-out query
        # in the instant between the two calls; that query then fails and is
        # retried by bunny like any other.
        self.resolver.nameservers = [self.nameserver, self._decoy]
        self.resolver.nameservers = [self.nameserver]
        self._ledger.clear()

    async def close(self) -> None:
        await self.resolver.close()


def ares_cache_ttl(result: pycares.DNSResult) -> int:
    """The TTL c-ares' query cache gives this answer: its smallest, SOA aside."""
    if not result.authority and not result.additional and len(result.answer) == 1:
        # The usual answer, one address record: no lists to build.
        only = result.answer[0]
        return only.ttl if only.type != pycares.QUERY_TYPE_SOA else 0
    ttls = [
        record.ttl
        for section in (result.answer, result.authority, result.additional)
        for record in section
        if record.type != pycares.QUERY_TYPE_SOA
    ]
    return min(ttls) if ttls else 0


class Channels:
    """A channel per nameserver, opened on first use and replaced when c-ares misjudges it."""

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._open: dict[HostPort, Channel] = {}
        self._retired: set[Channel] = set()
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    async def ask(self, server: HostPort, fqdn: str, qtype: str, remaining: float | None) -> Reply:
        """One query to ``server``; ``remaining`` is the caller's time left, if bounded."""
        channel = self._channel(server)
        sent = time.monotonic()
        reply = Reply(channel, fqdn, qtype, channel.source_for(fqdn, qtype, sent), sent)
        # c-ares times the query out itself (tries=1, at most our timeout); a timer of
        # ours is only needed when the caller's deadline comes first.
        budget: float | None = None
        if remaining is not None and remaining < self._timeout + _TIMEOUT_SLACK_S:
            budget, reply.deadline_bound = remaining, True
        channel.inflight += 1
        try:
            if budget is None:
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
            if channel.retired:
                self._release(channel)
        reply.received = time.monotonic()
        return reply

    def settle(self, reply: Reply, *, usable: bool, ttl: int | None) -> None:
        """Note what c-ares now holds after ``reply`` was judged.

        ``usable``: its result passed bunny's checks; ``ttl``: the TTL bunny gives
        its addresses (None: it had none).
        """
        channel = reply.channel
        if reply.result is not None:
            if not usable:
                # c-ares cached it all the same; a retry must not be handed it again.
                channel.record(reply, ares_ttl=None, trusted_for=0)
            elif reply.source == "wire":
                ares_ttl = ares_cache_ttl(reply.result) if ttl is not None else None
                channel.record(reply, ares_ttl=ares_ttl, trusted_for=ttl or 0)
            return
        rcode = reply.rcode
        if rcode in ("NXDOMAIN", "NOERROR"):
            channel.record(reply, ares_ttl=None, trusted_for=0)
        elif rcode == "TIMEOUT" and not reply.timed_out_by_us:
            cut_short = reply.latency_ms < 900 * min(self._timeout, _ARES_MAX_TIMEOUT_S)
            if cut_short:
                self._retire(channel)

    async def close(self) -> None:
        """Close every channel; c-ares cancels the queries in flight on them."""
        self._closed = True
        channels = [*self._open.values(), *self._retired]
        self._open.clear()
        self._retired.clear()
        await asyncio.gather(*(channel.close() for channel in channels))
        await asyncio.gather(*self._closing, return_exceptions=True)

    def _channel(self, server: HostPort) -> Channel:
        channel = self._open.get(server)
        if channel is None:
            if self._closed:
                # A lookup that was waiting to retry when close() ran: it ends as the
                # queries close() cut off do, without opening a channel no one will close.
                raise asyncio.CancelledError("the resolver was closed")
            channel = Channel(server, self._timeout)
            self._open[server] = channel
        return channel

    def _retire(self, channel: Channel) -> None:
        """Replace a channel whose c-ares timed out sooner than bunny's timeout.

        c-ares learns a server's latency only from answers that arrive in time. If
        the path slows down for good (a VPN failover), every query on the old
        channel times out and it never learns the new latency. A new channel
        starts from the configured timeout again.
        """
        if self._open.get(channel.server) is not channel:
            return
        del self._open[channel.server]
        channel.retired = True
        self._retired.add(channel)
        self._release(channel)

    def _release(self, channel: Channel) -> None:
        if channel.retired and channel.inflight == 0 and channel in self._retired:
            self._retired.discard(channel)
            task = asyncio.get_running_loop().create_task(channel.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
