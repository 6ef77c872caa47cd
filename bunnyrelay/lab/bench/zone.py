"""The DNS server the benchmarks ask: the lab's ZoneServer, in a process of its own.

It serves, from ``bench.internal``:

- ``relay.bench.internal``: A 127.0.0.1 with a 300 s TTL, so bunny answers jobs from
  its cache;
- ``relay-ttl0.bench.internal``: A 127.0.0.1 with TTL 0, so neither bunny nor c-ares
  may keep it and every job's lookup goes to the wire;
- ``n0.bench.internal`` … ``n<N-1>.bench.internal``: one A record each (300 s), so a
  DNS benchmark can ask a name nobody has cached yet on every lookup (c-ares keeps
  a cache of its own per channel).

It prints ``zone listening on IP:PORT`` when ready. Each line ``count`` on stdin
is answered with ``count <queries so far>`` on stdout, so a benchmark can tell how
many queries reached the wire::

    python -m bunnyrelay.lab.bench.zone --names 10000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import stat
import sys
from collections.abc import Sequence

from bunnyrelay.lab.dnsserver import QueryLogEntry, ZoneServer

ZONE = "bench.internal"
CACHED_NAME = f"relay.{ZONE}"
"""Answered with a 300 s TTL."""
UNCACHED_NAME = f"relay-ttl0.{ZONE}"
"""Answered with TTL 0."""
READY = "zone listening on"


def numbered(index: int) -> str:
    """The ``index``-th of the zone's numbered names."""
    return f"n{index}.{ZONE}"


def _address(index: int) -> str:
    return f"10.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}"


async def serve(names: int, listen_host: str) -> None:
    count = 0

    def counted(entry: QueryLogEntry) -> None:
        nonlocal count
        count += 1

    server = ZoneServer(listen_host, 0, zone=ZONE, ttl=300, on_query=counted, log_limit=1)
    server.set_records(CACHED_NAME, "A", ["127.0.0.1"])
    server.set_records(UNCACHED_NAME, "A", ["127.0.0.1"], ttl=0)
    for index in range(names):
        server.set_records(numbered(index), "A", [_address(index)])
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    async def commands() -> None:
        if not stat.S_ISFIFO(os.fstat(sys.stdin.fileno()).st_mode):
            return  # a terminal or /dev/null: nobody to answer
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            if line.strip() == b"count":
                print(f"count {count}", flush=True)

    async with server:
        print(f"{READY} {server.address}", flush=True)
        listener = loop.create_task(commands())
        await stop.wait()
        listener.cancel()


async def queries_so_far(process: asyncio.subprocess.Process) -> int:
    """Ask a running zone process how many queries it has answered (or dropped)."""
    assert process.stdin is not None
    assert process.stdout is not None
    process.stdin.write(b"count\n")
    await process.stdin.drain()
    line = await process.stdout.readline()
    word, _, number = line.decode().strip().partition(" ")
    if word != "count" or not number.isdigit():
        raise RuntimeError(f"the zone process answered {line!r} to count")
    return int(number)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bunnyrelay.lab.bench.zone",
        description="The benchmark's DNS server (bench.internal) on a free UDP+TCP port.",
    )
    parser.add_argument("--names", type=int, default=0, help="how many numbered names to serve")
    parser.add_argument("--listen-host", default="127.0.0.1", help="IP address to listen on")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.names, args.listen_host))
    return 0


if __name__ == "__main__":
    sys.exit(main())
