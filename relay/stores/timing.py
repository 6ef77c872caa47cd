"""The idempotency store's latency, measured around any store from outside.

``db.client.operation.duration`` (seconds), the database client semantic
conventions' metric, by ``db.system.name`` (``memory``, ``sqlite``, ``redis``),
``db.operation.name`` (``reserve``, ``complete``, ``release``) and, when the call
raised, ``error.type``. ``reserve`` includes waiting for another caller's claim
on the same id: that wait is part of what the job waited for.

Only the stores that leave the process are timed (:func:`timed`): even a cheap
histogram point (:mod:`bunnyrelay.histograms`) and two clock reads are not nothing
beside a memory store's whole answer, twice per job.
"""

from __future__ import annotations

from collections.abc import Mapping
from time import perf_counter

from opentelemetry.metrics import Meter
from opentelemetry.util.types import AttributeValue

from bunnyrelay import semconv
from bunnyrelay.histograms import HotHistogram
from bunnyrelay.v1.jobs_pb2 import JobResult
from relay.stores.base import Claim, IdempotencyStore, Replay

# Seconds: a memory store answers in microseconds, Redis across a zone in milliseconds.
_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)

Attributes = Mapping[str, AttributeValue]


def store_system(store: IdempotencyStore) -> str:
    """``db.system.name`` for ``store``: ``memory``, ``sqlite``, ``redis``, or its class's name."""
    name = type(store).__name__
    return name.removesuffix("Store").lower() or name


def timed(store: IdempotencyStore, meter: Meter) -> IdempotencyStore:
    """``store`` measured by a :class:`TimedStore`, unless it is the memory store."""
    system = store_system(store)
    return store if system == "memory" else TimedStore(store, meter, system=system)


class TimedStore(IdempotencyStore):
    """``store``, each ``reserve``, ``complete`` and ``release`` timed."""

    def __init__(self, store: IdempotencyStore, meter: Meter, *, system: str) -> None:
        self.store = store
        self._duration = HotHistogram(
            meter,
            semconv.METRIC_DB_CLIENT_OPERATION_DURATION,
            unit="s",
            description="Duration of the idempotency store's operations",
            boundaries=_BUCKETS,
        )
        base = {semconv.DB_SYSTEM_NAME: system}
        self._ok: dict[str, Attributes] = {
            operation: {**base, semconv.DB_OPERATION_NAME: operation}
            for operation in ("reserve", "complete", "release")
        }
        self._failed: dict[tuple[str, type[BaseException]], Attributes] = {}

    async def open(self) -> None:
        await self.store.open()

    async def close(self) -> None:
        await self.store.close()

    async def reserve(self, job_id: str, fingerprint: bytes) -> Replay | Claim:
        started = perf_counter()
        try:
            reservation = await self.store.reserve(job_id, fingerprint)
        except BaseException as exc:
            self._duration.record(
                ("reserve", type(exc)), self._failure("reserve", exc), perf_counter() - started
            )
            raise
        self._duration.record("reserve", self._ok["reserve"], perf_counter() - started)
        return reservation

    async def complete(self, claim: Claim, result: JobResult) -> None:
        started = perf_counter()
        try:
            await self.store.complete(claim, result)
        except BaseException as exc:
            self._duration.record(
                ("complete", type(exc)), self._failure("complete", exc), perf_counter() - started
            )
            raise
        self._duration.record("complete", self._ok["complete"], perf_counter() - started)

    async def release(self, claim: Claim) -> None:
        started = perf_counter()
        try:
            await self.store.release(claim)
        except BaseException as exc:
            self._duration.record(
                ("release", type(exc)), self._failure("release", exc), perf_counter() - started
            )
            raise
        self._duration.record("release", self._ok["release"], perf_counter() - started)

    def _failure(self, operation: str, exc: BaseException) -> Attributes:
        key = (operation, type(exc))
        attributes = self._failed.get(key)
        if attributes is None:
            attributes = self._failed[key] = {
                **self._ok[operation],
                semconv.ERROR_TYPE: type(exc).__qualname__,
            }
        return attributes
