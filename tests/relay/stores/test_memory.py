"""The in-memory idempotency store: replay, conflicts, waiting duplicates, bounded size."""

from __future__ import annotations

import asyncio

import pytest

from bunnyrelay.v1.jobs_pb2 import JobResult
from relay.stores.base import Claim, FingerprintMismatchError, Replay, fingerprint
from relay.stores.memory import MemoryStore

FP = fingerprint("echo", b"x", {})


async def _claim(store: MemoryStore, job_id: str, fp: bytes = FP) -> Claim:
    reservation = await store.reserve(job_id, fp)
    assert isinstance(reservation, Claim)
    return reservation


def test_fingerprint_covers_kind_payload_and_attributes_but_not_their_order() -> None:
    base = fingerprint("echo", b"ab", {"a": "1", "b": "2"})
    assert base == fingerprint("echo", b"ab", {"b": "2", "a": "1"})
    assert base != fingerprint("echo", b"ab", {"a": "1"})
    assert base != fingerprint("echo", b"ab", {"a": "1", "b": "3"})
    assert base != fingerprint("sha256", b"ab", {"a": "1", "b": "2"})
    # Length prefixes: moving a byte between fields changes the digest.
    assert fingerprint("echo", b"ab", {}) != fingerprint("echoa", b"b", {})
    assert fingerprint("e", b"", {"ab": "c"}) != fingerprint("e", b"", {"a": "bc"})


@pytest.mark.parametrize(
    ("kind", "payload", "attributes", "stored"),
    [
        ("echo", b"ab", {"a": "1", "b": "2"}, "06c1b08432c387c67944c16b7963c81a"),
        ("sha256", b"", {}, "7f2c3a14585ce70da3f750758decbdbc"),
        ("\u00e9ch\u043e", b"\x00" * 300, {"tenant": "blue"}, "9335f650f7279b8667be0047e211740b"),
    ],
    ids=["echo", "empty", "non-ascii"],
)
def test_a_fingerprint_is_the_one_earlier_releases_stored(
    kind: str, payload: bytes, attributes: dict[str, str], stored: str
) -> None:
    # Durable stores keep fingerprints across restarts and upgrades: a retry after an upgrade
    # must still match its first call. Asked twice, and after many other kinds, as relay does.
    assert fingerprint(kind, payload, attributes).hex() == stored
    for n in range(200):
        fingerprint(f"kind-{n}", payload, attributes)
    assert fingerprint(kind, payload, attributes).hex() == stored
    assert fingerprint(kind, payload, attributes).hex() == stored


async def test_a_completed_job_is_replayed_and_a_different_request_is_a_mismatch() -> None:
    store = MemoryStore(capacity=10)
    claim = await _claim(store, "j-1")
    await store.complete(claim, JobResult(job_id="j-1", output=b"done"))

    replay = await store.reserve("j-1", FP)
    assert isinstance(replay, Replay)
    assert replay.result.output == b"done"
    with pytest.raises(FingerprintMismatchError):
        await store.reserve("j-1", fingerprint("echo", b"y", {}))


async def test_a_released_claim_leaves_nothing_so_the_job_can_run_again() -> None:
    store = MemoryStore(capacity=10)
    await store.release(await _claim(store, "j-1"))
    assert len(store) == 0
    await _claim(store, "j-1")


async def test_a_duplicate_waits_for_the_first_and_replays_its_result() -> None:
    store = MemoryStore(capacity=10)
    claim = await _claim(store, "j-1")
    waiter = asyncio.create_task(store.reserve("j-1", FP))
    await asyncio.sleep(0)
    assert not waiter.done()
    with pytest.raises(FingerprintMismatchError):
        await store.reserve("j-1", fingerprint("echo", b"other", {}))

    await store.complete(claim, JobResult(job_id="j-1", output=b"first"))
    replay = await asyncio.wait_for(waiter, timeout=1)
    assert isinstance(replay, Replay)
    assert replay.result.output == b"first"


async def test_when_the_first_gives_up_one_waiter_claims_and_a_cancelled_one_harms_no_one() -> None:
    store = MemoryStore(capacity=10)
    claim = await _claim(store, "j-1")
    impatient = asyncio.create_task(store.reserve("j-1", FP))
    patient = [asyncio.create_task(store.reserve("j-1", FP)) for _ in range(2)]
    await asyncio.sleep(0)
    impatient.cancel()
    await store.release(claim)
    done, pending = await asyncio.wait(patient, timeout=1, return_when=asyncio.FIRST_COMPLETED)

    assert impatient.cancelled()
    # Exactly one of them claims; the other goes on waiting, now for that claim.
    (winner,) = done
    (other,) = pending
    second_claim = winner.result()
    assert isinstance(second_claim, Claim)
    await store.complete(second_claim, JobResult(job_id="j-1", output=b"second"))
    replay = await asyncio.wait_for(other, timeout=1)
    assert isinstance(replay, Replay)
    assert replay.result.output == b"second"


async def test_completed_entries_beyond_capacity_are_evicted_least_recently_used_first() -> None:
    store = MemoryStore(capacity=2)
    for job_id in ("a", "b"):
        await store.complete(await _claim(store, job_id), JobResult(job_id=job_id))
    assert isinstance(await store.reserve("a", FP), Replay)  # "a" is now the most recent
    await store.complete(await _claim(store, "c"), JobResult(job_id="c"))

    assert len(store) == 2
    assert isinstance(await store.reserve("a", FP), Replay)
    assert isinstance(await store.reserve("c", FP), Replay)
    assert isinstance(await store.reserve("b", FP), Claim)  # forgotten: runs again
