"""``--store``: the flag's value parsed, and the store it names built (not yet opened).

What each store promises is told in :mod:`relay.stores` and docs/stores.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from bunnyrelay.settings import SettingError
from relay.stores.base import IdempotencyStore
from relay.stores.memory import MemoryStore

SCHEMES = ("memory", "sqlite", "redis")

DEFAULT_SQLITE_FILE = "jobs.sqlite3"
"""The default store's file name, under ``--state-dir``."""


@dataclass(frozen=True, slots=True)
class StoreSpec:
    """A parsed ``--store`` value."""

    scheme: str
    """``memory``, ``sqlite`` or ``redis``."""
    location: str = ""
    """The SQLite path (relative ones are under ``--state-dir``) or the Redis URL."""

    def __str__(self) -> str:
        if self.scheme == "memory":
            return "memory"
        if self.scheme == "sqlite":
            return f"sqlite:{self.location}"
        return self.location


DEFAULT_STORE = StoreSpec("sqlite", DEFAULT_SQLITE_FILE)


def parse_store(text: str) -> StoreSpec:
    """``memory``, ``sqlite:PATH`` or ``redis://HOST:PORT/DB`` (``rediss://`` for TLS)."""
    stripped = text.strip()
    if stripped == "memory":
        return StoreSpec("memory")
    if stripped.startswith("sqlite:"):
        path = stripped.removeprefix("sqlite:")
        if path.startswith("//"):
            # sqlite:///abs/path, as URLs spell it, is accepted too.
            path = path[2:]
        if not path or path.endswith("/"):
            raise SettingError(
                f"{text!r}: expected sqlite:PATH to a file, e.g. sqlite:jobs.sqlite3"
            )
        return StoreSpec("sqlite", path)
    if stripped.startswith(("redis://", "rediss://")):
        from relay.stores.redis import check_url

        return StoreSpec("redis", check_url(stripped))
    raise SettingError(f"{text!r} is not a store: use memory, sqlite:PATH or redis://HOST:PORT/DB")


def sqlite_path(spec: StoreSpec, state_dir: Path) -> Path:
    """Where a ``sqlite:`` store's file is: relative paths are under ``state_dir``."""
    path = Path(spec.location).expanduser()
    return path if path.is_absolute() else state_dir / path


def build_store(
    spec: StoreSpec,
    *,
    state_dir: Path,
    capacity: int,
    retention_s: float,
    instance: str,
    logger: logging.Logger,
) -> IdempotencyStore:
    """The store ``spec`` names, not yet opened (``await store.open()`` does the I/O)."""
    if spec.scheme == "memory":
        return MemoryStore(capacity)
    if spec.scheme == "sqlite":
        from relay.stores.sqlite import SqliteStore

        return SqliteStore(
            sqlite_path(spec, state_dir),
            capacity=capacity,
            retention_s=retention_s,
            instance=instance,
            logger=logger,
        )
    if spec.scheme == "redis":
        from relay.stores.redis import RedisStore

        return RedisStore(
            spec.location,
            capacity=capacity,
            retention_s=retention_s,
            instance=instance,
            logger=logger,
        )
    raise ValueError(f"unknown store scheme {spec.scheme!r}")
