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

Stores that outlive the process (SQLite, Redis) implement the same four
methods; a claim held by a process that died is theirs to expire. This module
has the in-memory store, bounded by an LRU of completed entries.
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


def fingerprint(kind: str, payload: bytes, attributes: Mapping[str, str]) -> bytes:
    """A digest of what makes two requests "the same job"; the trace context is not part of it."""
    digest = hashlib.blake2b(digest_size=16, person=b"bunnyrelay.v1")
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
    __slots__ = ("waiters",)

    def __init__(self, job_id: str, fingerprint: bytes) -> None:
        super().__init__(job_id, fingerprint)
        # Created only when a duplicate arrives, so the common case allocates nothing more.
        self.waiters: asyncio.Event | None = None


class _Done:
    __slots__ = ("fingerprint", "result")

    def __init__(self, fingerprint: bytes, result: JobResult) -> None:
        self.fingerprint = fingerprint
        self.result = result


class MemoryStore(IdempotencyStore):
    """Completed results in process memory, the least recently used evicted past ``capacity``.

    Nothing survives a restart, and replicas do not share it: a resubmission
    that reaches another replica, or this one after a restart, runs again.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._done: OrderedDict[str, _Done] = OrderedDict()
        # Running entries are bounded by relay's in-flight limit, not by capacity.
        self._running: dict[str, _Running] = {}

    def __len__(self) -> int:
        return len(self._done)

    async def reserve(self, job_id: str, fingerprint: bytes) -> Replay | Claim:
        while True:
            done = self._done.get(job_id)
            if done is not None:
                if done.fingerprint != fingerprint:
                    raise FingerprintMismatchError(job_id)
                self._done.move_to_end(job_id)
                return Replay(done.result)
            running = self._running.get(job_id)
            if running is None:
                claim = _Running(job_id, fingerprint)
                self._running[job_id] = claim
                return claim
            if running.fingerprint != fingerprint:
                raise FingerprintMismatchError(job_id)
            if running.waiters is None:
                running.waiters = asyncio.Event()
            # Each waiter has its own future inside Event.wait, so one waiter's
            # cancellation (its deadline) never disturbs the others.
            await running.waiters.wait()

    async def complete(self, claim: Claim, result: JobResult) -> None:
        running = self._forget(claim)
        self._done[claim.job_id] = _Done(claim.fingerprint, result)
        while len(self._done) > self.capacity:
            self._done.popitem(last=False)
        if running is not None and running.waiters is not None:
            running.waiters.set()

    async def release(self, claim: Claim) -> None:
        running = self._forget(claim)
        if running is not None and running.waiters is not None:
            running.waiters.set()

    def _forget(self, claim: Claim) -> _Running | None:
        running = self._running.get(claim.job_id)
        if running is not claim:
            return None
        del self._running[claim.job_id]
        return running
