"""`make fleet`: what a fleet of bunny pods costs the VPN tunnel in DNS queries.

Every pod of a bunny Deployment resolves ``relay.private.aws.internal`` with its
own resolver and cache, and every query its cluster DNS cannot answer from cache
crosses the tunnel to the AWS resolver's inbound endpoint, which every pod of the
cluster shares (Route 53 Resolver: about 10,000 queries/s per endpoint address).
This runs such a fleet against the lab's chain of real CoreDNS processes
(:mod:`lab.topology`) and counts the queries the AWS resolver receives, which are
exactly those that crossed the tunnel (the forwarder keeps no cache).

Each client is what one bunny pod runs: bunny's :class:`~bunny.dns.resolver.Resolver`
with a pod's resolv.conf (``ndots:5``, three search domains), a
:class:`~bunny.relaypool.RelayPool` and a :class:`~bunny.submitter.UnarySubmitter`,
sending real jobs to one relay at a steady rate. Clients share this process (one
event loop, in the pod's network namespace) but nothing else. Each phase starts a
new fleet, lets it settle for a warm-up (the first lookups of a new fleet all
miss together), then counts over a window (by default four TTLs).

The matrix: clients x job rate per client x how bunny names relay (as written,
which ``ndots:5`` expands through the search list, or with a trailing dot) x the
cluster DNS's cache (as shipped in ``private-aws-internal.server``, or removed) x
bunny's own cache (as it is, or off: what a client without one would send).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import re
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bunny.dns.resolver import Resolver
from bunny.dns.settings import ResolverSettings
from bunny.relaypool import RelayPool
from bunny.submitter import SubmitSettings, UnarySubmitter
from bunny.tracing import BunnyTelemetry
from bunnyrelay.settings import HostPort
from bunnyrelay.v1 import jobs_pb2
from lab.tools import ToolMissingError, tool
from lab.topology import (
    RELAY_NAME,
    Hop,
    LabProcess,
    Side,
    Topology,
    TopologyError,
    start_topology,
)

DEFAULT_CLIENTS = (1, 10, 100)
DEFAULT_RATES = (1.0, 5.0)
DEFAULT_TTL = 5
"""The zone's TTL here. Route 53's default is 300 s; a short one gives several
expiries per window, and every figure is also given per TTL."""
DEFAULT_TUNNEL_LATENCY_MS = 20
"""Added to every answer crossing the tunnel: a VPN between two clouds' regions is
tens of milliseconds long, and the longer it is the more queries overlap a miss."""
MAX_IN_FLIGHT = 32
"""Jobs one client lets run at once; a job due while that many run is skipped and counted."""
_RELAY_READY_S = 30.0

# A CoreDNS log plugin line: ... "A IN relay.private.aws.internal. tcp 55 false 65535" NOERROR ...
_LOGGED_QUERY = re.compile(r'"(\S+) IN (\S+?)\.? (?:udp|tcp) ')


@dataclass(frozen=True, slots=True)
class Phase:
    """One cell of the matrix."""

    clients: int
    rate: float
    """Jobs per second per client."""
    trailing_dot: bool
    """bunny is given ``relay.private.aws.internal.``: one candidate, no search list."""
    cluster_cache: bool
    """The conditional forward's ``cache`` as shipped (False: removed)."""
    bunny_cache: bool = True
    """bunny's own cache as it is (False: ``max_ttl`` 0, so every job asks, as a client
    that resolves per call without a cache of its own would)."""

    @property
    def naming(self) -> str:
        return "trailing dot" if self.trailing_dot else "ndots:5"


@dataclass(slots=True)
class Tally:
    """Jobs of one phase, as they end."""

    ok: int = 0
    failed: int = 0
    skipped: int = 0
    errors: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class PhaseResult:
    phase: Phase
    window_s: float
    ttl: int
    jobs_ok: int
    jobs_failed: int
    jobs_skipped: int
    pod_queries: int
    """Queries the cluster DNS received from the pods in the window."""
    tunnel: dict[str, int]
    """Queries that crossed the tunnel in the window, by ``TYPE name``."""
    errors: dict[str, int]

    @property
    def tunnel_total(self) -> int:
        return sum(self.tunnel.values())

    @property
    def tunnel_per_s(self) -> float:
        return self.tunnel_total / self.window_s

    @property
    def worst_per_ttl(self) -> float:
        """The most a single name and type crossed, per TTL of the window."""
        most = max(self.tunnel.values(), default=0)
        return most * self.ttl / self.window_s

    @property
    def jobs_per_s(self) -> float:
        return self.jobs_ok / self.window_s

    def as_dict(self) -> dict[str, object]:
        return {
            **asdict(self),
            "tunnel_per_s": round(self.tunnel_per_s, 3),
            "worst_per_ttl": round(self.worst_per_ttl, 3),
            "jobs_per_s": round(self.jobs_per_s, 1),
        }


def logged_queries(text: str) -> Counter[str]:
    """``TYPE name`` of every query in CoreDNS ``log`` lines (a cut-off last line is not one)."""
    counts: Counter[str] = Counter()
    for line in text.splitlines():
        match = _LOGGED_QUERY.search(line)
        if match:
            counts[f"{match.group(1)} {match.group(2).lower()}"] += 1
    return counts


class _LogWindow:
    """What a hop's log gains between :meth:`start` and :meth:`stop`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._start = 0
        self._end = 0

    def _size(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def start(self) -> None:
        self._start = self._size()

    def stop(self) -> None:
        self._end = self._size()

    def text(self) -> str:
        with self.path.open("rb") as log:
            log.seek(self._start)
            return log.read(self._end - self._start).decode(errors="replace")


async def _one_client(
    *,
    settings: ResolverSettings,
    name: str,
    port: int,
    rate: float,
    stop_at: float,
    tally: Tally,
    telemetry: BunnyTelemetry,
    rng: random.Random,
) -> None:
    """One pod: its own resolver, cache and channel, a job every 1/rate seconds until stop_at."""
    resolver = telemetry.dns.wrap(Resolver(settings))
    pool = RelayPool(resolver, name, port)
    submitter = UnarySubmitter(pool, SubmitSettings(timeout_s=10.0), telemetry)
    loop = asyncio.get_running_loop()
    running: set[asyncio.Task[None]] = set()

    async def job() -> None:
        request = jobs_pb2.JobRequest(job_id=str(uuid.uuid4()), kind="echo", payload=b"fleet")
        outcome = await submitter.run(request)
        if outcome.ok:
            tally.ok += 1
        else:
            tally.failed += 1
            tally.errors[outcome.error.type if outcome.error else "unknown"] += 1

    interval = 1.0 / rate
    # Pods do not start in step: each begins at a random point of its first interval.
    due = loop.time() + rng.uniform(0.0, interval)
    try:
        while due < stop_at:
            await asyncio.sleep(max(due - loop.time(), 0.0))
            due += interval
            if len(running) >= MAX_IN_FLIGHT:
                tally.skipped += 1
                continue
            task = loop.create_task(job())
            running.add(task)
            task.add_done_callback(running.discard)
        if running:
            await asyncio.wait(running, timeout=15.0)
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        await submitter.close()
        await pool.close(grace=0)
        await resolver.close()


async def _run_fleet(
    phase: Phase,
    *,
    topology: Topology,
    relay_port: int,
    warmup_s: float,
    window_s: float,
    seed: int,
) -> tuple[Tally, Tally, _LogWindow, _LogWindow]:
    """Inside the pod: run the fleet; the tallies at the window's start and end, and the logs."""
    cluster_dns = topology.cluster_dns
    # The pod's resolv.conf as kubelet writes it; the nameserver named too, for the
    # loopback mode's port, which resolv.conf cannot carry.
    settings = ResolverSettings.from_sources(
        resolv_conf=str(topology.resolv_conf),
        nameservers=[HostPort(cluster_dns.host, cluster_dns.port)],
        ndots=None,
        max_ttl=None if phase.bunny_cache else 0,
    )
    name = RELAY_NAME + ("." if phase.trailing_dot else "")
    telemetry = BunnyTelemetry()
    tally = Tally()
    tunnel = _LogWindow(topology.workdir / f"{Hop.AWS_RESOLVER.value}.log")
    pods = _LogWindow(topology.workdir / f"{Hop.CLUSTER_DNS.value}.log")
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + warmup_s + window_s
    clients = [
        loop.create_task(
            _one_client(
                settings=settings,
                name=name,
                port=relay_port,
                rate=phase.rate,
                stop_at=stop_at,
                tally=tally,
                telemetry=telemetry,
                rng=random.Random(rng.random()),
            )
        )
        for _ in range(phase.clients)
    ]
    try:
        await asyncio.sleep(warmup_s)
        tunnel.start()
        pods.start()
        before = Tally(tally.ok, tally.failed, tally.skipped, Counter(tally.errors))
        await asyncio.sleep(window_s)
        tunnel.stop()
        pods.stop()
        after = Tally(tally.ok, tally.failed, tally.skipped, Counter(tally.errors))
        await asyncio.gather(*clients)
    finally:
        for client in clients:
            client.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
    return before, after, tunnel, pods


async def run_phase(
    topology: Topology,
    phase: Phase,
    *,
    relay_port: int,
    ttl: int,
    warmup_s: float,
    window_s: float,
    seed: int = 1,
) -> PhaseResult:
    """Run one fleet with the cluster DNS's cache as ``phase`` says; count what crossed."""
    await topology.set_cluster_dns_cache(phase.cluster_cache)
    before, after, tunnel, pods = await topology.run_coroutine_in(
        Side.POD,
        lambda: _run_fleet(
            phase,
            topology=topology,
            relay_port=relay_port,
            warmup_s=warmup_s,
            window_s=window_s,
            seed=seed,
        ),
    )
    # The hops' lines reach their logs through this process's loop, a little late at
    # both ends of the window alike, so the count is that of a window as long.
    crossed = logged_queries(tunnel.text())
    asked = logged_queries(pods.text())
    return PhaseResult(
        phase=phase,
        window_s=window_s,
        ttl=ttl,
        jobs_ok=after.ok - before.ok,
        jobs_failed=after.failed - before.failed,
        jobs_skipped=after.skipped - before.skipped,
        pod_queries=sum(asked.values()),
        tunnel=dict(sorted(crossed.items())),
        errors=dict(after.errors - before.errors),
    )


async def until_relay_serves(
    topology: Topology, relay: LabProcess, address: str, port: int
) -> None:
    """Wait for relay's "listening" line, then until its health service says SERVING,
    asked from the pod.

    Only then is gRPC asked to connect: a connection refused while relay starts may be
    retried on one of gRPC's own threads, which need not be in the pod's network
    namespace (setns moves only the thread that calls it) and then never reach relay.
    Each check has a channel of its own for the same reason, so that its connection is
    first tried from the calling thread, inside the namespace.
    """
    deadline = time.monotonic() + _RELAY_READY_S
    while "relay listening on" not in relay.log_path.read_text():
        if relay.process.returncode is not None or time.monotonic() > deadline:
            raise TopologyError(f"relay did not start:\n{_tail(relay.log_path)}")
        await asyncio.sleep(0.05)

    async def ask() -> bool:
        async with grpc.aio.insecure_channel(f"{address}:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
            except grpc.aio.AioRpcError:
                return False
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    while not await topology.run_coroutine_in(Side.POD, ask):
        if time.monotonic() > deadline:
            raise TopologyError(
                f"relay at {address}:{port} not serving after {_RELAY_READY_S:g} s:\n"
                f"{_tail(relay.log_path)}"
            )
        await asyncio.sleep(0.1)


def _tail(log: Path, lines: int = 20) -> str:
    return "\n".join(log.read_text().splitlines()[-lines:])


async def start_relay(topology: Topology) -> tuple[str, int]:
    """One relay on the AWS side, and a zone that names only it; its address and port."""
    address, port = topology.relay_addresses[0], topology.zone.relay_ports[0]
    await topology.set_zone(relay_addresses=[address])
    argv = [
        sys.executable,
        "-m",
        "relay",
        "serve",
        "--listen",
        f"{address}:{port}",
        "--store",
        "memory",
    ]
    env = {**os.environ, "RELAY_STATE_DIR": str(topology.workdir / "relay-state")}
    relay = await topology.spawn(Side.AWS, "relay", argv, env=env)
    await until_relay_serves(topology, relay, address, port)
    return address, port


def table(results: Sequence[PhaseResult]) -> str:
    """The measured figures as a Markdown table."""
    rows = [
        "| clients | jobs/s per client | name | bunny cache | cluster DNS cache | jobs/s done "
        "| pod queries/s | tunnel queries/s | worst name+type per TTL | tunnel queries by type |",
        "| ---: | ---: | --- | --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for result in results:
        phase = result.phase
        by_type: Counter[str] = Counter()
        for key, count in result.tunnel.items():
            by_type[key.split(" ", 1)[0]] += count
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(by_type.items())) or "none"
        failed = f" ({result.jobs_failed} failed)" if result.jobs_failed else ""
        rows.append(
            f"| {phase.clients} | {phase.rate:g} | {phase.naming} "
            f"| {'on' if phase.bunny_cache else 'off'} "
            f"| {'on' if phase.cluster_cache else 'off'} | {result.jobs_per_s:.1f}{failed} "
            f"| {result.pod_queries / result.window_s:.1f} | {result.tunnel_per_s:.2f} "
            f"| {result.worst_per_ttl:.2f} | {kinds} |"
        )
    return "\n".join(rows)


def _numbers(text: str, kind: type[int] | type[float]) -> tuple[float, ...]:
    try:
        values = tuple(kind(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected numbers separated by commas"
        ) from None
    if not values or any(value <= 0 for value in values):
        raise argparse.ArgumentTypeError(f"{text!r}: every value must be more than 0")
    return values


def _choices(text: str, allowed: Sequence[str]) -> tuple[str, ...]:
    values = tuple(part.strip() for part in text.split(","))
    wrong = [value for value in values if value not in allowed]
    if wrong or not values:
        raise argparse.ArgumentTypeError(
            f"{', '.join(wrong) or text!r}: expected some of {', '.join(allowed)}"
        )
    return values


async def _main(args: argparse.Namespace) -> int:
    phases = [
        Phase(int(clients), rate, naming == "dot", cache == "on", own == "on")
        for own, cache, naming, clients, rate in itertools.product(
            args.bunny_cache, args.cache, args.naming, args.clients, args.rates
        )
    ]
    started = time.monotonic()
    results: list[PhaseResult] = []
    async with start_topology(args.mode, ttl=args.ttl, soa_ttl=args.ttl) as topology:
        if args.tunnel_latency_ms:
            await topology.set_tunnel_latency(args.tunnel_latency_ms)
        _, port = await start_relay(topology)
        print(f"{len(phases)} phases, about {len(phases) * (args.warmup + args.window + 2):.0f} s")
        for phase in phases:
            if time.monotonic() - started > args.max_seconds:
                print(f"stopped after {args.max_seconds:g} s (--max-seconds)", file=sys.stderr)
                break
            result = await run_phase(
                topology,
                phase,
                relay_port=port,
                ttl=args.ttl,
                warmup_s=args.warmup,
                window_s=args.window,
            )
            results.append(result)
            print(table([result]).splitlines()[-1], flush=True)
    print()
    print(
        f"TTL {args.ttl} s, tunnel latency {args.tunnel_latency_ms} ms, "
        f"warm-up {args.warmup:g} s, window {args.window:g} s"
    )
    print(table(results))
    if args.json:
        text = json.dumps([result.as_dict() for result in results], indent=2) + "\n"
        await asyncio.to_thread(Path(args.json).write_text, text, encoding="utf-8")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lab.fleet",
        description="Count the DNS queries a fleet of bunny clients sends across the tunnel.",
    )
    parser.add_argument(
        "--clients",
        type=lambda text: _numbers(text, int),
        default=DEFAULT_CLIENTS,
        help="fleet sizes, comma-separated (default: 1,10,100)",
    )
    parser.add_argument(
        "--rates",
        type=lambda text: _numbers(text, float),
        default=DEFAULT_RATES,
        help="jobs per second per client, comma-separated (default: 1,5)",
    )
    parser.add_argument(
        "--naming",
        type=lambda text: _choices(text, ("ndots", "dot")),
        default=("ndots", "dot"),
        help="ndots: relay's name as written (ndots:5 expands it); dot: with a trailing dot",
    )
    parser.add_argument(
        "--cache",
        type=lambda text: _choices(text, ("on", "off")),
        default=("on", "off"),
        help="the cluster DNS's cache: on (as shipped), off (removed); default: on,off",
    )
    parser.add_argument(
        "--bunny-cache",
        type=lambda text: _choices(text, ("on", "off")),
        default=("on",),
        help="bunny's own cache: on (default), off (every job asks the cluster DNS)",
    )
    parser.add_argument("--ttl", type=int, default=DEFAULT_TTL, help="relay's record TTL (s)")
    parser.add_argument(
        "--tunnel-latency-ms",
        type=int,
        default=DEFAULT_TUNNEL_LATENCY_MS,
        help=f"latency added across the tunnel (default: {DEFAULT_TUNNEL_LATENCY_MS})",
    )
    parser.add_argument(
        "--warmup", type=float, default=2 * DEFAULT_TTL, help="seconds before counting"
    )
    parser.add_argument(
        "--window", type=float, default=4 * DEFAULT_TTL, help="seconds counted per phase"
    )
    parser.add_argument(
        "--max-seconds", type=float, default=1200.0, help="stop starting phases after this"
    )
    parser.add_argument("--mode", choices=["auto", "netns", "loopback"], default="auto")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.ttl < 1 or args.warmup < 0 or args.window <= 0 or args.tunnel_latency_ms < 0:
        parser.error("--ttl and --window must be positive, --warmup and the latency at least 0")
    try:
        tool("coredns")
        tool("toxiproxy-server")
        return asyncio.run(_main(args))
    except (ToolMissingError, TopologyError) as error:
        print(f"make fleet: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
