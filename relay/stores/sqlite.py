"""The SQLite store (``--store sqlite:PATH``, the default): job ids survive a restart of relay.

Guarantee: across restarts of one relay process (SIGTERM, SIGKILL, OOM kill,
a power loss), a job whose result relay returned is never run again for the
same ``job_id`` and request; its result is replayed. A job that was running
when relay died runs again, once, when it is resubmitted. The file belongs to
one relay process at a time (SQLite's exclusive locking mode: a second relay
pointed at the same file fails to start), so replicas need a file each and do
not share what they ran; share Redis for that (:mod:`relay.stores.redis`).

How a job goes through it:

1. ``reserve``: in memory first (a duplicate of a job running here waits for
   it; a recent result is replayed without touching the disk), then a claim
   row (``owner`` = this process, ``claimed_at``) inserted and committed before
   the job runs; if the id has a row already, that row decides (replay, mismatch
   or takeover). A claim row owned by another process is a stale one (the file
   is this process's alone): it is taken over, counted in ``runs`` and logged as
   ``job.reclaimed``.
2. ``complete``: the result is written into the row and committed before relay
   answers, so a result the client saw is a result the store has.
3. ``release`` (the job did not finish): the claim row is deleted.

Each of these is a step for the group-commit writer
(:mod:`relay.stores.groupcommit`), which commits the steps of concurrent jobs
together. The usual batch (new claims and results of different jobs) is one
multi-row statement committed on its own; anything else (a release, pruning,
two steps about one job) goes step by step in a transaction.

Durability: WAL journal, ``synchronous=FULL`` for every commit that holds a
result, release or prune (fsynced), so a result acknowledged to a client
survives a power loss too; group commit is what makes that affordable. A
commit of claims alone is written into the WAL without an fsync: that survives
the death of relay (a kill -9, an OOM kill), which is what a claim is for; a
power loss may drop it, and the job then runs again on resubmission all the
same, only not logged as reclaimed. Rows older than ``--dedupe-retention``
hours are pruned in the background, a bounded batch at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

from google.protobuf.message import DecodeError

from bunnyrelay.v1.jobs_pb2 import JobResult
from relay.errors import StoreError
from relay.stores.base import (
    DURABLE_CACHE_MAX,
    Claim,
    FingerprintMismatchError,
    IdempotencyStore,
    Replay,
)
from relay.stores.groupcommit import GroupCommitWriter, Step
from relay.stores.memory import LocalClaims, RecentResults
from relay.stores.sqlite_file import connect, stale_claims

MAX_BATCH = 1024
"""Most steps in one transaction: bounds how long one commit holds the others."""

PRUNE_BATCH = 5_000
"""Most rows one prune deletes; the next prune comes sooner when it hit this."""

Clock = Callable[[], float]
"""Unix time now; the rows' times and the retention count by it."""


# --- what the writer thread does ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Claimed:
    runs: int
    previous_owner: str | None
    previous_claimed_at: float | None


@dataclass(frozen=True, slots=True)
class _Done:
    result: bytes


class _Mismatch:
    pass


_MISMATCH = _Mismatch()
_NEW_CLAIM = _Claimed(1, None, None)

_Decision: TypeAlias = _Claimed | _Done | _Mismatch

_INSERT = "INSERT INTO jobs (job_id, fingerprint, result, owner, claimed_at, runs, updated_at) "
# An upsert: the row may have been pruned while a very long job ran.
_SET_RESULT = (
    "ON CONFLICT (job_id) DO UPDATE SET "
    "result = excluded.result, owner = excluded.owner, updated_at = excluded.updated_at"
)

WRITE_ROWS = 1024
"""Most steps :func:`_write_at_once` takes (fewer if SQLite allows fewer parameters)."""


@functools.cache
def _write_sql(rows: int) -> str:
    """New claims and results, ``rows`` of them, in one statement (see :func:`_write_at_once`).

    Parameters: owner, now, then (job_id, fingerprint, result) per row; a claim's
    result is NULL, and a row whose job_id is NULL is padding, skipped. A row
    whose id exists is a conflict: a result updates it, a claim leaves it alone.
    """
    values = ", ".join(f"(?{3 + 3 * n}, ?{4 + 3 * n}, ?{5 + 3 * n})" for n in range(rows))
    return (
        f"{_INSERT}SELECT column1, column2, column3, ?1, ?2, 1, ?2 FROM (VALUES {values}) "
        f"WHERE column1 IS NOT NULL {_SET_RESULT} WHERE excluded.result IS NOT NULL"
    )


class _Step(Step):
    """A step about the ``jobs`` table; ``job_id`` is None for steps that are not about one
    job (pruning)."""

    __slots__ = ("job_id",)

    def __init__(self, job_id: str | None) -> None:
        super().__init__()
        self.job_id = job_id

    def run(self, db: sqlite3.Cursor, owner: str, now: float) -> None:
        """Do this step alone (the writer does claims and results of many jobs at once)."""
        raise NotImplementedError


class ClaimStep(_Step):
    __slots__ = ("fingerprint",)

    def __init__(self, job_id: str, fingerprint: bytes) -> None:
        super().__init__(job_id)
        self.fingerprint = fingerprint

    def run(self, db: sqlite3.Cursor, owner: str, now: float) -> None:
        job_id = self.job_id
        row = db.execute(
            "SELECT fingerprint, result, owner, claimed_at, runs FROM jobs WHERE job_id = ?",
            (job_id,),
        ).fetchone()
        if row is None:
            db.execute(
                f"{_INSERT}VALUES (?, ?, NULL, ?, ?, 1, ?)",
                (job_id, self.fingerprint, owner, now, now),
            )
            self.outcome = _NEW_CLAIM
            return
        stored_fp, result, previous, claimed_at, runs = row
        if stored_fp != self.fingerprint:
            self.outcome = _MISMATCH
        elif result is not None:
            self.outcome = _Done(result)
        elif previous == owner:
            # Ours: left by a job cancelled while its claim was being written, or inserted
            # a moment ago by this batch's one statement (see _write_at_once).
            db.execute(
                "UPDATE jobs SET claimed_at = ?, updated_at = ? WHERE job_id = ?",
                (now, now, job_id),
            )
            self.outcome = _Claimed(runs, None, None)
        else:
            # A claim by another process: the file is this process's alone, so that one died.
            db.execute(
                "UPDATE jobs SET owner = ?, claimed_at = ?, runs = runs + 1, updated_at = ? "
                "WHERE job_id = ?",
                (owner, now, now, job_id),
            )
            self.outcome = _Claimed(runs + 1, previous, claimed_at)


_Committed: TypeAlias = Callable[[Claim, JobResult, bytes], None]


class ResultStep(_Step):
    __slots__ = ("claim", "committed", "fingerprint", "parsed", "result")

    def __init__(
        self,
        claim: Claim,
        parsed: JobResult,
        result: bytes,
        committed: _Committed,
    ) -> None:
        super().__init__(claim.job_id)
        self.claim = claim
        self.fingerprint = claim.fingerprint
        self.parsed = parsed
        self.result = result
        self.committed = committed

    def run(self, db: sqlite3.Cursor, owner: str, now: float) -> None:
        db.execute(
            f"{_INSERT}VALUES (?, ?, ?, ?, ?, 1, ?) {_SET_RESULT}",
            (self.job_id, self.fingerprint, self.result, owner, now, now),
        )

    def settle(self, error: BaseException | None) -> None:
        self.committed(self.claim, self.parsed, self.result)  # even if the caller is gone
        super().settle(error)


class ReleaseStep(_Step):
    __slots__ = ()

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)

    def run(self, db: sqlite3.Cursor, owner: str, now: float) -> None:
        db.execute(
            "DELETE FROM jobs WHERE job_id = ? AND result IS NULL AND owner = ?",
            (self.job_id, owner),
        )


class PruneStep(_Step):
    __slots__ = ("cutoff",)

    def __init__(self, cutoff: float) -> None:
        super().__init__(None)
        self.cutoff = cutoff

    def run(self, db: sqlite3.Cursor, owner: str, now: float) -> None:
        self.outcome = db.execute(
            "DELETE FROM jobs WHERE job_id IN "
            "(SELECT job_id FROM jobs WHERE updated_at < ? ORDER BY updated_at LIMIT ?)",
            (self.cutoff, PRUNE_BATCH),
        ).rowcount


def _write_at_once(
    db: sqlite3.Cursor, batch: list[_Step], owner: str, now: float, most: int
) -> bool:
    """Write the common batch, new claims and results of distinct jobs, in one statement.

    SQLite commits a statement run outside BEGIN on its own (fsynced: synchronous=FULL),
    so the batch costs one statement and one commit. That matters beyond the statement:
    the writer gives the interpreter lock back while SQLite works and must win it back
    from the busy event loop afterwards, once per statement, and a statement per step
    made each batch take several turns of the loop. Rows in one statement are written
    in no particular order, so only a batch of at most ``most`` steps, no two about the
    same job, qualifies; False (nothing written) for any other, to go step by step.

    A claim whose id has a row already (a result evicted from memory, a claim left by a
    dead process) leaves it alone and is not counted; then the batch's claims are
    decided again one by one, in a transaction of their own: one just inserted reads
    as this process's own claim, the others as what they are.
    """
    size = len(batch)
    if size > most or db.connection.in_transaction:  # never inside a transaction left open
        return False
    params: list[Any] = [owner, now]
    ids = set()
    claims: list[_Step] = []
    for step in batch:
        if isinstance(step, ClaimStep):
            params += (step.job_id, step.fingerprint, None)
            claims.append(step)
        elif isinstance(step, ResultStep):
            params += (step.job_id, step.fingerprint, step.result)
        else:
            return False
        ids.add(step.job_id)
    if len(ids) != size:
        return False
    rows = 1 << (size - 1).bit_length()  # a power of two: a few statements to prepare
    params += (None,) * (3 * (rows - size))
    if db.execute(_write_sql(rows), params).rowcount == size:
        for step in claims:
            step.outcome = _NEW_CLAIM
        return True
    db.execute("BEGIN IMMEDIATE")
    for step in claims:
        step.run(db, owner, now)
    db.execute("COMMIT")
    return True


class _Commit:
    """What the writer thread does with a batch: write it, commit once (runs on that thread)."""

    def __init__(self, db: sqlite3.Connection, *, owner: str, clock: Clock) -> None:
        self._db = db
        self._cursor = db.cursor()
        self._owner = owner
        self._clock = clock
        # Rows of three parameters, plus two, within SQLite's limit on parameters.
        fit = (db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) - 2) // 3
        self._write_rows = 1 << (min(WRITE_ROWS, fit).bit_length() - 1)
        self._full = True  # synchronous=FULL, as the file was opened

    def __call__(self, batch: list[_Step]) -> StoreError | None:
        db, owner, now = self._cursor, self._owner, self._clock()
        try:
            self._sync_for(batch)
            if not _write_at_once(db, batch, owner, now, self._write_rows):
                db.execute("BEGIN IMMEDIATE")
                for step in batch:
                    step.run(db, owner, now)
                db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            return StoreError(f"SQLite: {exc}")
        return None

    def _sync_for(self, batch: list[_Step]) -> None:
        """fsync the commit unless the batch holds claims alone.

        A claim must outlive the process (a kill -9 leaves it for the restart to find),
        which a commit written into the WAL does without an fsync; only results must also
        outlive the machine. Set only when it changes: batches of claims and of results
        alternate under load, each kind in runs.
        """
        full = not all(type(step) is ClaimStep for step in batch)
        if full != self._full:
            self._cursor.execute(f"PRAGMA synchronous = {'FULL' if full else 'NORMAL'}")
            self._full = full


# --- the store ------------------------------------------------------------------------------


class SqliteStore(IdempotencyStore):
    """Claims and results in one SQLite file; see the module docstring for the guarantee."""

    def __init__(
        self,
        path: Path,
        *,
        capacity: int,
        retention_s: float,
        instance: str,
        logger: logging.Logger,
        max_batch: int = MAX_BATCH,
        clock: Clock = time.time,
    ) -> None:
        self.path = path
        self.retention_s = retention_s
        # This process's name in claim rows: the instance and a fresh id per start, so a
        # restarted relay with the same pod name still tells its claims from the dead one's.
        self.owner = f"{instance}#{os.getpid()}-{secrets.token_hex(3)}"
        self._log = logger
        self._max_batch = max_batch
        self._clock = clock
        self._claims = LocalClaims()
        self._recent = RecentResults(min(capacity, DURABLE_CACHE_MAX))
        self._writer: GroupCommitWriter[_Step] | None = None
        self._pruner: asyncio.Task[None] | None = None

    @property
    def writer(self) -> GroupCommitWriter[_Step]:
        if self._writer is None:
            raise RuntimeError("the SQLite store is not open")
        return self._writer

    async def open(self) -> None:
        db = await asyncio.to_thread(connect, self.path)
        try:
            count, examples = await asyncio.to_thread(stale_claims, db, 10)
        except sqlite3.Error as exc:
            db.close()
            raise StoreError(f"cannot read the SQLite store {self.path}: {exc}") from None
        if count:
            self._log.warning(
                "%s running when relay last stopped (%s%s); each runs again, "
                "once, when it is resubmitted",
                "1 job was" if count == 1 else f"{count} jobs were",
                ", ".join(f"{job_id} by {owner}" for job_id, owner in examples),
                ", …" if count > len(examples) else "",
                extra={"event": "store.stale_claims", "count": count, "path": str(self.path)},
            )
        self._writer = GroupCommitWriter(
            asyncio.get_running_loop(),
            _Commit(db, owner=self.owner, clock=self._clock),
            name="relay-sqlite",
            max_batch=self._max_batch,
            on_exit=db.close,
        )
        self._writer.start()
        self._pruner = asyncio.get_running_loop().create_task(self._prune_forever())
        self._log.info(
            "idempotency store: SQLite %s (retention %.1f h)",
            self.path,
            self.retention_s / 3600,
            extra={"event": "store.open", "store": "sqlite", "path": str(self.path)},
        )

    async def close(self) -> None:
        if self._pruner is not None:
            self._pruner.cancel()
            await asyncio.gather(self._pruner, return_exceptions=True)
            self._pruner = None
        if self._writer is not None:
            writer, self._writer = self._writer, None
            await writer.stop()

    async def reserve(self, job_id: str, fingerprint: bytes) -> Replay | Claim:
        while True:
            if await self._claims.wait_or_check(job_id, fingerprint):
                continue
            replay = self._recent.replay(job_id, fingerprint)
            if replay is not None:
                return replay
            claim = self._claims.add(job_id, fingerprint, confirmed=False)
            future = self.writer.submit(ClaimStep(job_id, fingerprint))
            try:
                decision: _Decision = await future
            except BaseException:
                # Cancelled, or the store failed: the claim may still reach the disk, so
                # take it back there too (the queue keeps the order).
                self._claims.forget(claim)
                self.writer.send(ReleaseStep(job_id))
                raise
            if isinstance(decision, _Claimed):
                claim.confirmed = True
                if decision.previous_owner is not None:
                    self._log.warning(
                        "job %s was claimed by %s and never finished (that relay stopped); "
                        "running it again (run %d)",
                        job_id,
                        decision.previous_owner,
                        decision.runs,
                        extra={
                            "event": "job.reclaimed",
                            "job_id": job_id,
                            "previous_owner": decision.previous_owner,
                            "runs": decision.runs,
                        },
                    )
                return claim
            self._claims.forget(claim)
            if isinstance(decision, _Mismatch):
                raise FingerprintMismatchError(job_id)
            try:
                result = JobResult.FromString(decision.result)
            except DecodeError:
                raise StoreError(f"the stored result of {job_id!r} does not decode") from None
            self._recent.add(job_id, fingerprint, result, serialized=decision.result)
            return Replay(result)

    async def complete(self, claim: Claim, result: JobResult) -> None:
        # Not shielded: a cancelled caller stops waiting; the write goes on, and so does
        # _result_committed after it.
        await self.writer.submit(
            ResultStep(claim, result, result.SerializeToString(), self._result_committed)
        )

    def _result_committed(self, claim: Claim, result: JobResult, serialized: bytes) -> None:
        # Whoever waits for this id learns the result only now that it is on disk (or the
        # disk failed, and memory is all there is).
        self._recent.add(claim.job_id, claim.fingerprint, result, serialized=serialized)
        self._claims.forget(claim)

    async def release(self, claim: Claim) -> None:
        self._claims.forget(claim)
        if self._writer is not None:
            self._writer.send(ReleaseStep(claim.job_id))

    async def prune(self) -> int:
        """Delete rows older than the retention period, at most PRUNE_BATCH; returns how many."""
        deleted = int(await self.writer.submit(PruneStep(self._clock() - self.retention_s)))
        if deleted:
            self._log.info(
                "pruned %d jobs older than the retention period",
                deleted,
                extra={"event": "store.pruned", "count": deleted},
            )
        return deleted

    async def _prune_forever(self) -> None:
        interval = min(max(self.retention_s / 20, 1.0), 600.0)
        while True:
            deleted = 0
            try:
                deleted = await self.prune()
            except StoreError as exc:
                self._log.error(
                    "pruning the SQLite store failed: %s", exc, extra={"event": "store.error"}
                )
            # A full batch means more is due: go on soon, letting jobs' writes in between.
            await asyncio.sleep(0.1 if deleted >= PRUNE_BATCH else interval)
