"""Stores for the tests: ``make_store(kind)`` opens one and closes it after the test."""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from lab.redisserver import INSTALL_HINT, RedisServer, redis_server
from relay.stores.base import IdempotencyStore
from relay.stores.memory import MemoryStore
from relay.stores.redis import RedisStore
from relay.stores.sqlite import SqliteStore

LOG = logging.getLogger("tests.stores")

MakeStore = Callable[..., Any]


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "jobs.sqlite3"


@pytest.fixture
async def make_sqlite(sqlite_path: Path) -> AsyncIterator[MakeStore]:
    """``await make_sqlite(**overrides)``: an open SqliteStore on ``sqlite_path``."""
    opened: list[SqliteStore] = []

    async def make(**overrides: Any) -> SqliteStore:
        values: dict[str, Any] = {
            "capacity": 100,
            "retention_s": 3600.0,
            "instance": "relay-test",
            "logger": LOG,
        }
        values.update(overrides)
        path = values.pop("path", sqlite_path)
        store = SqliteStore(path, **values)
        await store.open()
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


@pytest.fixture
async def make_redis(redis: RedisServer) -> AsyncIterator[MakeStore]:
    """``await make_redis(**overrides)``: an open RedisStore on the test's redis-server."""
    opened: list[RedisStore] = []

    async def make(**overrides: Any) -> RedisStore:
        values: dict[str, Any] = {
            "capacity": 100,
            "retention_s": 3600.0,
            "instance": "relay-test",
            "logger": LOG,
        }
        values.update(overrides)
        store = RedisStore(values.pop("url", redis.url), **values)
        await store.open()
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[IdempotencyStore]:
    """Each store in turn, for the promises they all keep (redis-server only for Redis)."""
    async with contextlib.AsyncExitStack() as stack:
        opened: IdempotencyStore
        if request.param == "memory":
            opened = MemoryStore(100)
        elif request.param == "sqlite":
            opened = SqliteStore(
                tmp_path / "jobs.sqlite3",
                capacity=100,
                retention_s=3600.0,
                instance="relay-test",
                logger=LOG,
            )
        else:
            if shutil.which("redis-server") is None:
                pytest.fail(INSTALL_HINT)
            (tmp_path / "redis").mkdir()
            server = await stack.enter_async_context(redis_server(tmp_path / "redis"))
            opened = RedisStore(
                server.url, capacity=100, retention_s=3600.0, instance="relay-test", logger=LOG
            )
        await opened.open()
        stack.push_async_callback(opened.close)
        yield opened
