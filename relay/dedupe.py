"""Idempotency: a ``job_id`` runs to completion at most once per store.

The store remembers, per ``job_id``, a fingerprint of the request (kind,
payload, attributes) and the final result. A job goes through it like this::

    reservation = await store.reserve(job_id, fingerprint)
    if isinstance(reservation, Replay):     # ran before: answer without running
        return reservation.result
    try:
        result = await run(...)
    except BaseException:
        await store.release(reservation)    # did not complete: leave no trace
        raise
    await store.complete(reservation, result)

- The same id with the same fingerprint, after completion: :class:`Replay`.
- The same id with the same fingerprint while a first call holds the claim:
  ``reserve`` waits for it (the caller bounds the wait with its deadline), then
  replays its result, or claims the id itself if the first call released it.
- The same id with a different fingerprint: :class:`FingerprintMismatchError`.

Stores that outlive the process (:mod:`relay.stores`: SQLite, Redis)
implement the same methods; a claim held by a process that died is theirs to
expire. This module has the interface, the pieces every store keeps in
memory (:class:`LocalClaims`, :class:`RecentResults`) and the in-memory store.

Which store keeps which promise is told in :mod:`relay.stores` and docs/stores.md.
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Mapping

from bunnyrelay.v1.jobs_pb2 import JobResult


class FingerprintMismatchError(Exception):
    """The id is known for a request with a different kind, payload or attributes."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id


class Replay:
    """The id completed before; ``result`` is what it returned then."""

    __slots__ = ("result",)

    def __init__(self, result: JobResult) -> None:
        self.result = result


class Claim:
    """The right, and the duty, to run the job and then ``complete`` or ``release`` it."""

    __slots__ = ("fingerprint", "job_id")

    def __init__(self, job_id: str, fingerprint: bytes) -> None:
        self.job_id = job_id
        self.fingerprint = fingerprint


class IdempotencyStore(abc.ABC):
    """Where completed results are kept by ``job_id``."""

    async def open(self) -> None:  # noqa: B027 - stores without resources need nothing here
        """Get ready to serve (files, connections); raises :class:`StoreError` when it cannot."""

    @abc.abstractmethod
    async def reserve(self, job_id: str, fingerprint: bytes) -> Replay | Claim:
        """Replay a completed job, or claim the id; wait while another caller holds it.

        Raises :class:`FingerprintMismatchError` when the id belongs to another request.
        """

    @abc.abstractmethod
    async def complete(self, claim: Claim, result: JobResult) -> None:
        """Remember ``result`` for the claimed id and wake whoever waits for it."""

    @abc.abstractmethod
    async def release(self, claim: Claim) -> None:
        """Forget the claim without a result, so that a retry can run the job.

        Called while the job is being cancelled: it must not wait on anything
        that the cancellation could interrupt.
        """

    async def close(self) -> None:  # noqa: B027 - stores without resources need nothing here
        """Release what the store holds (connections, files)."""


FINGERPRINT_BYTES = 16

DURABLE_CACHE_MAX = 10_000
"""Most recent results a durable store (SQLite, Redis) also keeps in memory.

The store itself is what remembers; the cache only spares a resubmission of a recent
job its read. A result held in memory costs about 0.35 KB (a 100-byte payload), so the
memory store's 100,000 would add some 35 MB to relay's 45, for reads that rarely come.
"""


def fingerprint(kind: str, payload: bytes, attributes: Mapping[str, str]) -> bytes:
    """A digest of what makes two requests "the same job"; the trace context is not part of it."""
    digest = hashlib.blake2b(digest_size=FINGERPRINT_BYTES, person=b"bunnyrelay.v1")
    # Length prefixes keep the encoding unambiguous: ("ab", b"c") never equals ("a", b"bc").
    encoded_kind = kind.encode()
    digest.update(len(encoded_kind).to_bytes(4, "big"))
    digest.update(encoded_kind)
    digest.update(len(payload).to_bytes(8, "big"))
    digest.update(payload)
    if attributes:
        for key in sorted(attributes):
            for text in (key, attributes[key]):
                encoded = text.encode()
                digest.update(len(encoded).to_bytes(4, "big"))
                digest.update(encoded)
    return digest.digest()


class _Running(Claim):
    __slots__ = ("confirmed", "waiters")

    def __init__(self, job_id: str, fingerprint: bytes, *, confirmed: bool) -> None:
        super().__init__(job_id, fingerprint)
        self.confirmed = confirmed
        # Created only when a duplicate arrives, so the common case allocates nothing more.
        self.waiters: asyncio.Event | None = None

    async def wait(self) -> None:
        if self.waiters is None:
            self.waiters = asyncio.Event()
        # Each waiter has its own future inside Event.wait, so one waiter's
        # cancellation (its deadline) never disturbs the others.
        await self.waiters.wait()


class LocalClaims:
    """The claims this process holds, and the duplicates waiting on them.

    A durable store adds a claim here before it asks its backend (unconfirmed),
    so that a duplicate arriving meanwhile waits instead of asking too; it only
    compares fingerprints with confirmed claims, whose fingerprint is the id's.
    """

    def __init__(self) -> None:
        # Bounded by relay's in-flight limit, not by any capacity.
        self._running: dict[str, _Running] = {}

    def __len__(self) -> int:
        return len(self._running)

    def get(self, job_id: str) -> _Running | None:
        return self._running.get(job_id)

    def add(self, job_id: str, fingerprint: bytes, *, confirmed: bool = True) -> _Running:
        claim = _Running(job_id, fingerprint, confirmed=confirmed)
        self._running[job_id] = claim
        return claim

    def forget(self, claim: Claim) -> None:
        """Drop ``claim`` if it is the one held for its id, and wake who waits on it."""
        running = self._running.get(claim.job_id)
        if running is not claim:
            return
        del self._running[claim.job_id]
        if running.waiters is not None:
            running.waiters.set()

    async def wait_or_check(self, job_id: str, fingerprint: bytes) -> bool:
        """If the id is claimed here: raise on a confirmed mismatch, else wait for the
        claim to end and return True (ask again). False when nothing here holds it."""
        running = self._running.get(job_id)
        if running is None:
            return False
        if running.confirmed and running.fingerprint != fingerprint:
            raise FingerprintMismatchError(job_id)
        await running.wait()
        return True


class RecentResults:
    """Completed results, the least recently used evicted past ``capacity``.

    Each is kept as one bytes object, its request's fingerprint followed by the
    serialized result: a parsed JobResult holds about 1.8 KB of Python objects, an
    object holding the two bytes apart about 100 bytes more than this. Replays are
    rare next to completions, so the parse is paid on replay.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._done: OrderedDict[str, bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._done)

    def replay(self, job_id: str, fingerprint: bytes) -> Replay | None:
        """The stored result for ``job_id``; raises on a mismatch; None when not here."""
        done = self._done.get(job_id)
        if done is None:
            return None
        if not done.startswith(fingerprint) or len(fingerprint) != FINGERPRINT_BYTES:
            raise FingerprintMismatchError(job_id)
        self._done.move_to_end(job_id)
        return Replay(JobResult.FromString(done[FINGERPRINT_BYTES:]))

    def add(
        self, job_id: str, fingerprint: bytes, result: JobResult, *, serialized: bytes | None = None
    ) -> None:
        """Remember ``result``; ``serialized`` is its bytes when the caller has them already."""
        if len(fingerprint) != FINGERPRINT_BYTES:
            # Not one of ours (a durable store's row written by something else): not kept
            # here, where it could not be told apart from the result; the store still has it.
            return
        done = self._done
        done[job_id] = fingerprint + (
            result.SerializeToString() if serialized is None else serialized
        )
        done.move_to_end(job_id)
        while len(done) > self.capacity:
            done.popitem(last=False)


class MemoryStore(IdempotencyStore):
    """Completed results in process memory, the least recently used evicted past ``capacity``.

    Nothing survives a restart, and replicas do not share it: a resubmission
    that reaches another replica, or this one after a restart, runs again.
    """

    def __init__(self, capacity: int) -> None:
        self._done = RecentResults(capacity)
        self._claims = LocalClaims()

    @property
    def capacity(self) -> int:
        return self._done.capacity

    def __len__(self) -> int:
        return len(self._done)

    async def reserve(self, job_id: str, fingerprint: bytes) -> Replay | Claim:
        while True:
            replay = self._done.replay(job_id, fingerprint)
            if replay is not None:
                return replay
            if not await self._claims.wait_or_check(job_id, fingerprint):
                return self._claims.add(job_id, fingerprint)

    async def complete(self, claim: Claim, result: JobResult) -> None:
        self._done.add(claim.job_id, claim.fingerprint, result)
        self._claims.forget(claim)

    async def release(self, claim: Claim) -> None:
        self._claims.forget(claim)
