"""A real ``redis-server`` for the tests and the lab: loopback, a free port, nothing saved.

Debian's ``redis-server`` package provides the binary (``make services``
installs it). Each server runs in its own directory with persistence off
(``--save ''``, no AOF), listens on 127.0.0.1 only, and is killed by its PID
when the ``async with`` block ends, even when the block failed::

    async with redis_server(tmp_path) as redis:
        print(redis.url)  # redis://127.0.0.1:<port>/0
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = (
    "redis-server is not installed: `make test` installs it (its `services` target runs "
    "apt-get install -y redis-server), or install Debian's redis-server package yourself"
)


class RedisServerMissing(RuntimeError):  # noqa: N818 - reads as what is wrong
    """No ``redis-server`` binary on PATH."""


@dataclass
class RedisServer:
    process: asyncio.subprocess.Process
    port: int
    db: int = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/{self.db}"

    @property
    def pid(self) -> int:
        return self.process.pid


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _answers_ping(port: int) -> bool:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    try:
        writer.write(b"PING\r\n")
        await writer.drain()
        return (await reader.readline()).startswith(b"+PONG")
    except OSError:
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


@asynccontextmanager
async def redis_server(
    directory: Path, *, ready_timeout: float = 10.0
) -> AsyncIterator[RedisServer]:
    """Start ``redis-server`` in ``directory``; raises :class:`RedisServerMissing` without one."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisServerMissing(INSTALL_HINT)
    for _ in range(5):
        port = _free_port()  # another process may take it first: then try another
        process = await asyncio.create_subprocess_exec(
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
            "--daemonize",
            "no",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            ready = False
            async with asyncio.timeout(ready_timeout):
                while process.returncode is None and not ready:
                    ready = await _answers_ping(port)
                    if not ready:
                        await asyncio.sleep(0.02)
            if not ready:
                continue  # it exited: most likely the port was taken meanwhile
            yield RedisServer(process, port)
            return
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    raise RuntimeError("redis-server did not start on any of 5 free ports")
