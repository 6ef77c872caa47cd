"""The Redis store: replicas share what ran, wait for each other, and take over dead claims."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from bunnyrelay.settings import SettingError
from bunnyrelay.v1.jobs_pb2 import JobResult
from lab.redisserver import RedisServer
from relay.errors import StoreError
from relay.stores.base import Claim, Replay, fingerprint
from relay.stores.redis import CLAIM_LEASE_S, RedisStore, redact, split_lease
from relay.stores.spec import parse_store
from tests.relay.harness import wait_until
from tests.relay.stores.conftest import LOG, MakeStore

FP = fingerprint("echo", b"x", {})


async def _claim(store: RedisStore, job_id: str) -> Claim:
    reservation = await store.reserve(job_id, FP)
    assert isinstance(reservation, Claim)
    return reservation


async def test_a_result_stored_by_one_replica_is_replayed_by_another(
    make_redis: MakeStore,
) -> None:
    relay_a: RedisStore = await make_redis(instance="relay-a")
    relay_b: RedisStore = await make_redis(instance="relay-b")
    await relay_a.complete(await _claim(relay_a, "j-1"), JobResult(job_id="j-1", output=b"a"))

    replay = await relay_b.reserve("j-1", FP)
    assert isinstance(replay, Replay)
    assert replay.result.output == b"a"


async def test_a_duplicate_on_another_replica_waits_for_the_running_job(
    make_redis: MakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    relay_a: RedisStore = await make_redis(instance="relay-a")
    relay_b: RedisStore = await make_redis(instance="relay-b")
    claim = await _claim(relay_a, "j-1")
    told_elsewhere = 0
    call = relay_b._call

    async def noted_call(script: str, keys: list[str], args: list[Any]) -> Any:
        nonlocal told_elsewhere
        answer = await call(script, keys, args)
        if script == "reserve" and int(answer[0]) == 3:  # held by another relay
            told_elsewhere += 1
        return answer

    monkeypatch.setattr(relay_b, "_call", noted_call)
    duplicate = asyncio.create_task(relay_b.reserve("j-1", FP))
    # Once Redis has told it three times that relay-a holds the job, the duplicate must
    # still be waiting: neither running the job nor giving up.
    await wait_until(lambda: told_elsewhere >= 3 or duplicate.done())
    assert not duplicate.done()

    await relay_a.complete(claim, JobResult(job_id="j-1", output=b"once"))
    replay = await asyncio.wait_for(duplicate, timeout=3)
    assert isinstance(replay, Replay)
    assert replay.result.output == b"once"


async def test_a_running_claim_outlives_its_lease_while_its_holder_renews_it(
    make_redis: MakeStore,
) -> None:
    holder: RedisStore = await make_redis(instance="relay-a", lease_s=0.3)
    other: RedisStore = await make_redis(instance="relay-b", lease_s=0.3)
    claim = await _claim(holder, "long")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(other.reserve("long", FP), timeout=1.0)
    await holder.complete(claim, JobResult(job_id="long"))


async def test_a_claim_whose_holder_died_is_taken_over_after_its_lease(
    make_redis: MakeStore, caplog: pytest.LogCaptureFixture
) -> None:
    dead: RedisStore = await make_redis(instance="relay-a", lease_s=0.3)
    survivor: RedisStore = await make_redis(instance="relay-b", lease_s=0.3)
    await _claim(dead, "interrupted")
    await dead.close()  # no release, no renewal: as after SIGKILL

    caplog.set_level(logging.WARNING, logger=LOG.name)
    claim = await asyncio.wait_for(survivor.reserve("interrupted", FP), timeout=3)
    assert isinstance(claim, Claim)
    reclaimed = [r for r in caplog.records if getattr(r, "event", "") == "job.reclaimed"]
    assert [getattr(r, "previous_owner", "") for r in reclaimed] == [dead.owner]


async def test_an_unreachable_redis_fails_at_open_and_a_lost_one_fails_each_job(
    make_redis: MakeStore, redis: RedisServer
) -> None:
    unreachable = RedisStore(
        "redis://127.0.0.1:1/0", capacity=10, retention_s=60, instance="t", logger=LOG
    )
    with pytest.raises(StoreError, match=r"cannot reach the Redis store redis://127\.0\.0\.1:1/0"):
        await unreachable.open()

    store: RedisStore = await make_redis()
    redis.process.kill()
    await redis.process.wait()
    with pytest.raises(StoreError, match="Redis"):
        await store.reserve("j-1", FP)


def test_redis_urls_are_checked_and_passwords_never_shown() -> None:
    assert parse_store("redis://10.0.0.7:6380/2").location == "redis://10.0.0.7:6380/2"
    for bad in ("redis://", "redis://host:port/0", "redis://host:6379/zero"):
        with pytest.raises(SettingError):
            parse_store(bad)
    assert redact("redis://:s3cret@host:6379/0") == "redis://:***@host:6379/0"
    assert redact("redis://app:s3cret@host:6379/0") == "redis://app:***@host:6379/0"
    with pytest.raises(SettingError) as failed:
        parse_store("redis://app:s3cret@host:port/0")
    assert "s3cret" not in str(failed.value)


def test_the_claim_lease_can_be_set_in_the_url_and_is_not_passed_to_redis() -> None:
    assert split_lease("redis://h:6379/0") == ("redis://h:6379/0", CLAIM_LEASE_S)
    assert split_lease("redis://h:6379/0?claim_lease=2.5&ssl_cert_reqs=none") == (
        "redis://h:6379/0?ssl_cert_reqs=none",
        2.5,
    )
    for bad in ("0", "-1", "soon", "99999"):
        with pytest.raises(SettingError, match="claim_lease"):
            parse_store(f"redis://h:6379/0?claim_lease={bad}")
