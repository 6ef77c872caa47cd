"""Toxiproxy between bunny and relay: the VPN tunnel's faults, switched on and off for real.

One ``toxiproxy-server`` per test on loopback (a free API port, killed by its PID
afterwards) and one proxy, ``relay``, from a free port to relay's. bunny is
pointed at the proxy by DNS; relay never knows it is there.

Each :class:`WireFault` is one way the tunnel misbehaves, made of Toxiproxy
toxics (https://github.com/Shopify/toxiproxy#toxics). ``downstream`` is relay →
bunny, ``upstream`` bunny → relay.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from lab.toxiproxy import ToxiproxyApi, free_port, toxiproxy_server

PROXY = "relay"


@dataclass(frozen=True, slots=True)
class Toxic:
    kind: str
    attributes: dict[str, int | float]
    stream: str = "downstream"


@dataclass(frozen=True, slots=True)
class WireFault:
    name: str
    """What the test prints."""
    toxics: tuple[Toxic, ...] = ()
    disable: bool = False
    """Take the proxy down instead: it stops listening and closes every connection."""


LATENCY = WireFault("latency 300±100 ms", (Toxic("latency", {"latency": 300, "jitter": 100}),))
TIMEOUTS = WireFault(
    # Data stops; the connection is closed a second later.
    "timeouts (data stops, closed after 1 s)",
    (Toxic("timeout", {"timeout": 1000}, "upstream"),),
)
RESETS = WireFault(
    # TCP RST 300 ms into every connection, open ones included.
    "reset connections (RST after 300 ms)",
    (Toxic("reset_peer", {"timeout": 300}, "upstream"),),
)
SLICES = WireFault(
    "sliced stream (64±48-byte pieces, 0.2 ms apart)",
    tuple(
        Toxic("slicer", {"average_size": 64, "size_variation": 48, "delay": 200}, stream)
        for stream in ("upstream", "downstream")
    ),
)
SILENT_OUTAGE = WireFault(
    # The tunnel is down and nothing says so: no RST, no FIN, bytes vanish both ways, new
    # connections open and hear nothing. When it comes back, the connections that lived
    # through it are closed (Toxiproxy's timeout toxic does that when it is removed), as
    # when the far end lost their state.
    "silent outage (nothing crosses, nothing answers)",
    tuple(Toxic("timeout", {"timeout": 0}, stream) for stream in ("upstream", "downstream")),
)
REFUSED_OUTAGE = WireFault("outage (connections refused)", disable=True)

CYCLE = (LATENCY, TIMEOUTS, RESETS, SLICES)
"""The faults a run cycles through; outages and kills are scheduled around them."""


@dataclass(frozen=True, slots=True)
class FaultProxy:
    """The proxy ``relay``: bunny dials ``port`` on ``host``; relay is its upstream."""

    api: ToxiproxyApi
    host: str
    port: int

    # The API is blocking HTTP, called on a thread: the test's event loop also serves
    # bunny's DNS.

    async def apply(self, fault: WireFault) -> None:
        if fault.disable:
            await asyncio.to_thread(self.api.set_enabled, PROXY, False)
        for index, toxic in enumerate(fault.toxics):
            await asyncio.to_thread(
                self.api.add_toxic,
                PROXY,
                f"{toxic.kind}-{toxic.stream}-{index}",
                toxic.kind,
                toxic.attributes,
                stream=toxic.stream,
            )

    async def clear(self) -> None:
        """Every toxic off, and the proxy up."""
        await asyncio.to_thread(self.api.remove_toxics, PROXY)
        await asyncio.to_thread(self.api.set_enabled, PROXY, True)

    async def hold(self, fault: WireFault, seconds: float) -> None:
        """``fault`` for ``seconds``, then a clean wire again (even if cancelled meanwhile)."""
        await self.apply(fault)
        try:
            await asyncio.sleep(seconds)
        finally:
            await self.clear()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def rebindable_port(host: str = "127.0.0.1") -> int:
    """A free port outside the kernel's ephemeral range, for a listener that goes away and
    must come back on the same port (a restarted relay, a proxy switched off and on).

    A port from the ephemeral range can meanwhile become the source port of an outgoing
    connection, even a TCP self-connect to it while nothing listens, and then it cannot
    be bound again.
    """
    low, _ = _ephemeral_range()
    candidates = list(range(10_000, low)) if low > 11_000 else []
    random.shuffle(candidates)
    for port in candidates[:200]:
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
            return port
    return free_port(host)


@asynccontextmanager
async def fault_proxy(upstream_port: int, host: str = "127.0.0.1") -> AsyncIterator[FaultProxy]:
    """A Toxiproxy server of its own with the proxy ``relay`` → ``host:upstream_port``."""
    async with toxiproxy_server(host) as api:
        port = rebindable_port(host)
        await asyncio.to_thread(
            api.create_proxy, PROXY, f"{host}:{port}", f"{host}:{upstream_port}"
        )
        yield FaultProxy(api, host, port)
