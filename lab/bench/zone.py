"""The DNS servers the benchmarks ask: the lab's ZoneServer, and CoreDNS for the DNS benchmark.

**The lab's ZoneServer**, in a process of its own, answers the gRPC cases (it counts
the queries that reach it, for *DNS q/job*).

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

    python -m lab.bench.zone --names 10000

**CoreDNS** (:func:`coredns_zone`, the pinned build ``make tools`` installs) answers the
DNS benchmark: the same names, every ``n<i>`` without a list, from its ``template``
plugin. A Python server would be what limits lookups/s with many in flight, for
every client alike; CoreDNS answers from as many threads as there are cores, so
lookups/s measures the clients.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import socket
import stat
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from bunnyrelay.settings import HostPort
from lab.bench.children import serving
from lab.corefiles import bind_to
from lab.dnsserver import QueryLogEntry, ZoneServer
from lab.tools import COREDNS, tool

ZONE = "bench.internal"
CACHED_NAME = f"relay.{ZONE}"
"""Answered with a 300 s TTL."""
UNCACHED_NAME = f"relay-ttl0.{ZONE}"
"""Answered with TTL 0."""
READY = "zone listening on"


def numbered(index: int) -> str:
    """The ``index``-th of the zone's numbered names."""
    return f"n{index}.{ZONE}"


COREFILE = r"""# The bench zone (see lab/bench/zone.py), answered from templates: A
# records only (AAAA is NODATA), nothing else exists. No log plugin: a line per query
# would cost CoreDNS more than the answer does.
bench.internal {
    errors
    template IN A {
        match "^relay-ttl0\.bench\.internal\.$"
        answer "{{ .Name }} 0 IN A 127.0.0.1"
        fallthrough
    }
    template IN A {
        match "^(relay|n[0-9]+)\.bench\.internal\.$"
        answer "{{ .Name }} 300 IN A 127.0.0.1"
        fallthrough
    }
    template IN AAAA {
        match "^(relay|relay-ttl0|n[0-9]+)\.bench\.internal\.$"
        fallthrough
    }
    template ANY ANY {
        rcode NXDOMAIN
    }
}
"""
"""The bench zone for CoreDNS: ``relay`` (300 s), ``relay-ttl0`` (TTL 0), ``n<i>`` (300 s)."""

# CoreDNS prints its version once every server block listens (as the lab topology reads it).
_COREDNS_READY = re.compile(r"^CoreDNS-(\S+)")


@dataclass(frozen=True, slots=True)
class CoreDnsZone:
    """A running CoreDNS serving the bench zone."""

    address: HostPort
    version: str
    """As CoreDNS printed it, e.g. ``1.14.7``."""
    pid: int


@asynccontextmanager
async def coredns_zone(workdir: Path, host: str = "127.0.0.1") -> AsyncIterator[CoreDnsZone]:
    """Run CoreDNS serving the bench zone on ``host`` and a free port.

    Its Corefile and log are kept in ``workdir``; the process is ended by PID on exit.
    """
    corefile = workdir / "Corefile.bench"
    corefile.write_text(bind_to(COREFILE, host), encoding="utf-8")
    port = _free_port(host)
    argv = [str(tool(COREDNS)), "-conf", str(corefile), "-dns.port", str(port)]
    log = workdir / "coredns-bench.log"
    async with serving(argv, ready=_COREDNS_READY, log_path=log, timeout=15) as server:
        # CoreDNS logs to stdout: read it on, or a full pipe would stall the server.
        drain = asyncio.get_running_loop().create_task(_copy_to(server.process, log))
        try:
            yield CoreDnsZone(HostPort(host, port), server.ready.group(1), server.pid)
        finally:
            drain.cancel()
            await asyncio.gather(drain, return_exceptions=True)


async def _copy_to(process: asyncio.subprocess.Process, path: Path) -> None:
    assert process.stdout is not None
    with path.open("ab") as log:
        while line := await process.stdout.readline():
            log.write(line)


def _free_port(host: str) -> int:
    """A port free for both UDP and TCP on ``host`` (CoreDNS listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((host, 0))
            port = int(probe.getsockname()[1])
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no port free for UDP and TCP on {host}")


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
        prog="python -m lab.bench.zone",
        description="The benchmark's DNS server (bench.internal) on a free UDP+TCP port.",
    )
    parser.add_argument("--names", type=int, default=0, help="how many numbered names to serve")
    parser.add_argument("--listen-host", default="127.0.0.1", help="IP address to listen on")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.names, args.listen_host))
    return 0


if __name__ == "__main__":
    sys.exit(main())
