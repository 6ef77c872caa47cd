"""The SQLite store: what survives a restart, stale claims, one process per file, group commit."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import pytest

from bunnyrelay.v1.jobs_pb2 import JobResult
from relay.errors import StoreError
from relay.stores import sqlite as sqlite_store
from relay.stores import sqlite_file
from relay.stores.base import Claim, FingerprintMismatchError, Replay, fingerprint
from relay.stores.sqlite import ClaimStep, ResultStep, SqliteStore
from tests.relay.stores.conftest import LOG, MakeStore

FP = fingerprint("echo", b"x", {})


async def _claim(store: SqliteStore, job_id: str) -> Claim:
    reservation = await store.reserve(job_id, FP)
    assert isinstance(reservation, Claim)
    return reservation


def _rows(path: Path) -> dict[str, tuple[bool, str, int]]:
    """job_id: (done, owner, runs), read with a connection of its own (the store is closed)."""
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT job_id, result IS NOT NULL, owner, runs FROM jobs").fetchall()
    return {job_id: (bool(done), owner, runs) for job_id, done, owner, runs in rows}


async def test_results_survive_closing_and_reopening_the_file(
    make_sqlite: MakeStore, sqlite_path: Path
) -> None:
    first: SqliteStore = await make_sqlite()
    claim = await _claim(first, "j-1")
    await first.complete(claim, JobResult(job_id="j-1", output=b"kept"))
    await first.close()

    second: SqliteStore = await make_sqlite()
    replay = await second.reserve("j-1", FP)
    assert isinstance(replay, Replay)
    assert replay.result.output == b"kept"


async def test_results_evicted_from_memory_are_read_back_from_the_file(
    make_sqlite: MakeStore,
) -> None:
    store: SqliteStore = await make_sqlite(capacity=1)
    for job_id in ("a", "b"):
        await store.complete(await _claim(store, job_id), JobResult(job_id=job_id, output=b"x"))
    replay = await store.reserve("a", FP)  # "a" left memory when "b" came in
    assert isinstance(replay, Replay)
    assert replay.result.job_id == "a"


async def test_a_claim_is_on_disk_before_the_job_runs(
    make_sqlite: MakeStore, sqlite_path: Path
) -> None:
    store: SqliteStore = await make_sqlite()
    await _claim(store, "running")
    await store.close()  # as if relay died here: the claim was never completed nor released

    assert _rows(sqlite_path)["running"] == (False, store.owner, 1)


async def test_a_claim_left_by_a_dead_process_is_taken_over_once_and_logged(
    make_sqlite: MakeStore, sqlite_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dead: SqliteStore = await make_sqlite(instance="relay-0")
    await _claim(dead, "interrupted")
    await dead.close()

    caplog.set_level(logging.INFO, logger=LOG.name)
    restarted: SqliteStore = await make_sqlite(instance="relay-0")
    assert "1 job was running when relay last stopped" in caplog.text
    claim = await _claim(restarted, "interrupted")
    reclaimed = [r for r in caplog.records if getattr(r, "event", "") == "job.reclaimed"]
    assert [(getattr(r, "previous_owner", ""), getattr(r, "runs", 0)) for r in reclaimed] == [
        (dead.owner, 2)
    ]
    await restarted.complete(claim, JobResult(job_id="interrupted", output=b"ran twice"))
    await restarted.close()

    assert _rows(sqlite_path)["interrupted"] == (True, restarted.owner, 2)


async def test_a_second_relay_on_the_same_file_fails_to_open_it(make_sqlite: MakeStore) -> None:
    await make_sqlite()
    with pytest.raises(StoreError, match="in use by another relay process"):
        await make_sqlite()


@pytest.mark.parametrize(
    "where",
    ["under-a-file", "proc"],
    ids=["parent-is-a-file", "read-only-filesystem"],
)
async def test_an_unusable_path_is_a_clear_error_naming_it_and_the_flag(
    tmp_path: Path, where: str
) -> None:
    if where == "under-a-file":
        (tmp_path / "plain-file").write_text("not a directory")
        path = tmp_path / "plain-file" / "jobs.sqlite3"
    else:
        path = Path("/proc/relay-state/jobs.sqlite3")  # not writable, even for root
    store = SqliteStore(path, capacity=10, retention_s=60, instance="t", logger=LOG)
    with pytest.raises(StoreError) as failed:
        await store.open()
    assert str(path.parent) in str(failed.value)
    assert "--state-dir" in str(failed.value)


class FakeClock:
    """Unix time that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_rows_older_than_the_retention_are_pruned(make_sqlite: MakeStore) -> None:
    clock = FakeClock()
    store: SqliteStore = await make_sqlite(retention_s=60, capacity=1, clock=clock)
    await store.complete(await _claim(store, "old"), JobResult(job_id="old"))
    clock.now += 61
    await store.complete(await _claim(store, "new"), JobResult(job_id="new"))

    assert await store.prune() == 1
    assert isinstance(await store.reserve("old", FP), Claim)  # forgotten: would run again
    assert isinstance(await store.reserve("new", FP), Replay)


async def test_concurrent_jobs_share_commits(make_sqlite: MakeStore) -> None:
    store: SqliteStore = await make_sqlite(capacity=1000)
    claims = await asyncio.gather(*(_claim(store, f"j-{n}") for n in range(300)))
    await asyncio.gather(*(store.complete(c, JobResult(job_id=c.job_id)) for c in claims))

    writer = store.writer
    assert writer.steps >= 600
    # Group commit: far fewer transactions than steps (one per step would be 600).
    assert writer.commits < writer.steps / 4, (writer.commits, writer.steps)


async def test_claims_written_together_that_meet_rows_on_disk_are_each_decided_by_their_row(
    make_sqlite: MakeStore, sqlite_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dead: SqliteStore = await make_sqlite(instance="relay-0")
    await dead.complete(await _claim(dead, "done"), JobResult(job_id="done", output=b"kept"))
    await _claim(dead, "interrupted")
    await dead.close()

    caplog.set_level(logging.INFO, logger=LOG.name)
    restarted: SqliteStore = await make_sqlite(instance="relay-0")
    await restarted.prune()  # the pruning that open started is out of the way
    commits = restarted.writer.commits
    # One pass of the event loop: the four claims reach the writer as one batch.
    new, done, interrupted, mismatch = await asyncio.gather(
        restarted.reserve("new", FP),
        restarted.reserve("done", FP),
        restarted.reserve("interrupted", FP),
        restarted.reserve("other-request", FP),
        return_exceptions=True,
    )
    assert restarted.writer.commits == commits + 1

    assert isinstance(new, Claim)
    assert isinstance(done, Replay)
    assert done.result.output == b"kept"
    assert isinstance(interrupted, Claim)
    assert isinstance(mismatch, Claim)  # a new id too
    reclaimed = [r for r in caplog.records if getattr(r, "event", "") == "job.reclaimed"]
    assert [getattr(r, "job_id", "") for r in reclaimed] == ["interrupted"]
    await restarted.close()

    rows = _rows(sqlite_path)
    assert rows["new"] == (False, restarted.owner, 1)
    assert rows["interrupted"] == (False, restarted.owner, 2)
    assert rows["done"] == (True, dead.owner, 1)


async def test_a_claim_written_together_with_a_row_of_another_request_is_a_mismatch(
    make_sqlite: MakeStore,
) -> None:
    first: SqliteStore = await make_sqlite()
    await first.complete(await _claim(first, "j-1"), JobResult(job_id="j-1"))
    await first.close()

    second: SqliteStore = await make_sqlite()
    await second.prune()  # the pruning that open started is out of the way
    other = fingerprint("echo", b"something else", {})
    new, mismatch = await asyncio.gather(
        second.reserve("j-2", FP), second.reserve("j-1", other), return_exceptions=True
    )
    assert isinstance(new, Claim)
    assert isinstance(mismatch, FingerprintMismatchError)


async def test_steps_about_one_job_in_one_batch_keep_their_order(make_sqlite: MakeStore) -> None:
    store: SqliteStore = await make_sqlite()
    await store.prune()  # the pruning that open started is out of the way
    writer = store.writer
    claim = Claim("j-1", FP)
    committed: list[str] = []
    # Submitted in one pass of the event loop, so they are committed as one batch.
    first = writer.submit(ClaimStep("j-1", FP))
    result = writer.submit(
        ResultStep(
            claim, JobResult(job_id="j-1"), b"stored", lambda c, r, b: committed.append(c.job_id)
        )
    )
    again = writer.submit(ClaimStep("j-1", FP))
    commits = writer.commits

    await asyncio.gather(first, result, again)
    assert writer.commits == commits + 1
    assert first.result().runs == 1
    assert again.result().result == b"stored"  # the result came first: a replay
    assert committed == ["j-1"]


async def test_an_empty_result_is_kept_and_replayed_after_a_restart(
    make_sqlite: MakeStore,
) -> None:
    first: SqliteStore = await make_sqlite()
    await first.complete(await _claim(first, "empty"), JobResult())
    await first.close()

    second: SqliteStore = await make_sqlite()
    replay = await second.reserve("empty", FP)
    assert isinstance(replay, Replay)
    assert replay.result == JobResult()


async def test_a_result_is_committed_with_fsync_and_claims_alone_without(
    make_sqlite: MakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    statements: list[str] = []

    def traced_connect(path: Path) -> sqlite3.Connection:
        db = sqlite_file.connect(path)
        db.set_trace_callback(statements.append)
        return db

    monkeypatch.setattr(sqlite_store, "connect", traced_connect)
    store: SqliteStore = await make_sqlite()
    await store.prune()  # after the one at open, so that the claim has a batch of its own
    claim = await _claim(store, "j-1")
    await store.complete(claim, JobResult(job_id="j-1", output=b"kept"))
    await store.close()

    synchronous = "FULL"  # as the file is opened
    in_force: list[str] = []  # at each write of the jobs table: the claim's, then the result's
    for statement in statements:
        if statement.startswith("PRAGMA synchronous"):
            synchronous = statement.rsplit(" ", 1)[-1]
        elif statement.startswith("INSERT INTO jobs"):
            in_force.append(synchronous)
    assert in_force == ["NORMAL", "FULL"]
