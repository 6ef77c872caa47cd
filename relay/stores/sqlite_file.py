"""The SQLite store's file: its schema, and opening it with a clear error for every way that fails.

Opening takes SQLite's exclusive lock for the life of the process (a second
relay pointed at the same file fails to start), turns on write-ahead logging
with ``synchronous=FULL`` (each commit is fsynced), and creates or checks the
schema.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from relay.errors import StoreError

SCHEMA_VERSION = 1

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


def _hint() -> str:
    return (
        "give --state-dir (RELAY_STATE_DIR) a writable directory that survives restarts, "
        "e.g. a mounted volume, or choose another --store (RELAY_STORE)"
    )


def connect(path: Path) -> sqlite3.Connection:
    """Open (or create) the store's file; raises :class:`StoreError` saying what to fix."""
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


def stale_claims(db: sqlite3.Connection, limit: int) -> tuple[int, list[tuple[str, str]]]:
    """How many claims a process that died left behind, and up to ``limit`` (id, owner)."""
    (count,) = db.execute("SELECT count(*) FROM jobs WHERE result IS NULL").fetchone()
    rows = db.execute(
        "SELECT job_id, owner FROM jobs WHERE result IS NULL ORDER BY claimed_at LIMIT ?",
        (limit,),
    ).fetchall()
    return int(count), [(str(job_id), str(owner)) for job_id, owner in rows]
