"""What every store keeps in process memory; the memory store (``--store memory``) is only that.

- :class:`LocalClaims`: the jobs this process is running, and the duplicates
  waiting for them (every store has them: a duplicate of a job running here
  waits without asking the backend).
- :class:`RecentResults`: completed results, least recently used evicted
  (the whole memory store; a cache in front of a durable one).
- :class:`MemoryStore`: the two together. Nothing survives a restart and
  replicas do not share it.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from bunnyrelay.v1.jobs_pb2 import JobResult
from relay.stores.base import (
    FINGERPRINT_BYTES,
    Claim,
    FingerprintMismatchError,
    IdempotencyStore,
    Replay,
)


class _Running(Claim):
    __slots__ = ("confirmed", "waiters")

    def __init__(self, job_id: str, fingerprint: bytes, *, confirmed: bool) -> None:
        # Claim's fields set here, not through its __init__: one call fewer per job.
        self.job_id = job_id
        self.fingerprint = fingerprint
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
    serialized result: far smaller than a parsed JobResult (docs/benchmarks.md).
    Replays are rare next to completions, so the parse is paid on replay.
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
        claims = self._claims
        while True:
            replay = self._done.replay(job_id, fingerprint)
            if replay is not None:
                return replay
            # Nobody holds the id (nearly every job): claimed without awaiting anything.
            if claims.get(job_id) is None or not await claims.wait_or_check(job_id, fingerprint):
                return claims.add(job_id, fingerprint)

    async def complete(self, claim: Claim, result: JobResult) -> None:
        self._done.add(claim.job_id, claim.fingerprint, result)
        self._claims.forget(claim)

    async def release(self, claim: Claim) -> None:
        self._claims.forget(claim)
