"""What every store promises: replay, conflicts, waiting duplicates, released claims."""

from __future__ import annotations

import asyncio

import pytest

from bunnyrelay.v1.jobs_pb2 import JobResult
from relay.stores.base import Claim, FingerprintMismatchError, IdempotencyStore, Replay, fingerprint

FP = fingerprint("echo", b"x", {})
OTHER = fingerprint("echo", b"y", {})


async def _claim(store: IdempotencyStore, job_id: str, fp: bytes = FP) -> Claim:
    reservation = await store.reserve(job_id, fp)
    assert isinstance(reservation, Claim)
    return reservation


async def test_a_completed_job_is_replayed_and_another_request_with_its_id_is_a_mismatch(
    store: IdempotencyStore,
) -> None:
    claim = await _claim(store, "j-1")
    await store.complete(claim, JobResult(job_id="j-1", output=b"done"))

    replay = await store.reserve("j-1", FP)
    assert isinstance(replay, Replay)
    assert replay.result.output == b"done"
    with pytest.raises(FingerprintMismatchError):
        await store.reserve("j-1", OTHER)


async def test_a_running_job_id_with_another_request_is_a_mismatch_at_once(
    store: IdempotencyStore,
) -> None:
    await _claim(store, "j-1")
    with pytest.raises(FingerprintMismatchError):
        await asyncio.wait_for(store.reserve("j-1", OTHER), timeout=2)


async def test_a_released_claim_leaves_nothing_so_the_job_can_run_again(
    store: IdempotencyStore,
) -> None:
    await store.release(await _claim(store, "j-1"))
    claim = await asyncio.wait_for(store.reserve("j-1", FP), timeout=2)
    assert isinstance(claim, Claim)


async def test_a_duplicate_waits_for_the_first_and_replays_its_result(
    store: IdempotencyStore,
) -> None:
    claim = await _claim(store, "j-1")
    waiter = asyncio.create_task(store.reserve("j-1", FP))
    await asyncio.sleep(0)  # one pass of the loop: the duplicate runs until it waits
    assert not waiter.done()

    await store.complete(claim, JobResult(job_id="j-1", output=b"first"))
    replay = await asyncio.wait_for(waiter, timeout=2)
    assert isinstance(replay, Replay)
    assert replay.result.output == b"first"


async def test_a_reserve_cancelled_midway_leaves_no_claim_behind(store: IdempotencyStore) -> None:
    pending = asyncio.create_task(store.reserve("j-1", FP))
    await asyncio.sleep(0)
    pending.cancel()
    await asyncio.gather(pending, return_exceptions=True)
    if not pending.cancelled():
        # It won the race and claimed before the cancellation landed: give it back.
        claim = pending.result()
        assert isinstance(claim, Claim)
        await store.release(claim)

    claim = await asyncio.wait_for(store.reserve("j-1", FP), timeout=2)
    assert isinstance(claim, Claim)


async def test_many_jobs_at_once_each_run_once_and_replay_after(store: IdempotencyStore) -> None:
    ids = [f"j-{n}" for n in range(80)]
    claims = await asyncio.gather(*(store.reserve(job_id, FP) for job_id in ids))
    assert all(isinstance(claim, Claim) for claim in claims)
    await asyncio.gather(
        *(
            store.complete(claim, JobResult(job_id=claim.job_id, output=claim.job_id.encode()))
            for claim in claims
            if isinstance(claim, Claim)
        )
    )
    replays = await asyncio.gather(*(store.reserve(job_id, FP) for job_id in ids))
    assert [r.result.output for r in replays if isinstance(r, Replay)] == [i.encode() for i in ids]
