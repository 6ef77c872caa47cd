"""The interface every idempotency store implements: a ``job_id`` runs to completion at most once.

A store remembers, per ``job_id``, a fingerprint of the request (kind,
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

A store that cannot answer raises :class:`relay.errors.StoreError`. Stores that
outlive the process (SQLite, Redis) expire claims held by a process that died.
Which store keeps which promise is told in :mod:`relay.stores` and docs/stores.md.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Mapping

from bunnyrelay.v1.jobs_pb2 import JobResult

FINGERPRINT_BYTES = 16

DURABLE_CACHE_MAX = 10_000
"""Most recent results a durable store (SQLite, Redis) also keeps in memory.

The store itself is what remembers; the cache only spares a resubmission of a recent
job its read (docs/benchmarks.md has what a cached result costs in memory).
"""


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
        """Get ready to serve (files, connections); raises :class:`relay.errors.StoreError`
        when it cannot."""

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


_PERSONALIZED = hashlib.blake2b(digest_size=FINGERPRINT_BYTES, person=b"bunnyrelay.v1")
"""Set up once: a copy of it is cheaper than a new hash with the same parameters."""


_AFTER_KIND: dict[str, hashlib.blake2b] = {}
"""Per kind, the hash with the kind taken in: every job of a kind starts from a copy."""
_KINDS_KEPT = 64
"""Kinds come from callers; relay knows a few, and the rest are rejected before this."""


def fingerprint(kind: str, payload: bytes, attributes: Mapping[str, str]) -> bytes:
    """A digest of what makes two requests "the same job"; the trace context is not part of it.

    Stores keep it, so it never changes between releases: the same request, the same bytes.
    """
    after_kind = _AFTER_KIND.get(kind)
    if after_kind is None:
        after_kind = _PERSONALIZED.copy()
        # Length prefixes keep the encoding unambiguous: ("ab", b"c") never equals ("a", b"bc").
        encoded_kind = kind.encode()
        after_kind.update(len(encoded_kind).to_bytes(4, "big"))
        after_kind.update(encoded_kind)
        if len(_AFTER_KIND) >= _KINDS_KEPT:
            _AFTER_KIND.clear()
        _AFTER_KIND[kind] = after_kind
    digest = after_kind.copy()
    digest.update(len(payload).to_bytes(8, "big"))
    digest.update(payload)
    if attributes:
        for key in sorted(attributes):
            for text in (key, attributes[key]):
                encoded = text.encode()
                digest.update(len(encoded).to_bytes(4, "big"))
                digest.update(encoded)
    return digest.digest()
