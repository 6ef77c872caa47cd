"""dnsmasq as the lab's forwarder of the kind that drops a query its upstream leaves unanswered.

CoreDNS's ``forward`` answers SERVFAIL once its upstream has not answered (after two
reads of 2 s); dnsmasq, like BIND and Windows DNS in their defaults, sends nothing at all,
and a client only sees its own timeout. That is the forwarder ``bunny diagnose`` must tell
from a dead one. It answers what it does not forward itself: ``version.bind`` (CHAOS) with
its version, and REFUSED for names outside the zones it forwards (it is given no default
upstream here, as a conditional forwarder).

It is Debian's ``dnsmasq-base`` (the program without a system service), which
``make services`` installs; the version is checked, not pinned.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import re
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import dns.asyncquery
import dns.exception
import dns.message

from lab import corefiles
from lab.topology import Hop, LabProcess, Mode, Side, Topology, TopologyError

MIN_VERSION = (2, 80)
"""The oldest release checked to drop: Debian 11's is 2.85, Debian 12's 2.90."""
INSTALL_HINT = (
    "dnsmasq is missing: `make services` installs Debian's dnsmasq-base (it needs root, "
    "as CI has; `make test` runs it)"
)
_READY_TIMEOUT = 10.0


class DnsmasqError(RuntimeError):
    """dnsmasq is missing, too old, or did not start."""


def program() -> str:
    """The path of dnsmasq, checked to be at least :data:`MIN_VERSION`."""
    path = shutil.which("dnsmasq") or next(
        (str(p) for p in (Path("/usr/sbin/dnsmasq"), Path("/sbin/dnsmasq")) if p.exists()), None
    )
    if path is None:
        raise DnsmasqError(INSTALL_HINT)
    found = version(path)
    if found < MIN_VERSION:
        wanted = ".".join(map(str, MIN_VERSION))
        raise DnsmasqError(f"{path} is dnsmasq {'.'.join(map(str, found))}; {wanted} or later")
    return path


def version(path: str = "dnsmasq") -> tuple[int, ...]:
    """dnsmasq's version, from ``dnsmasq --version``."""
    text = subprocess.run(
        [path, "--version"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    match = re.search(r"Dnsmasq version (\d+(?:\.\d+)+)", text)
    if match is None:
        raise DnsmasqError(f"{path} --version says {text[:80]!r}, not a dnsmasq version")
    return tuple(int(part) for part in match.group(1).split("."))


def forwarder_argv(
    listen_host: str, listen_port: int, zone: str, upstream_host: str, upstream_port: int
) -> list[str]:
    """dnsmasq in the foreground forwarding ``zone`` only, logging each query to stdout.

    No cache, so that every question for the zone goes upstream, and no other upstream,
    resolv.conf or hosts file, so that what it answers itself is the same on every machine.
    """
    return [
        program(),
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--cache-size=0",
        f"--listen-address={listen_host}",
        "--bind-interfaces",
        f"--port={listen_port}",
        f"--server=/{zone}/{upstream_host}#{upstream_port}",
        "--log-queries",
        "--log-facility=-",
        "--pid-file=",
        f"--user={getpass.getuser()}",
    ]


async def until_answering(host: str, port: int, timeout: float = _READY_TIMEOUT) -> None:
    """Return once ``host:port`` answers ``version.bind`` (CH TXT): dnsmasq is serving."""
    query = dns.message.make_query("version.bind", "TXT", rdclass="CH")
    async with asyncio.timeout(timeout):
        while True:
            try:
                await dns.asyncquery.udp(query, host, port=port, timeout=0.2)
                return
            except (dns.exception.Timeout, OSError):
                # Not listening yet: the port is closed (refused) or the query went unread.
                await asyncio.sleep(0.05)


async def replace_forwarder(topology: Topology) -> LabProcess:
    """Stop the chain's CoreDNS forwarder and run dnsmasq at its address instead.

    dnsmasq forwards the zone over UDP straight to the AWS resolver, across the VPN link
    between the namespaces: so only in netns mode, where cutting the tunnel cuts that
    link (Toxiproxy, the loopback mode's tunnel, relays TCP only). The topology ends it.
    """
    if topology.mode is not Mode.NETNS:
        raise TopologyError("a dnsmasq forwarder needs netns mode (root)")
    listen = topology.endpoints[Hop.FORWARDER]
    upstream = topology.endpoints[Hop.AWS_RESOLVER]
    argv = forwarder_argv(listen.host, listen.port, corefiles.ZONE, upstream.host, upstream.port)
    await topology.stop(Hop.FORWARDER)
    handle = await topology.spawn(Side.AZURE, "dnsmasq", argv)
    await topology.run_coroutine_in(Side.AZURE, lambda: until_answering(listen.host, listen.port))
    return handle


@asynccontextmanager
async def dnsmasq_forwarder(
    listen_host: str, listen_port: int, zone: str, upstream_host: str, upstream_port: int
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A dnsmasq forwarder on this machine's loopback, ended (by PID) on exit."""
    process = await asyncio.create_subprocess_exec(
        *forwarder_argv(listen_host, listen_port, zone, upstream_host, upstream_port),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        ready = asyncio.ensure_future(until_answering(listen_host, listen_port))
        exited = asyncio.ensure_future(process.wait())
        await asyncio.wait({ready, exited}, return_when=asyncio.FIRST_COMPLETED)
        exited.cancel()
        if not ready.done():
            ready.cancel()
            assert process.stderr is not None
            why = (await process.stderr.read()).decode(errors="replace")
            raise DnsmasqError(f"dnsmasq exited with {process.returncode}: {why}")
        ready.result()
        yield process
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(5):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
