"""The SQLite store's file: its schema, and opening it with a clear error for every way that fails.

Opening takes SQLite's exclusive lock for the life of the process (a second
relay pointed at the same file fails to start), turns on write-ahead logging
with ``synchronous=FULL`` (each commit is fsynced; the store relaxes it for a
commit of claims alone), and creates or checks the schema.
"""

from __future__ import annotations

import errno
import os
import pwd
import sqlite3
import stat
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


def _user() -> str:
    """Who relay runs as, as a person checking a volume's owner needs to read it."""
    uid, gid = os.geteuid(), os.getegid()
    try:
        name = f" ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        name = ""  # a uid with no passwd entry, as in relay's image
    return f"uid {uid}{name}, gid {gid}"


def _unusable(path: Path, problem: str) -> StoreError:
    """The one message for every way the store's file cannot be opened: what, who, and the fix."""
    uid, gid = os.geteuid(), os.getegid()
    return StoreError(
        f"cannot open the SQLite store {path}: {problem}. relay runs as {_user()}. "
        "Give --state-dir (RELAY_STATE_DIR) a directory that this user can write and that "
        f"survives restarts: in Kubernetes a volume with the pod's securityContext fsGroup: "
        f"{gid}, elsewhere a volume owned by uid {uid}; or run with --store memory "
        "(nothing is remembered across restarts)"
    )


def _os_problem(exc: OSError, what: Path) -> str:
    number = exc.errno
    if number in (errno.EACCES, errno.EPERM):
        return f"permission denied on {what}"
    if number == errno.EROFS:
        return f"{what} is on a read-only filesystem"
    if number in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the device holding {what}"
    if number in (errno.ENOTDIR, errno.EEXIST):
        return f"a part of {what} is a file, not a directory"
    return f"{what}: {exc.strerror or exc}"


def _check_access(path: Path) -> None:
    """Look with the operating system's own checks first: they say which file and why,
    where SQLite says only "unable to open database file"."""
    directory = path.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unusable(
            path, f"cannot create its directory: {_os_problem(exc, directory)}"
        ) from None
    try:
        found = path.stat()
    except FileNotFoundError:
        found = None
    except PermissionError:
        closed = next((p for p in reversed(path.parents) if not os.access(p, os.X_OK)), directory)
        raise _unusable(path, f"permission denied: this user cannot enter {closed}") from None
    except OSError as exc:
        raise _unusable(path, _os_problem(exc, path)) from None
    if found is not None and stat.S_ISDIR(found.st_mode):
        raise _unusable(path, "it is a directory, not a file")
    if found is not None and not stat.S_ISREG(found.st_mode):
        raise _unusable(path, "it is not a regular file")
    # SQLite writes its journal (-wal, -shm) beside the file, so the directory must be
    # writable even when the file exists. access() also says EROFS for a read-only mount.
    if not os.access(directory, os.W_OK | os.X_OK):
        if _read_only(directory):
            raise _unusable(path, f"{directory} is on a read-only filesystem")
        raise _unusable(path, f"this user cannot create files in {directory}")
    if found is not None and not os.access(path, os.R_OK | os.W_OK):
        raise _unusable(
            path,
            f"this user cannot read and write it (owner uid {found.st_uid}, "
            f"mode {stat.S_IMODE(found.st_mode):04o})",
        )


def _read_only(directory: Path) -> bool:
    try:
        return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError:
        return False


_SQLITE_PROBLEMS = {
    "SQLITE_FULL": "the disk is full",
    "SQLITE_READONLY": "it cannot be written (a read-only file, directory or filesystem)",
    "SQLITE_CANTOPEN": "SQLite cannot open or create it",
    "SQLITE_NOTADB": "it is not an SQLite database (move it away, or point --store elsewhere)",
    "SQLITE_CORRUPT": "the file is damaged (move it away: its jobs would run again)",
    "SQLITE_IOERR": "reading or writing it failed (an I/O error)",
}


def _sqlite_problem(exc: sqlite3.Error) -> str:
    name = getattr(exc, "sqlite_errorname", "")
    for prefix, problem in _SQLITE_PROBLEMS.items():
        if name.startswith(prefix):
            return f"{problem}; SQLite says: {exc}"
    return f"SQLite says: {exc}"


def connect(path: Path) -> sqlite3.Connection:
    """Open (or create) the store's file; raises :class:`StoreError` saying what to fix."""
    _check_access(path)
    try:
        # Autocommit mode: the writer says BEGIN and COMMIT itself. Used from the writer
        # thread after this one opened it, never from two threads at once.
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=0)
    except sqlite3.Error as exc:
        raise _unusable(path, _sqlite_problem(exc)) from None
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
    except sqlite3.Error as exc:
        db.close()
        name = getattr(exc, "sqlite_errorname", "")
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
            raise StoreError(
                f"the SQLite store {path} is in use by another relay process; each relay "
                "needs its own file (share --store redis://… between replicas)"
            ) from None
        raise _unusable(path, _sqlite_problem(exc)) from None
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
