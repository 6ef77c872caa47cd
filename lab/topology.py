"""The cross-cloud DNS path on one machine, every hop a real CoreDNS process.

::

    pod ─vnet─▶ cluster DNS ─▶ forwarder ─▶ tunnel ══ VPN ══▶ AWS resolver ─▶ zone server
    (bunny)     └───────────── azure ──────────────┘        └─────────── aws ───────────┘
      └──────────────────── direct ────────────────────────────▶ relay's addresses

- **cluster DNS**: AKS's CoreDNS. Its Corefile imports ``custom/*.server`` as AKS
  does, and ``custom/private-aws-internal.server`` is the conditional forward we ship.
- **forwarder**: the VNet's DNS forwarder (an Azure DNS Private Resolver or a forwarder VM
  in the clouds; the VPN gateway only carries its packets). It forwards the zone
  over TCP to the **tunnel**, a Toxiproxy proxy whose far side is the AWS resolver:
  faults on the tunnel (latency, drops, a blackout) are Toxiproxy toxics.
- **AWS resolver**: the VPC resolver, forwarding the zone to the **zone server**,
  which serves the private hosted zone from its zone file.

All CoreDNS text comes from ``deploy/coredns/`` through :mod:`lab.corefiles`.

Two modes, chosen by :func:`start_topology` (``mode="auto"``):

- ``netns`` (root): three network namespaces, ``pod``, ``azure`` and ``aws``. The
  tunnel is a veth pair between azure and aws, so cutting it is ``ip link set … down``
  on the AWS end: the Azure side's packets vanish, as over a dead VPN. The pod has a
  veth into azure (the VNet) and a second one, ``direct``, into aws: that path does
  not carry DNS, it carries bunny's gRPC to relay and lets a client (or ``bunny
  diagnose``) ask every hop directly, so a cut tunnel breaks only the forwarded
  lookups. Every server listens on port 53 at its own address.
- ``loopback`` (not root): the same processes on distinct 127.0.x.y addresses and
  one free port; cutting the tunnel is a Toxiproxy toxic that swallows everything.

Where bunny runs: the pod. Its nameserver is :attr:`Topology.cluster_dns`. Run a
process there with ``topology.argv(Side.POD, [...])`` (``ip netns exec`` in netns
mode, which also gives it :attr:`Topology.resolv_conf` as ``/etc/resolv.conf``), or
Python code in this process with :meth:`Topology.run_coroutine_in` (name the
nameserver explicitly there: the file is only swapped in for processes). relay belongs
on the aws side (``topology.argv(Side.AWS, [...])``), listening on one of
:attr:`Topology.relay_addresses`, which are the zone's A records.

Everything started is ended by PID and every namespace deleted when the context
of :func:`start_topology` exits, also when its body or the start itself failed.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import IO, Any, TypeVar

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rdtypes.ANY.SOA

from lab import corefiles, netns
from lab.corefiles import Role
from lab.tools import COREDNS, TOXIPROXY, tool
from lab.toxiproxy import ToxiproxyApi

_T = TypeVar("_T")

RELAY_NAME = f"relay.{corefiles.ZONE}"
SRV_NAME = f"_grpc._tcp.relay.{corefiles.ZONE}"
TUNNEL_PROXY = "tunnel"
"""The name of the Toxiproxy proxy that plays the VPN tunnel."""

_START_TIMEOUT = 15.0
_STOP_TIMEOUT = 5.0
_NAMESPACE_PREFIX = "brl"
_STALE_NAMESPACE = re.compile(rf"^{_NAMESPACE_PREFIX}(\d+)x\d+-(pod|azure|aws)$")
_CUT_TOXICS = ("cut-down", "cut-up")


class TopologyError(RuntimeError):
    """A part of the topology did not start, or a control could not be applied."""


class Mode(StrEnum):
    NETNS = "netns"
    """Network namespaces joined by veth pairs (needs root)."""
    LOOPBACK = "loopback"
    """Distinct 127.0.x.y addresses in the host's network namespace."""


class Side(StrEnum):
    POD = "pod"
    """Where bunny runs: a pod in the AKS cluster."""
    AZURE = "azure"
    """The AKS cluster's VNet: cluster DNS, forwarder, the tunnel's Azure end."""
    AWS = "aws"
    """The EKS cluster's VPC: the VPC resolver, the private zone, relay."""


class Hop(StrEnum):
    """The servers of the path, in the order a lookup meets them."""

    CLUSTER_DNS = "cluster-dns"
    FORWARDER = "forwarder"
    TUNNEL = "tunnel"
    """Toxiproxy; DNS over TCP only, and it only relays."""
    AWS_RESOLVER = "aws-resolver"
    ZONE = "zone"


DNS_HOPS = (Hop.CLUSTER_DNS, Hop.FORWARDER, Hop.AWS_RESOLVER, Hop.ZONE)
"""The hops that answer DNS over UDP and TCP, from the pod outward."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where one server of the path listens."""

    hop: Hop
    side: Side
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class AddressPlan:
    """The addresses of one mode. Ports are filled in when the topology starts."""

    hosts: Mapping[Hop, str]
    tunnel_api: str
    relay_addresses: tuple[str, ...]


# Azure's first usable VNet address is .4; AKS's default kube-dns address ends in .10;
# the Route 53 Resolver sits at the VPC base address + 2.
NETNS_PLAN = AddressPlan(
    hosts={
        Hop.CLUSTER_DNS: "10.253.1.10",
        Hop.FORWARDER: "10.253.1.4",
        Hop.TUNNEL: "10.253.1.5",
        Hop.AWS_RESOLVER: "10.253.2.2",
        Hop.ZONE: "10.253.2.53",
    },
    tunnel_api="10.253.1.5",
    relay_addresses=("10.253.2.20", "10.253.2.21"),
)
LOOPBACK_PLAN = AddressPlan(
    hosts={
        Hop.CLUSTER_DNS: "127.0.1.10",
        Hop.FORWARDER: "127.0.1.4",
        Hop.TUNNEL: "127.0.1.5",
        Hop.AWS_RESOLVER: "127.0.2.2",
        Hop.ZONE: "127.0.2.53",
    },
    tunnel_api="127.0.1.5",
    relay_addresses=("127.0.2.20", "127.0.2.21"),
)
_SIDES = {
    Hop.CLUSTER_DNS: Side.AZURE,
    Hop.FORWARDER: Side.AZURE,
    Hop.TUNNEL: Side.AZURE,
    Hop.AWS_RESOLVER: Side.AWS,
    Hop.ZONE: Side.AWS,
}

# netns mode wiring: (namespace, interface, address) at each end of each veth pair.
_AZURE_NET, _AWS_NET = "10.253.1.0/24", "10.253.2.0/24"
_VNET = ((Side.POD, "vnet0", "10.253.0.2/30"), (Side.AZURE, "vnet1", "10.253.0.1/30"))
_DIRECT = ((Side.POD, "direct0", "10.253.0.6/30"), (Side.AWS, "direct1", "10.253.0.5/30"))
_VPN = ((Side.AZURE, "vpn0", "10.253.0.9/30"), (Side.AWS, "vpn1", "10.253.0.10/30"))


def _gateway(end: tuple[Side, str, str]) -> str:
    return end[2].split("/")[0]


@dataclass(frozen=True)
class ZoneContents:
    """What the private zone holds now (rendered into its zone file)."""

    relay_addresses: tuple[str, ...]
    """relay's A records; empty: none."""
    relay_ports: tuple[int, ...]
    """Ports of ``_grpc._tcp.relay`` SRV records (target relay); empty: no SRV record."""
    ttl: int
    """TTL of relay's records, in seconds."""
    soa_ttl: int
    """TTL of the SOA record: how long a resolver may cache a negative answer (RFC 2308)."""
    serial: int = 1
    """The SOA serial; Route 53 starts at 1. Every change raises it, which makes CoreDNS reload."""

    def render(self) -> str:
        return corefiles.render(
            Role.ZONE_FILE,
            ttl=self.ttl,
            soa_ttl=self.soa_ttl,
            serial=self.serial,
            relay_addresses=list(self.relay_addresses),
            relay_ports=list(self.relay_ports),
        )


@dataclass
class LabProcess:
    """A process the topology started; its output goes to ``log_path`` line by line."""

    label: str
    process: asyncio.subprocess.Process
    log_path: Path
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    copier: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.process.pid


def _open_log(path: Path) -> IO[str]:
    return path.open("a", encoding="utf-8", buffering=1)


def _die_with_parent() -> None:
    # Runs in the child before exec: if this process dies without cleaning up
    # (SIGKILL, a crash), the kernel kills the child too (PR_SET_PDEATHSIG).
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


class Topology:
    """A running chain; made by :func:`start_topology`, which also ends it."""

    def __init__(
        self,
        *,
        mode: Mode,
        workdir: Path,
        plan: AddressPlan,
        port: int,
        api_port: int,
        zone: ZoneContents,
        namespaces: Mapping[Side, netns.Namespace],
    ) -> None:
        self.mode = mode
        """``netns`` or ``loopback``: which of the two ways this topology runs."""
        self.workdir = workdir
        """Corefiles, the zone file, the pod's resolv.conf and one log per process."""
        self.endpoints: dict[Hop, Endpoint] = {
            hop: Endpoint(hop, _SIDES[hop], host, port) for hop, host in plan.hosts.items()
        }
        """Every server's address, by hop."""
        self.relay_addresses = plan.relay_addresses
        """Addresses on the aws side reachable from the pod, for relay to listen on."""
        self.zone = zone
        """What the private zone holds now; change it with :meth:`set_zone`."""
        self.tunnel_api = ToxiproxyApi(plan.tunnel_api, api_port)
        """Toxiproxy's API (reachable from the azure side)."""
        self._namespaces = dict(namespaces)
        self._processes: dict[Hop, LabProcess] = {}
        self._extras: dict[str, LabProcess] = {}
        self._tunnel_cut = False
        self._cluster_cache = True

    # --- where things are ---------------------------------------------------------------

    @property
    def cluster_dns(self) -> Endpoint:
        """The nameserver bunny uses: the cluster DNS, as a pod's resolv.conf names it."""
        return self.endpoints[Hop.CLUSTER_DNS]

    @property
    def resolv_conf(self) -> Path:
        """The pod's resolv.conf, as Kubernetes writes it for ``dnsPolicy: ClusterFirst``."""
        return self.workdir / "pod" / "resolv.conf"

    def namespace(self, side: Side) -> netns.Namespace | None:
        """The network namespace of ``side`` (None in loopback mode)."""
        return self._namespaces.get(side)

    def argv(self, side: Side, argv: Sequence[str]) -> list[str]:
        """``argv`` to run as a process on ``side`` (as it is in loopback mode)."""
        namespace = self.namespace(side)
        return namespace.argv(argv) if namespace else list(argv)

    def hop_specs(self) -> list[tuple[str, str]]:
        """``(label, HOST:PORT)`` of every DNS hop from the pod outward."""
        return [(hop.value, str(self.endpoints[hop])) for hop in DNS_HOPS]

    async def run_in(self, side: Side, function: Callable[[], _T]) -> _T:
        """``function()`` on a thread whose sockets are on ``side``."""
        return await netns.run_in(self.namespace(side), function)

    async def run_coroutine_in(
        self, side: Side, factory: Callable[[], Coroutine[Any, Any, _T]]
    ) -> _T:
        """Await ``factory()`` with its sockets on ``side`` (its own event loop in netns mode)."""
        return await netns.run_coroutine_in(self.namespace(side), factory)

    async def query(
        self,
        hop: Hop | Endpoint,
        qname: str = RELAY_NAME,
        rdtype: str = "A",
        *,
        time_limit: float = 2.0,
        tcp: bool = False,
        side: Side = Side.POD,
    ) -> dns.message.Message:
        """Ask one hop directly, from ``side`` (the pod: where bunny runs).

        Raises ``dns.exception.Timeout`` when no answer comes within ``time_limit`` seconds.
        """
        target = hop if isinstance(hop, Endpoint) else self.endpoints[hop]
        message = dns.message.make_query(qname, rdtype)

        async def ask() -> dns.message.Message:
            if tcp:
                return await dns.asyncquery.tcp(
                    message, target.host, timeout=time_limit, port=target.port
                )
            return await dns.asyncquery.udp(
                message, target.host, timeout=time_limit, port=target.port
            )

        return await self.run_coroutine_in(side, ask)

    def processes(self) -> list[LabProcess]:
        """Every process running now: the hops', then those :meth:`spawn` started."""
        return [*self._processes.values(), *self._extras.values()]

    def log(self, hop: Hop | str) -> str:
        """Everything a process has printed so far (for a hop, CoreDNS's ``log`` lines)."""
        path = self.workdir / f"{hop}.log"
        return path.read_text(encoding="utf-8") if path.exists() else ""

    def logs(self, lines: int = 15) -> str:
        """The last ``lines`` lines of every hop's log, for failure messages."""
        parts = []
        for hop in Hop:
            tail = self.log(hop).splitlines()[-lines:]
            parts.append(f"--- {hop.value} ({self.endpoints[hop]}) ---\n" + "\n".join(tail))
        return "\n".join(parts)

    def describe(self) -> str:
        """A few lines saying what runs where."""
        rows = [f"mode: {self.mode.value}   workdir: {self.workdir}"]
        for hop in Hop:
            endpoint = self.endpoints[hop]
            process = self._processes.get(hop)
            state = f"pid {process.pid}" if process else "stopped"
            rows.append(f"  {hop.value:<13} {endpoint.side.value:<6} {endpoint!s:<20} {state}")
        rows.append(f"  tunnel API    azure  {self.tunnel_api.host}:{self.tunnel_api.port}")
        rows.append(f"  relay A       aws    {', '.join(self.zone.relay_addresses) or '(none)'}")
        if self._namespaces:
            names = ", ".join(f"{side.value}={ns.name}" for side, ns in self._namespaces.items())
            rows.append(f"  namespaces    {names}")
        return "\n".join(rows)

    # --- faults and changes ------------------------------------------------------------------

    async def cut_tunnel(self) -> None:
        """Nothing crosses the tunnel any more, in either direction; nothing says so either."""
        if self.mode is Mode.NETNS:
            aws, interface = self._required(_VPN[1][0]), _VPN[1][1]
            await netns.set_link(aws, interface, up=False)
        else:
            for name, stream in zip(_CUT_TOXICS, ("downstream", "upstream"), strict=True):
                await self._tunnel_call(
                    partial(
                        self.tunnel_api.add_toxic,
                        TUNNEL_PROXY,
                        name,
                        "timeout",
                        {"timeout": 0},
                        stream=stream,
                    )
                )
        self._tunnel_cut = True

    async def restore_tunnel(self) -> None:
        """Undo :meth:`cut_tunnel`."""
        if self.mode is Mode.NETNS:
            aws, interface = self._required(_VPN[1][0]), _VPN[1][1]
            await netns.set_link(aws, interface, up=True)
            # Taking a link down drops the routes through it.
            await netns.route(aws, _AZURE_NET, _gateway(_VPN[0]))
        else:
            existing = await self._tunnel_call(lambda: self.tunnel_api.toxics(TUNNEL_PROXY))
            for name in _CUT_TOXICS:
                if name in existing:
                    await self._tunnel_call(
                        partial(self.tunnel_api.remove_toxic, TUNNEL_PROXY, name)
                    )
        self._tunnel_cut = False

    async def set_tunnel_latency(self, latency_ms: int, jitter_ms: int = 0) -> None:
        """Delay every answer coming back through the tunnel by ``latency_ms`` (± ``jitter_ms``)."""
        await self._replace_toxic(
            "latency", "latency", {"latency": latency_ms, "jitter": jitter_ms}, toxicity=1.0
        )

    async def set_tunnel_drops(self, probability: float) -> None:
        """Swallow what comes back on a tunnel connection, for ``probability`` of connections.

        Toxiproxy decides per TCP connection, when it opens. The forwarder keeps
        connections open for reuse and opens a new one after a failed exchange, so a
        lost answer costs the forwarder its read timeout (2 s) and one more try.
        """
        if not 0.0 <= probability <= 1.0:
            raise ValueError("probability must be between 0 and 1")
        await self._replace_toxic("drops", "timeout", {"timeout": 0}, toxicity=probability)

    async def clear_tunnel_faults(self) -> None:
        """Remove latency and drops from the tunnel (a cut stays cut: :meth:`restore_tunnel`)."""
        existing = await self._tunnel_call(lambda: self.tunnel_api.toxics(TUNNEL_PROXY))
        for name in ("latency", "drops"):
            if name in existing:
                await self._tunnel_call(partial(self.tunnel_api.remove_toxic, TUNNEL_PROXY, name))

    async def set_zone(
        self,
        *,
        relay_addresses: Sequence[str] | None = None,
        relay_ports: Sequence[int] | None = None,
        ttl: int | None = None,
        wait: float = 10.0,
    ) -> None:
        """Change the private zone; return once the zone server answers with the change.

        The zone file is rewritten with a higher SOA serial and CoreDNS's ``file``
        plugin reloads it (``reload 1s``). Resolvers in front keep what they cached
        for up to its TTL, as they would in front of Route 53.
        """
        changes: dict[str, Any] = {"serial": self.zone.serial + 1}
        if relay_addresses is not None:
            changes["relay_addresses"] = tuple(relay_addresses)
        if relay_ports is not None:
            changes["relay_ports"] = tuple(relay_ports)
        if ttl is not None:
            changes["ttl"] = ttl
        self.zone = replace(self.zone, **changes)
        self._write_zone()
        await self._until_zone_serial(self.zone.serial, wait)

    async def remove_relay(self) -> None:
        """Delete relay from the zone (its A and SRV records): the name becomes NXDOMAIN."""
        await self.set_zone(relay_addresses=(), relay_ports=())

    async def remove_conditional_forward(self) -> None:
        """Restart the cluster DNS without ``private-aws-internal.server``."""
        self._conditional_forward_path().unlink(missing_ok=True)
        await self.restart(Hop.CLUSTER_DNS)

    async def restore_conditional_forward(self) -> None:
        """Restart the cluster DNS with ``private-aws-internal.server`` again."""
        self._write_conditional_forward()
        await self.restart(Hop.CLUSTER_DNS)

    async def set_cluster_dns_cache(self, enabled: bool) -> None:
        """The conditional forward's ``cache`` as shipped (True) or removed; restarts the
        cluster DNS only when that changes (a restart also empties its cache)."""
        if enabled == self._cluster_cache:
            return
        self._cluster_cache = enabled
        self._write_conditional_forward()
        await self.restart(Hop.CLUSTER_DNS)

    async def stop(self, hop: Hop) -> None:
        """Stop ``hop``'s process (e.g. the AWS resolver: the forwarder then gets SERVFAIL)."""
        process = self._processes.pop(hop, None)
        if process is not None:
            await _terminate(process)

    async def start(self, hop: Hop) -> None:
        """Start ``hop``'s process again (no-op if it runs)."""
        if hop in self._processes:
            return
        if hop is Hop.TUNNEL:
            await self._start_tunnel()
        else:
            await self._start_coredns(hop)

    async def restart(self, hop: Hop) -> None:
        """Stop and start ``hop``'s process (it re-reads its configuration)."""
        await self.stop(hop)
        await self.start(hop)

    # --- internals ---------------------------------------------------------------------

    def _required(self, side: Side) -> netns.Namespace:
        namespace = self.namespace(side)
        if namespace is None:
            raise TopologyError(f"no {side.value} namespace in {self.mode.value} mode")
        return namespace

    async def _tunnel_call(self, call: Callable[[], _T]) -> _T:
        return await self.run_in(Side.AZURE, call)

    async def _replace_toxic(
        self, name: str, kind: str, attributes: dict[str, int | float], *, toxicity: float
    ) -> None:
        existing = await self._tunnel_call(lambda: self.tunnel_api.toxics(TUNNEL_PROXY))
        if name in existing:
            await self._tunnel_call(lambda: self.tunnel_api.remove_toxic(TUNNEL_PROXY, name))
        await self._tunnel_call(
            lambda: self.tunnel_api.add_toxic(
                TUNNEL_PROXY, name, kind, attributes, toxicity=toxicity
            )
        )

    def _hop_dir(self, hop: Hop) -> Path:
        return self.workdir / hop.value

    def _conditional_forward_path(self) -> Path:
        return self._hop_dir(Hop.CLUSTER_DNS) / "custom" / corefiles.CONDITIONAL_FORWARD_KEY

    def _write_conditional_forward(self) -> None:
        text = corefiles.render(
            Role.CONDITIONAL_FORWARD, forwarder=str(self.endpoints[Hop.FORWARDER])
        )
        if not self._cluster_cache:
            text = corefiles.without_directive(text, "cache")
        bound = corefiles.bind_to(text, self.endpoints[Hop.CLUSTER_DNS].host)
        _write_atomically(self._conditional_forward_path(), bound)

    def _write_zone(self) -> None:
        _write_atomically(self._hop_dir(Hop.ZONE) / corefiles.ZONE_FILE_NAME, self.zone.render())

    def write_configuration(self) -> None:
        """Write every Corefile, the zone file and the pod's resolv.conf into :attr:`workdir`."""
        corefile_texts = {
            Hop.CLUSTER_DNS: corefiles.render(Role.CLUSTER_DNS),
            Hop.FORWARDER: corefiles.render(
                Role.FORWARDER, aws_resolver=str(self.endpoints[Hop.TUNNEL])
            ),
            Hop.AWS_RESOLVER: corefiles.render(
                Role.AWS_RESOLVER, zone_server=str(self.endpoints[Hop.ZONE])
            ),
            Hop.ZONE: corefiles.render(Role.ZONE_SERVER),
        }
        for hop, text in corefile_texts.items():
            bound = corefiles.bind_to(text, self.endpoints[hop].host)
            _write_atomically(self._hop_dir(hop) / "Corefile", bound)
        self._write_conditional_forward()
        self._write_zone()
        _write_atomically(self.resolv_conf, self._resolv_conf_text())
        pod = self.namespace(Side.POD)
        if pod is not None:
            _write_atomically(pod.etc_dir / "resolv.conf", self._resolv_conf_text())

    def _resolv_conf_text(self) -> str:
        dns_server = self.cluster_dns
        lines = [
            "# A pod's resolv.conf on AKS (dnsPolicy ClusterFirst, namespace default),",
            "# pointing at the lab's cluster DNS.",
        ]
        if dns_server.port != 53:
            lines.append(f"# The cluster DNS listens on port {dns_server.port}, which resolv.conf")
            lines.append(f"# cannot say: give the client --nameserver {dns_server} too.")
        lines += [
            "search default.svc.cluster.local svc.cluster.local cluster.local",
            f"nameserver {dns_server.host}",
            "options ndots:5",
        ]
        return "\n".join(lines) + "\n"

    async def start_all(self) -> None:
        """Start every process, the far end first; each waits until it serves."""
        for hop in (Hop.ZONE, Hop.AWS_RESOLVER, Hop.TUNNEL):
            await self.start(hop)
        # The cluster DNS and the forwarder do not need their upstreams to start.
        async with asyncio.TaskGroup() as group:
            group.create_task(self.start(Hop.FORWARDER))
            group.create_task(self.start(Hop.CLUSTER_DNS))

    async def stop_all(self) -> None:
        """End every process this topology started, by PID."""
        errors: list[BaseException] = []
        for label in list(self._extras):
            try:
                await _terminate(self._extras.pop(label))
            except Exception as error:  # keep ending the others
                errors.append(error)
        for hop in list(self._processes):
            try:
                await self.stop(hop)
            except Exception as error:
                errors.append(error)
        if errors:
            raise TopologyError(f"could not stop every process: {errors}")

    async def spawn(
        self,
        side: Side,
        label: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
    ) -> LabProcess:
        """Start ``argv`` on ``side`` (relay on aws, a client in the pod); ended with the rest.

        Its output goes to ``WORKDIR/LABEL.log``; end it earlier with :meth:`end`.
        """
        if label in self._extras or label in {hop.value for hop in Hop}:
            raise TopologyError(f"a process labelled {label!r} is running already")
        handle = await self._spawn(label, side, argv, self.workdir, env)
        self._extras[label] = handle
        return handle

    async def end(self, label: str) -> None:
        """End the process :meth:`spawn` started as ``label`` (SIGTERM, then SIGKILL)."""
        handle = self._extras.pop(label, None)
        if handle is not None:
            await _terminate(handle)

    async def _spawn(
        self,
        label: str,
        side: Side,
        argv: Sequence[str],
        cwd: Path,
        env: Mapping[str, str] | None = None,
    ) -> LabProcess:
        log_path = self.workdir / f"{label}.log"
        log = _open_log(log_path)
        log.write(f"# {' '.join(argv)}\n")
        try:
            process = await asyncio.create_subprocess_exec(
                *self.argv(side, argv),
                cwd=cwd,
                env=None if env is None else dict(env),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        except BaseException:
            log.close()
            raise
        handle = LabProcess(label, process, log_path)
        handle.copier = asyncio.get_running_loop().create_task(_copy_output(handle, log))
        return handle

    async def _spawn_hop(self, hop: Hop, argv: Sequence[str], cwd: Path) -> LabProcess:
        handle = await self._spawn(hop.value, self.endpoints[hop].side, argv, cwd)
        self._processes[hop] = handle
        return handle

    async def _start_coredns(self, hop: Hop) -> None:
        endpoint = self.endpoints[hop]
        argv = [str(tool(COREDNS)), "-conf", "Corefile", "-dns.port", str(endpoint.port)]
        handle = await self._spawn_hop(hop, argv, self._hop_dir(hop))
        await self._until_ready(handle, handle.ready.wait())

    async def _start_tunnel(self) -> None:
        api = self.tunnel_api
        argv = [str(tool(TOXIPROXY)), "-host", api.host, "-port", str(api.port)]
        handle = await self._spawn_hop(Hop.TUNNEL, argv, self.workdir)

        async def serving() -> None:
            while True:
                try:
                    await self._tunnel_call(api.version)
                    break
                except OSError:
                    await asyncio.sleep(0.05)
            await self._tunnel_call(
                lambda: api.create_proxy(
                    TUNNEL_PROXY,
                    str(self.endpoints[Hop.TUNNEL]),
                    str(self.endpoints[Hop.AWS_RESOLVER]),
                )
            )

        await self._until_ready(handle, serving())
        if self._tunnel_cut and self.mode is Mode.LOOPBACK:
            await self.cut_tunnel()

    async def _until_ready(self, handle: LabProcess, ready: Awaitable[object]) -> None:
        exited = asyncio.ensure_future(handle.process.wait())
        waiting = asyncio.ensure_future(ready)
        try:
            done, _ = await asyncio.wait(
                {exited, waiting}, timeout=_START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for task in (exited, waiting):
                task.cancel()
            await asyncio.gather(exited, waiting, return_exceptions=True)
        if waiting in done and waiting.exception() is None:
            return
        if waiting in done:
            raise TopologyError(f"{handle.label}: {waiting.exception()}")
        if handle.copier is not None:
            await asyncio.wait({handle.copier}, timeout=1.0)
        tail = "\n".join(handle.log_path.read_text(encoding="utf-8").splitlines()[-20:])
        if exited in done:
            raise TopologyError(
                f"{handle.label} exited with {handle.process.returncode} before serving:\n{tail}"
            )
        raise TopologyError(f"{handle.label} was not serving after {_START_TIMEOUT} s:\n{tail}")

    async def _until_zone_serial(self, serial: int, wait: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        seen: object = None
        while loop.time() < deadline:
            try:
                answer = await self.query(Hop.ZONE, corefiles.ZONE, "SOA", time_limit=1.0)
                soa = answer.answer[0][0] if answer.answer else None
                if isinstance(soa, dns.rdtypes.ANY.SOA.SOA):
                    seen = soa.serial
                    if soa.serial == serial:
                        return
            except dns.exception.DNSException as error:
                seen = error
            await asyncio.sleep(0.1)
        raise TopologyError(f"the zone server still serves serial {seen}, not {serial}")


async def _copy_output(handle: LabProcess, log: IO[str]) -> None:
    stream = handle.process.stdout
    assert stream is not None
    try:
        while line := await stream.readline():
            text = line.decode(errors="replace")
            log.write(text)
            # CoreDNS prints its version once every server block listens.
            if text.startswith("CoreDNS-"):
                handle.ready.set()
    finally:
        log.close()


async def _terminate(handle: LabProcess) -> None:
    process = handle.process
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(_STOP_TIMEOUT):
                await process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    if handle.copier is not None:
        await handle.copier


def _write_atomically(path: Path, text: str) -> None:
    # CoreDNS re-reads the zone file on a timer: it must never see half a file.
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.tmp")
    scratch.write_text(text, encoding="utf-8")
    scratch.replace(path)


def _free_port(hosts: Sequence[str]) -> int:
    """A port free for both UDP and TCP on every one of ``hosts``."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((hosts[0], 0))
            port = int(probe.getsockname()[1])
        if all(_port_is_free(host, port) for host in hosts):
            return port
    raise TopologyError(f"no port free on all of {', '.join(hosts)}")


def _port_is_free(host: str, port: int) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                return False
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def remove_stale_namespaces() -> list[str]:
    """Delete lab namespaces whose creating process has died (after killing what runs in them).

    Only names this module makes (``brl<pid>x<n>-pod|azure|aws``) are touched.
    """
    removed = []
    for name in await netns.names():
        match = _STALE_NAMESPACE.match(name)
        if match is None or _pid_alive(int(match.group(1))):
            continue
        for pid in await netns.pids(name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        await netns.delete(name)
        removed.append(name)
    return removed


_counter = 0


async def _build_namespaces(namespaces: dict[Side, netns.Namespace], plan: AddressPlan) -> None:
    """Create the three namespaces into ``namespaces`` (filled as they appear) and wire them."""
    global _counter
    _counter += 1
    prefix = f"{_NAMESPACE_PREFIX}{os.getpid()}x{_counter}"
    for side in Side:
        namespaces[side] = await netns.create(f"{prefix}-{side.value}")
    for (left, left_if, left_cidr), (right, right_if, right_cidr) in (_VNET, _DIRECT, _VPN):
        await netns.link(
            namespaces[left], left_if, left_cidr, namespaces[right], right_if, right_cidr
        )
    for hop, host in plan.hosts.items():
        await netns.add_local_address(namespaces[_SIDES[hop]], host)
    for address in plan.relay_addresses:
        await netns.add_local_address(namespaces[Side.AWS], address)
    pod, azure, aws = namespaces[Side.POD], namespaces[Side.AZURE], namespaces[Side.AWS]
    await netns.route(pod, _AZURE_NET, _gateway(_VNET[1]))
    await netns.route(pod, _AWS_NET, _gateway(_DIRECT[1]))
    await netns.route(azure, _AWS_NET, _gateway(_VPN[1]))
    await netns.route(aws, _AZURE_NET, _gateway(_VPN[0]))


def choose_mode(mode: Mode | str = "auto") -> tuple[Mode, str]:
    """The mode to run in, and why."""
    reason = netns.unavailable_reason()
    if mode == "auto":
        if reason is None:
            return Mode.NETNS, "running as root: network namespaces"
        return Mode.LOOPBACK, f"{reason}: loopback addresses instead of namespaces"
    chosen = Mode(mode)
    if chosen is Mode.NETNS and reason is not None:
        raise TopologyError(f"netns mode needs root and iproute2: {reason}")
    return chosen, f"{chosen.value} mode as asked"


@asynccontextmanager
async def start_topology(
    mode: Mode | str = "auto",
    *,
    ttl: int = 5,
    soa_ttl: int = 5,
    relay_port: int = 50051,
    workdir: Path | None = None,
) -> AsyncIterator[Topology]:
    """Start the whole chain; end every process and delete every namespace on exit.

    ``ttl`` is relay's record TTL and ``soa_ttl`` the SOA's (how long NXDOMAIN may be
    cached); Route 53's defaults are 300 and 900, the lab's are short so that changes
    show within a test. relay's A records are the plan's ``relay_addresses``.
    """
    chosen, _ = choose_mode(mode)
    plan = NETNS_PLAN if chosen is Mode.NETNS else LOOPBACK_PLAN
    own_workdir = workdir is None
    directory = Path(tempfile.mkdtemp(prefix="bunnyrelay-dns-")) if workdir is None else workdir
    started = _Started(workdir=directory if own_workdir else None)
    _STARTED.add(started)
    try:
        if chosen is Mode.NETNS:
            await remove_stale_namespaces()
            await _build_namespaces(started.namespaces, plan)
            port, api_port = 53, 8474
        else:
            port = _free_port(list(plan.hosts.values()))
            api_port = _free_port([plan.tunnel_api])
        zone = ZoneContents(
            relay_addresses=plan.relay_addresses,
            relay_ports=(relay_port,),
            ttl=ttl,
            soa_ttl=soa_ttl,
        )
        started.topology = Topology(
            mode=chosen,
            workdir=directory,
            plan=plan,
            port=port,
            api_port=api_port,
            zone=zone,
            namespaces=started.namespaces,
        )
        started.topology.write_configuration()
        await started.topology.start_all()
        yield started.topology
    finally:
        await _despite_cancellation(_clean_up(started))
        _STARTED.discard(started)


@dataclass(eq=False)
class _Started:
    """What one :func:`start_topology` has made so far, for the clean-up."""

    workdir: Path | None
    """Removed at the end (None: the caller's, kept)."""
    namespaces: dict[Side, netns.Namespace] = field(default_factory=dict)
    topology: Topology | None = None


# Every topology not yet cleaned up, for the last resort at interpreter exit (a test
# runner that stopped the event loop before the context could exit).
_STARTED: set[_Started] = set()


@atexit.register
def _clean_up_at_exit() -> None:
    for started in list(_STARTED):
        if started.topology is not None:
            for process in started.topology.processes():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
        for namespace in started.namespaces.values():
            subprocess.run(["ip", "netns", "delete", namespace.name], check=False)
            netns.remove_etc_files(namespace.name)
        if started.workdir is not None:
            shutil.rmtree(started.workdir, ignore_errors=True)


async def _despite_cancellation(work: Coroutine[Any, Any, None]) -> None:
    # A cancelled test must still leave nothing behind: finish the clean-up, then
    # let the cancellation go on.
    task = asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    task.result()
    if cancelled:
        raise asyncio.CancelledError


async def _clean_up(started: _Started) -> None:
    problems: list[str] = []
    if started.topology is not None:
        try:
            await started.topology.stop_all()
        except Exception as error:
            problems.append(str(error))
    for namespace in started.namespaces.values():
        try:
            # Anything still inside (a client a test started there) is ended too.
            for pid in await netns.pids(namespace.name):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            await netns.delete(namespace.name)
        except Exception as error:
            problems.append(str(error))
    if started.workdir is not None:
        shutil.rmtree(started.workdir, ignore_errors=True)
    if problems:
        raise TopologyError("cleaning up: " + "; ".join(problems))
