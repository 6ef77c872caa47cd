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
   it; a recent result is replayed without touching the disk), then one row
   read and, if the id is new, a claim row (``owner`` = this process, ``claimed_at``),
   committed before the job runs. A claim row owned by another process is a
   stale one (the file is this process's alone): it is taken over, counted in
   ``runs`` and logged as ``job.reclaimed``.
2. ``complete``: the result is written into the row and committed before relay
   answers, so a result the client saw is a result the store has.
3. ``release`` (the job did not finish): the claim row is deleted.

Group commit: one writer thread owns the connection. Each step above is put on
a queue; the thread takes everything queued, runs it in one transaction and
commits once, then settles the waiting futures on the event loop with one
wake-up. While one commit is being synced to disk, the next batch gathers, so
concurrent jobs share their fsyncs and the event loop never waits on the disk.
When the last batch held more than one step (other jobs are in flight), the
next one waits up to ``GATHER_S`` (1 ms), or until it is as large as the last,
before it commits: through relay, steps trickle in as the event loop reaches
each job, and fewer, larger commits leave the loop more of the interpreter
(docs/stores.md has the numbers). A lone job never waits.

Durability: WAL journal, ``synchronous=FULL`` (each commit is fsynced), so a
result acknowledged to a client survives a power loss too; group commit is
what makes that affordable. Rows older than ``--dedupe-retention`` hours are
pruned in the background, a bounded batch at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

from google.protobuf.message import DecodeError

from bunnyrelay.v1.jobs_pb2 import JobResult
from relay.dedupe import (
    Claim,
    FingerprintMismatchError,
    IdempotencyStore,
    LocalClaims,
    RecentResults,
    Replay,
    StoreError,
)

SCHEMA_VERSION = 1

MAX_BATCH = 1024
"""Most steps in one transaction: bounds how long one commit holds the others."""

GATHER_S = 0.001
"""Under load, how long a batch waits for more steps before it commits (see :class:`_Writer`)."""

PRUNE_BATCH = 5_000
"""Most rows one prune deletes; the next prune comes sooner when it hit this."""

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS jobs (
    job_id      TEXT PRIMARY KEY,
    fingerprint BLOB NOT NULL,
    result      BLOB,              -- a serialized JobResult; NULL while the job is claimed
    owner       TEXT NOT NULL,     -- the relay process that claimed (then completed) it
    claimed_at  REAL NOT NULL,     -- Unix time of the latest claim
    runs        INTEGER NOT NULL,  -- claims so far: more than 1 means a crash interrupted it
    updated_at  REAL NOT NULL      -- Unix time of the latest write; retention counts from it
)""",
    "CREATE INDEX IF NOT EXISTS jobs_by_age ON jobs (updated_at)",
)


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

_Decision: TypeAlias = _Claimed | _Done | _Mismatch
_Step: TypeAlias = Callable[[sqlite3.Connection], Any]


def _claim_step(job_id: str, fingerprint: bytes, owner: str) -> _Step:
    def step(db: sqlite3.Connection) -> _Decision:
        now = time.time()
        row = db.execute(
            "SELECT fingerprint, result, owner, claimed_at, runs FROM jobs WHERE job_id = ?",
            (job_id,),
        ).fetchone()
        if row is None:
            db.execute(
                "INSERT INTO jobs (job_id, fingerprint, result, owner, claimed_at, runs, "
                "updated_at) VALUES (?, ?, NULL, ?, ?, 1, ?)",
                (job_id, fingerprint, owner, now, now),
            )
            return _Claimed(1, None, None)
        stored_fp, result, previous, claimed_at, runs = row
        if stored_fp != fingerprint:
            return _MISMATCH
        if result is not None:
            return _Done(result)
        if previous == owner:
            # Ours, left by a job cancelled while its claim was being written.
            db.execute(
                "UPDATE jobs SET claimed_at = ?, updated_at = ? WHERE job_id = ?",
                (now, now, job_id),
            )
            return _Claimed(runs, None, None)
        # A claim by another process: the file is this process's alone, so that one died.
        db.execute(
            "UPDATE jobs SET owner = ?, claimed_at = ?, runs = runs + 1, updated_at = ? "
            "WHERE job_id = ?",
            (owner, now, now, job_id),
        )
        return _Claimed(runs + 1, previous, claimed_at)

    return step


def _complete_step(job_id: str, fingerprint: bytes, owner: str, result: bytes) -> _Step:
    def step(db: sqlite3.Connection) -> None:
        now = time.time()
        # An upsert: the row may have been pruned while a very long job ran.
        db.execute(
            "INSERT INTO jobs (job_id, fingerprint, result, owner, claimed_at, runs, updated_at) "
            "VALUES (?, ?, ?, ?, ?, 1, ?) ON CONFLICT (job_id) DO UPDATE SET "
            "result = excluded.result, owner = excluded.owner, updated_at = excluded.updated_at",
            (job_id, fingerprint, result, owner, now, now),
        )

    return step


def _release_step(job_id: str, owner: str) -> _Step:
    def step(db: sqlite3.Connection) -> None:
        db.execute(
            "DELETE FROM jobs WHERE job_id = ? AND result IS NULL AND owner = ?", (job_id, owner)
        )

    return step


def _prune_step(cutoff: float) -> _Step:
    def step(db: sqlite3.Connection) -> int:
        cursor = db.execute(
            "DELETE FROM jobs WHERE job_id IN "
            "(SELECT job_id FROM jobs WHERE updated_at < ? ORDER BY updated_at LIMIT ?)",
            (cutoff, PRUNE_BATCH),
        )
        return cursor.rowcount

    return step


_Future: TypeAlias = "asyncio.Future[Any] | None"


class _Writer:
    """The thread that owns the connection and commits queued steps in groups."""

    def __init__(
        self,
        db: sqlite3.Connection,
        loop: asyncio.AbstractEventLoop,
        *,
        max_batch: int,
        gather_s: float = GATHER_S,
    ) -> None:
        self._db = db
        self._loop = loop
        self._max_batch = max_batch
        self._gather_s = gather_s if max_batch > 1 else 0.0
        self._queue: queue.SimpleQueue[tuple[_Step, _Future] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="relay-sqlite", daemon=True)
        self.commits = 0
        """Transactions committed (for tests and benchmarks)."""
        self.steps = 0

    def start(self) -> None:
        self._thread.start()

    def submit(self, step: _Step, *, wait: bool = True) -> asyncio.Future[Any] | None:
        future = self._loop.create_future() if wait else None
        self._queue.put((step, future))
        return future

    async def stop(self) -> None:
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join)

    def _run(self) -> None:
        last = 1
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                batch = [item]
                stopping = False
                # Only when the last batch had company: a lone job must not wait for none.
                # Stop early once as many steps as last time are here: the rest are not coming.
                until = time.monotonic() + self._gather_s if last > 1 else 0.0
                while len(batch) < self._max_batch:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        remaining = until - time.monotonic()
                        if remaining <= 0 or len(batch) >= last:
                            break
                        try:
                            more = self._queue.get(timeout=remaining)
                        except queue.Empty:
                            break
                    if more is None:
                        stopping = True
                        break
                    batch.append(more)
                last = len(batch)
                self._commit(batch)
                if stopping:
                    return
        finally:
            self._db.close()

    def _commit(self, batch: list[tuple[_Step, _Future]]) -> None:
        outcomes: list[Any] = []
        error: StoreError | None = None
        try:
            self._db.execute("BEGIN IMMEDIATE")
            for step, _ in batch:
                outcomes.append(step(self._db))
            self._db.execute("COMMIT")
            self.commits += 1
            self.steps += len(batch)
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            error = StoreError(f"SQLite: {exc}")
        futures = [future for _, future in batch]
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            self._loop.call_soon_threadsafe(_settle, futures, outcomes, error)


def _settle(futures: list[_Future], outcomes: list[Any], error: StoreError | None) -> None:
    for index, future in enumerate(futures):
        if future is None or future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(outcomes[index])


# --- opening ------------------------------------------------------------------------------


def _hint() -> str:
    return (
        "give --state-dir (RELAY_STATE_DIR) a writable directory that survives restarts, "
        "e.g. a mounted volume, or choose another --store (RELAY_STORE)"
    )


def _connect(path: Path) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(
            f"cannot create the directory for the SQLite store {path}: "
            f"{exc.strerror or exc}; {_hint()}"
        ) from None
    if path.exists() and not path.is_file():
        raise StoreError(f"the SQLite store {path} exists but is not a file; {_hint()}")
    try:
        # Autocommit mode: the writer says BEGIN and COMMIT itself. Used from the writer
        # thread after this one opened it, never from two threads at once.
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=0)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the SQLite store {path}: {exc}; {_hint()}") from None
    try:
        # Set before WAL, so that the WAL index lives in this process's memory and the
        # first write takes a lock that no other process gets until this one exits.
        db.execute("PRAGMA locking_mode = EXCLUSIVE")
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(
                f"the SQLite store {path} cannot use write-ahead logging here "
                f"(journal mode {mode}); put it on a local filesystem"
            )
        db.execute("PRAGMA synchronous = FULL")
        # A write transaction even when the schema exists: it takes the exclusive lock now.
        db.execute("BEGIN IMMEDIATE")
        for statement in _SCHEMA:
            db.execute(statement)
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
        if version not in (0, SCHEMA_VERSION):
            raise StoreError(
                f"the SQLite store {path} has schema version {version}; this relay knows "
                f"version {SCHEMA_VERSION}"
            )
    except sqlite3.OperationalError as exc:
        db.close()
        if "locked" in str(exc) or "busy" in str(exc):
            raise StoreError(
                f"the SQLite store {path} is in use by another relay process; each relay "
                "needs its own file (share --store redis://… between replicas)"
            ) from None
        raise StoreError(f"cannot use the SQLite store {path}: {exc}; {_hint()}") from None
    except sqlite3.Error as exc:
        db.close()
        raise StoreError(f"cannot use the SQLite store {path}: {exc}; {_hint()}") from None
    except StoreError:
        db.close()
        raise
    return db


def _stale_claims(db: sqlite3.Connection, limit: int) -> tuple[int, list[tuple[str, str]]]:
    (count,) = db.execute("SELECT count(*) FROM jobs WHERE result IS NULL").fetchone()
    rows = db.execute(
        "SELECT job_id, owner FROM jobs WHERE result IS NULL ORDER BY claimed_at LIMIT ?",
        (limit,),
    ).fetchall()
    return int(count), [(str(job_id), str(owner)) for job_id, owner in rows]


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
    ) -> None:
        self.path = path
        self.retention_s = retention_s
        # This process's name in claim rows: the instance and a fresh id per start, so a
        # restarted relay with the same pod name still tells its claims from the dead one's.
        self.owner = f"{instance}#{os.getpid()}-{secrets.token_hex(3)}"
        self._log = logger
        self._max_batch = max_batch
        self._claims = LocalClaims()
        self._recent = RecentResults(capacity)
        self._writer: _Writer | None = None
        self._pruner: asyncio.Task[None] | None = None

    @property
    def writer(self) -> _Writer:
        if self._writer is None:
            raise RuntimeError("the SQLite store is not open")
        return self._writer

    async def open(self) -> None:
        db = await asyncio.to_thread(_connect, self.path)
        try:
            count, examples = await asyncio.to_thread(_stale_claims, db, 10)
        except sqlite3.Error as exc:
            db.close()
            raise StoreError(f"cannot read the SQLite store {self.path}: {exc}") from None
        if count:
            self._log.warning(
                "%d jobs were running when relay last stopped (%s%s); each runs again, "
                "once, when it is resubmitted",
                count,
                ", ".join(f"{job_id} by {owner}" for job_id, owner in examples),
                ", …" if count > len(examples) else "",
                extra={"event": "store.stale_claims", "count": count, "path": str(self.path)},
            )
        self._writer = _Writer(db, asyncio.get_running_loop(), max_batch=self._max_batch)
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
            step = _claim_step(job_id, fingerprint, self.owner)
            future = self.writer.submit(step)
            assert future is not None
            try:
                decision: _Decision = await asyncio.shield(future)
            except BaseException:
                # Cancelled, or the store failed: the claim may still reach the disk, so
                # take it back there too (the queue keeps the order).
                self._claims.forget(claim)
                self.writer.submit(_release_step(job_id, self.owner), wait=False)
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
        serialized = result.SerializeToString()
        step = _complete_step(claim.job_id, claim.fingerprint, self.owner, serialized)
        future = self.writer.submit(step)
        assert future is not None

        def settled(done: asyncio.Future[Any]) -> None:
            # Whoever waits for this id learns the result only once it is on disk (or the
            # disk failed, and memory is all there is); runs even if the caller is cancelled.
            if not done.cancelled():
                done.exception()
            self._recent.add(claim.job_id, claim.fingerprint, result, serialized=serialized)
            self._claims.forget(claim)

        future.add_done_callback(settled)
        await asyncio.shield(future)

    async def release(self, claim: Claim) -> None:
        self._claims.forget(claim)
        if self._writer is not None:
            self._writer.submit(_release_step(claim.job_id, self.owner), wait=False)

    async def prune(self) -> int:
        """Delete rows older than the retention period, at most PRUNE_BATCH; returns how many."""
        future = self.writer.submit(_prune_step(time.time() - self.retention_s))
        assert future is not None
        deleted = int(await future)
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
