"""Channels to relay, one per resolved address, chosen round robin.

bunny dials the addresses its own resolver found (``ipv4:``/``ipv6:`` targets)
instead of handing the DNS name to gRPC: gRPC's resolver ignores TTLs and only
re-resolves on disconnect (grpc/grpc#12295, grpc/grpc#22897), so a relay that
moves would keep receiving nothing. One channel per address also tells bunny
exactly which address served each call, which a single round-robin channel
hides. The DNS name stays the ``:authority``, and with TLS it is also the name
relay's certificate is verified against (``grpc.ssl_target_name_override``),
though the channel dials an IP address.

When the answer changes (TTL expiry, serve-stale ending), new addresses get
channels at once and channels to addresses that left are closed with a grace
period, so calls already on them finish instead of failing. When the TLS files
change (:mod:`bunny.tls`), every channel is replaced the same way.

Every channel pings relay (HTTP/2 keepalive, :class:`Keepalive`): the path
crosses NAT and VPN gateways that forget idle connections, and a tunnel that
goes silent sends no RST. Without pings a call on such a connection waits for
its deadline; with them it fails UNAVAILABLE within ``interval + timeout`` and
bunny retries it on a new connection (:mod:`bunny.keepalive`).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import grpc

from bunny.dns.model import Resolution
from bunny.keepalive import Keepalive
from bunny.payload import LARGEST_MAX_BYTES
from bunny.tls import ClientTls
from bunnyrelay.v1 import jobs_pb2_grpc

# Calls on a channel whose address left the DNS answer get this long to finish.
RETIRE_GRACE_S = 30.0
MAX_ANSWER_BYTES = LARGEST_MAX_BYTES + 64 * 1024
"""The largest message bunny takes from relay: an answer to the largest payload relay can be
set to take, with room for the rest of the result (gRPC's default is 4 MiB)."""


@dataclass(frozen=True, slots=True)
class RelayEndpoint:
    """One relay address with its channel and stub."""

    name: str
    """The DNS name this address was resolved from (the ``server.address`` of spans)."""
    address: str
    """An IP literal."""
    port: int
    channel: grpc.aio.Channel
    stub: jobs_pb2_grpc.JobServiceAsyncStub
    peer: str = field(init=False, repr=False, compare=False)
    """``IP:PORT`` (``[v6]:PORT`` for IPv6), as bunny reports ``relay_address``; made once,
    as every attempt asks for it."""

    def __post_init__(self) -> None:
        address = self.address
        peer = f"[{address}]:{self.port}" if ":" in address else f"{address}:{self.port}"
        object.__setattr__(self, "peer", peer)


def grpc_target(address: str, port: int) -> str:
    """The gRPC target URI for one IP address: ``ipv4:IP:PORT`` or ``ipv6:[IP]:PORT``."""
    if ipaddress.ip_address(address).version == 6:
        return f"ipv6:[{address}]:{port}"
    return f"ipv4:{address}:{port}"


class AddressSource(Protocol):
    """What the pool needs of a resolver (bunny's Resolver, or a literal address)."""

    def cached(self, name: str) -> Resolution | None:
        """A fresh answer without asking anyone (no span, no await), or None."""
        ...

    async def resolve(self, name: str, *, deadline: float | None = None) -> Resolution: ...


class RelayPool:
    """Endpoints for ``name:port``, kept in step with the resolver's answers."""

    def __init__(
        self,
        resolver: AddressSource,
        name: str,
        port: int,
        *,
        channel_options: Sequence[tuple[str, object]] = (),
        tls: ClientTls | None = None,
        keepalive: Keepalive = Keepalive(),
    ) -> None:
        self.resolver = resolver
        self.name = name
        self.port = port
        self.host = name.rstrip(".")
        self.authority = f"{self.host}:{port}"
        self.tls = tls
        self._options: list[tuple[str, object]] = [
            ("grpc.default_authority", self.authority),
            ("grpc.max_receive_message_length", MAX_ANSWER_BYTES),
        ]
        if tls is not None:
            # The certificate must name what bunny resolved, not the address it dials.
            self._options.append(("grpc.ssl_target_name_override", self.host))
        # The caller's first: given an option twice, gRPC keeps the first value.
        self._options.extend(channel_options)
        self._options.extend(keepalive.channel_options())
        self._endpoints: dict[str, RelayEndpoint] = {}
        self._order: tuple[RelayEndpoint, ...] = ()
        self._addresses: tuple[str, ...] = ()
        self._next = 0
        self._retiring: set[asyncio.Task[None]] = set()

    @property
    def endpoints(self) -> tuple[RelayEndpoint, ...]:
        return self._order

    async def lookup(self, *, deadline: float | None = None) -> Resolution:
        """Resolve the name (cache first) and bring the endpoints in line with the answer.

        A fresh cached answer is taken without a lookup (and without a ``dns.lookup``
        span: the job's span tells it); a miss goes through the resolver's ``resolve``.
        """
        resolution = self.resolver.cached(self.name)
        if resolution is None:
            resolution = await self.resolver.resolve(self.name, deadline=deadline)
        self._follow(resolution)
        return resolution

    def cached(self) -> Resolution | None:
        """:meth:`lookup` when the resolver has a fresh answer (no await, no span); else None,
        and nothing done."""
        resolution = self.resolver.cached(self.name)
        # Nearly always the addresses followed already (the same tuple): nothing to do.
        if resolution is not None and (
            self.tls is not None or resolution.addresses is not self._addresses
        ):
            self._follow(resolution)
        return resolution

    def _follow(self, resolution: Resolution) -> None:
        """Bring the endpoints in line with ``resolution`` (all anew after new certificates)."""
        if self.tls is not None and self.tls.refresh():
            # New certificates: new channels (new handshakes) for the calls from now on.
            for endpoint in self._endpoints.values():
                self._retire(endpoint)
            self._endpoints.clear()
            self._apply(resolution.addresses)
        elif resolution.addresses != self._addresses:
            self._apply(resolution.addresses)
        else:
            # The same addresses in another tuple: kept, so that :meth:`cached` knows it.
            self._addresses = resolution.addresses

    def pick(self, *, avoid: str | None = None) -> RelayEndpoint:
        """The next endpoint round robin.

        Skips ``avoid`` (the peer that just failed) and channels that gRPC has
        marked TRANSIENT_FAILURE, when another endpoint is left to try.
        """
        order = self._order
        if len(order) == 1:
            # Nothing to choose between: no need to ask gRPC for the channel's state.
            return order[0]
        if not order:
            raise RuntimeError("RelayPool.pick() before a successful lookup()")
        for _ in range(len(order)):
            endpoint = order[self._next % len(order)]
            self._next += 1
            if endpoint.peer == avoid:
                continue
            state = endpoint.channel.get_state(try_to_connect=False)
            if state is not grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                return endpoint
        return order[self._next % len(order)]

    def _apply(self, addresses: tuple[str, ...]) -> None:
        wanted = dict.fromkeys(addresses)
        for address in list(self._endpoints):
            if address not in wanted:
                self._retire(self._endpoints.pop(address))
        for address in wanted:
            if address not in self._endpoints:
                target = grpc_target(address, self.port)
                channel = (
                    grpc.aio.insecure_channel(target, options=self._options)
                    if self.tls is None
                    else grpc.aio.secure_channel(
                        target, self.tls.credentials, options=self._options
                    )
                )
                self._endpoints[address] = RelayEndpoint(
                    self.host, address, self.port, channel, jobs_pb2_grpc.JobServiceStub(channel)
                )
        self._addresses = addresses
        self._order = tuple(self._endpoints[a] for a in wanted)

    def _retire(self, endpoint: RelayEndpoint) -> None:
        task = asyncio.get_running_loop().create_task(endpoint.channel.close(RETIRE_GRACE_S))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def close(self, grace: float | None = None) -> None:
        """Close every channel; calls still running get ``grace`` seconds."""
        endpoints, self._endpoints, self._order, self._addresses = (
            list(self._endpoints.values()),
            {},
            (),
            (),
        )
        await asyncio.gather(*(e.channel.close(grace) for e in endpoints))
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
