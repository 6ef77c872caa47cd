"""DNS lookups: bunny's resolver against bare aiodns, dnspython and getaddrinfo.

All of them ask the same DNS server for A records only, one question per lookup
(bunny with ``family=ipv4`` so that it sends what the others send): CoreDNS serving
the bench zone (:func:`lab.bench.zone.coredns_zone`, the ``template``
plugin, in a process of its own) unless ``--nameserver`` names another. A server in
Python would cap lookups/s for every client alike; CoreDNS answers on every core.

- **cached**: the same name again and again. bunny answers from its own cache,
  either through ``cached()`` (the fast path: no span, no await) or through
  ``resolve()`` (a ``dns.lookup`` span per call); aiodns from c-ares' query cache;
  dnspython from a ``dns.resolver.Cache``.
- **uncached**: every lookup asks a name no one has asked before
  (``n<i>.bench.internal``, a fresh resolver per method), so every lookup reaches
  the wire: c-ares keeps a cache of its own per channel and would otherwise
  answer a repeated name from memory.
- **the floor**: aiodns as bunny runs it (on the event loop, no c-ares thread)
  plus one exported ``dns.lookup`` span and the ``dns.lookup.duration``
  histogram, the least a traced lookup can do, its span made by the SDK's own
  tracer provider as the Python SDK comes (bunny's rows trace through the provider
  bunny's command line makes, whose sampled spans are light); its ratios
  are printed beside the targets, which a traced resolver can meet only where the
  floor does.
- **getaddrinfo** goes through the system resolver (glibc, nsswitch), which
  cannot be pointed at the bench zone; it is measured for ``localhost`` from
  /etc/hosts only, as a floor for what a thread-pool lookup costs, not as a
  DNS client.

Latency is one lookup at a time (the median is the figure compared); lookups/s
and CPU per lookup come from a run with ``--concurrency`` lookups in flight. The
uncached lookups run in ``--rounds`` rounds, each method in turn within a round, and
the targets' ratios are taken within each round, then their median (with the lowest
and highest) reported: on a shared machine the speed drifts between rows run one
after the other by more than the differences measured. The
traced resolver records every span (``always_on``) and exports it over OTLP when
``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, as bunny does; the untraced one uses the
``always_off`` sampler. The exporter is flushed before and after each measured run,
so a row's CPU per lookup includes exporting its own spans and no other row's.

Prints one JSON object (``--json``) or a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiodns
import dns.asyncresolver
import dns.resolver
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from bunny.config import BunnyConfig
from bunny.dns.ares import LoopDrivenResolver
from bunny.dns.resolver import Resolver
from bunny.dns.settings import ResolverSettings
from bunny.dns.tracing import DnsTelemetry, TracedResolver
from bunny.loadgen import percentile
from bunnyrelay import semconv
from bunnyrelay.histograms import HotHistogram
from bunnyrelay.settings import HostPort, parse_ip_port
from bunnyrelay.telemetry import setup_telemetry
from lab.bench.report import target_row
from lab.bench.rounds import Spread, ratio
from lab.bench.zone import CACHED_NAME, coredns_zone, numbered

Lookup = Callable[[int], Awaitable[object]]
"""Looks up the name with this index (uncached) or the cached name (index ignored)."""

CACHED_TARGET_US = 2.0
TRACED_VS_AIODNS_MAX = 1.3
TRACED_VS_FLOOR_CPU_MAX = 1.2
"""A traced uncached lookup's CPU against the floor's (the least any traced lookup costs)."""


@dataclass(frozen=True, slots=True)
class DnsBenchSettings:
    """How many lookups of each kind."""

    warm: int = 50
    """Lookups per method before anything is measured (uncached names of their own)."""
    lookups: int = 1000
    """Uncached lookups one at a time, per method (latency)."""
    throughput_lookups: int = 4000
    """Uncached lookups with ``concurrency`` in flight, per method (lookups/s, CPU)."""
    cached_lookups: int = 20000
    """Repeated lookups of one name, per method."""
    concurrency: int = 32
    rounds: int = 5
    """The uncached lookups are split into this many rounds of every method in turn."""


@dataclass(frozen=True, slots=True)
class Row:
    group: str
    """``cached`` or ``uncached``."""
    method: str
    p50_us: float | None
    mean_us: float | None
    p99_us: float | None
    lookups_per_s: float | None
    cpu_us_per_lookup: float | None
    failed: int
    note: str = ""

    def as_dict(self) -> dict[str, object]:
        def r(value: float | None) -> float | None:
            return None if value is None else round(value, 2)

        return {
            "group": self.group,
            "method": self.method,
            "p50_us": r(self.p50_us),
            "mean_us": r(self.mean_us),
            "p99_us": r(self.p99_us),
            "lookups_per_s": r(self.lookups_per_s),
            "cpu_us_per_lookup": r(self.cpu_us_per_lookup),
            "failed": self.failed,
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class RoundFigures:
    """One method's figures in one round of the uncached run."""

    p50_us: float | None
    lookups_per_s: float
    cpu_us_per_lookup: float


@dataclass
class _Method:
    """An uncached lookup method, with its own run of never-asked names."""

    key: str
    label: str
    lookup: Lookup
    next_index: int = 0
    failed: int = 0
    latencies_us: list[float] = field(default_factory=list)
    rounds: list[RoundFigures] = field(default_factory=list)

    def take(self, count: int) -> range:
        """The next ``count`` name indexes: a method never asks a name twice."""
        start = self.next_index
        self.next_index += count
        return range(start, self.next_index)


def uncached_ratios(
    rounds: Mapping[str, Sequence[RoundFigures]],
) -> tuple[Spread | None, Spread | None, Spread | None]:
    """The targets' three ratios, each taken within a round, then over the rounds:
    traced p50 / bare aiodns p50, traced lookups/s / dnspython's, and dnspython's CPU
    per lookup / traced. The machine's drift between rounds cancels out of a ratio
    taken within one; a ratio of figures from different rounds would keep it."""
    traced, bare, python = rounds["bunny.traced"], rounds["aiodns"], rounds["dnspython"]
    latency = Spread.of(ratio(t.p50_us, b.p50_us) for t, b in zip(traced, bare, strict=True))
    throughput = Spread.of(
        ratio(t.lookups_per_s, p.lookups_per_s) for t, p in zip(traced, python, strict=True)
    )
    # Client and server share the machine's cores; what a client could do on a core
    # of its own is 1 / its CPU per lookup.
    cpu_bound = Spread.of(
        ratio(p.cpu_us_per_lookup, t.cpu_us_per_lookup) for t, p in zip(traced, python, strict=True)
    )
    return latency, throughput, cpu_bound


def _median(values: Sequence[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return statistics.median(known) if known else None


@dataclass
class _Timing:
    latencies_us: list[float]
    failed: int

    def stats(self) -> tuple[float | None, float | None, float | None]:
        ordered = sorted(self.latencies_us)
        if not ordered:
            return None, None, None
        return percentile(ordered, 50), sum(ordered) / len(ordered), percentile(ordered, 99)


async def _one_at_a_time(lookup: Lookup, indexes: range) -> _Timing:
    latencies: list[float] = []
    failed = 0
    clock = time.perf_counter
    for index in indexes:
        started = clock()
        try:
            await lookup(index)
        except Exception:
            failed += 1
            continue
        latencies.append((clock() - started) * 1e6)
    return _Timing(latencies, failed)


async def _in_flight(
    lookup: Lookup, indexes: range, concurrency: int, settle: Callable[[], object]
) -> tuple[float, float, int]:
    """(lookups per second, CPU µs per lookup, failures) with ``concurrency`` in flight.

    ``settle()`` exports the spans still queued: once before (another row's), untimed,
    and once after, charged to this row's CPU.
    """
    todo = iter(indexes)
    failed = 0

    async def worker() -> None:
        nonlocal failed
        for index in todo:
            try:
                await lookup(index)
            except Exception:
                failed += 1

    settle()
    cpu_before, started = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    settle()
    cpu = time.process_time() - cpu_before
    done = len(indexes) - failed
    return done / elapsed, cpu / max(done, 1) * 1e6, failed


def _checked(addresses: Sequence[str]) -> None:
    if not addresses:
        raise LookupError("no addresses in the answer")


class DnsBench:
    """Runs every method and keeps one :class:`Row` per method, keyed for the targets."""

    def __init__(self, nameserver: HostPort, settings: DnsBenchSettings) -> None:
        self.nameserver = nameserver
        self.settings = settings
        self.rows: dict[str, Row] = {}
        self._rounds: dict[str, list[RoundFigures]] = {}
        # bunny's rows trace as bunny's command line sets it up (its keeping provider, whose
        # sampled spans are light); the floor traces with the SDK's own provider, as any
        # service does that uses the Python SDK as it comes, like the job benchmark's floor.
        telemetry = setup_telemetry(
            "bunny", install_global=False, keep=BunnyConfig().keep_settings()
        )
        self._traced = telemetry
        self.exported = telemetry.exporting
        self._dns_traced = DnsTelemetry(
            tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
        )
        self._floor = setup_telemetry("bunny", install_global=False)
        self._untraced = TracerProvider(sampler=ALWAYS_OFF)
        self._meters = MeterProvider()
        self._dns_untraced = DnsTelemetry(
            tracer_provider=self._untraced, meter_provider=self._meters
        )

    def _resolver(self, traced: bool) -> TracedResolver:
        settings = ResolverSettings(nameservers=(self.nameserver,), family="ipv4")
        telemetry = self._dns_traced if traced else self._dns_untraced
        return telemetry.wrap(Resolver(settings))

    def _settle(self) -> None:
        """Export the spans queued so far, so that each row pays for its own.

        Without it the traced cache-hit row's thousands of spans would be exported
        while a later row is measured, and counted as that row's CPU.
        """
        self._traced.tracer_provider.force_flush()
        self._floor.tracer_provider.force_flush()

    def _tracing(self, traced: bool) -> str:
        if not traced:
            return "tracing off"
        return "traced, exported" if self.exported else "traced"

    def _aiodns(self) -> aiodns.DNSResolver:
        # As bunny's channels are made: one server, one try, the same timeout.
        return aiodns.DNSResolver(
            nameservers=[str(self.nameserver)],
            loop=asyncio.get_running_loop(),
            tries=1,
            timeout=2.0,
        )

    def _dnspython(self, *, cache: bool) -> dns.asyncresolver.Resolver:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [self.nameserver.host]
        resolver.port = self.nameserver.port
        resolver.lifetime = 4.0
        if cache:
            resolver.cache = dns.resolver.Cache()
        return resolver

    # --- cached ----------------------------------------------------------------------

    async def cached(self) -> None:
        count = self.settings.cached_lookups
        for traced in (True, False):
            resolver = self._resolver(traced)
            try:
                await resolver.resolve(CACHED_NAME)
                if traced:
                    self._fast_path(resolver, count * 10)

                async def hit(_: int, r: TracedResolver = resolver) -> object:
                    resolution = await r.resolve(CACHED_NAME)
                    return resolution.addresses

                await self._cached_row(
                    "bunny.hit.traced" if traced else "bunny.hit.off",
                    f"bunny resolve(), cache hit, {self._tracing(traced)}",
                    hit,
                    count,
                )
            finally:
                await resolver.close()

        ares = self._aiodns()
        try:

            async def ares_hit(_: int) -> object:
                return await ares.query_dns(CACHED_NAME, "A")

            await ares_hit(0)
            await self._cached_row(
                "aiodns.hit", "aiodns query_dns, c-ares cache hit", ares_hit, count // 4
            )
        finally:
            await ares.close()

        python = self._dnspython(cache=True)

        async def python_hit(_: int) -> object:
            return await python.resolve(CACHED_NAME + ".", "A")

        await python_hit(0)
        await self._cached_row(
            "dnspython.hit", "dnspython resolve, dns.resolver.Cache hit", python_hit, count // 4
        )

        loop = asyncio.get_running_loop()

        async def system(_: int) -> object:
            return await loop.getaddrinfo(
                "localhost", None, family=socket.AF_INET, type=socket.SOCK_STREAM
            )

        await system(0)
        await self._cached_row(
            "getaddrinfo.hosts",
            "getaddrinfo('localhost'), system resolver",
            system,
            max(count // 10, 1),
            note="/etc/hosts through glibc in a thread pool; it cannot ask the bench zone",
        )

    def _fast_path(self, resolver: TracedResolver, count: int) -> None:
        cached = resolver.cached
        name = CACHED_NAME
        misses = 0
        started = time.perf_counter()
        for _ in range(count):
            if cached(name) is None:
                misses += 1
        per = (time.perf_counter() - started) / count * 1e6
        self.rows["bunny.fast"] = Row(
            "cached",
            "bunny cached() fast path (no span, no await)",
            None,
            per,
            None,
            1e6 / per,
            per,
            misses,
            note="the mean of one timed loop: a clock read per call would cost more than the call",
        )

    async def _cached_row(
        self, key: str, method: str, lookup: Lookup, count: int, note: str = ""
    ) -> None:
        timing = await _one_at_a_time(lookup, range(count))
        p50, mean, p99 = timing.stats()
        self._settle()
        cpu_before, started = time.process_time(), time.perf_counter()
        again = await _one_at_a_time(lookup, range(count))
        elapsed = time.perf_counter() - started
        self._settle()
        cpu = time.process_time() - cpu_before
        done = max(len(again.latencies_us), 1)
        self.rows[key] = Row(
            "cached",
            method,
            p50,
            mean,
            p99,
            done / elapsed,
            cpu / done * 1e6,
            timing.failed + again.failed,
            note,
        )

    # --- uncached ----------------------------------------------------------------------

    async def uncached(self) -> None:
        traced, untraced = self._resolver(True), self._resolver(False)
        ares = self._aiodns()
        # The floor asks as bunny's resolver does (aiodns on the event loop, no c-ares
        # thread): what a traced lookup must add is then measured against the cheapest
        # query there is, not against aiodns' thread hand-over.
        floor_ares = LoopDrivenResolver(
            nameservers=[str(self.nameserver)],
            loop=asyncio.get_running_loop(),
            tries=1,
            timeout=2.0,
        )
        python = self._dnspython(cache=False)
        try:

            async def bunny_traced(index: int) -> object:
                resolution = await traced.resolve(numbered(index))
                _checked(resolution.addresses)
                return resolution

            async def bunny_off(index: int) -> object:
                resolution = await untraced.resolve(numbered(index))
                _checked(resolution.addresses)
                return resolution

            async def bare(index: int) -> object:
                result = await ares.query_dns(numbered(index), "A")
                if not result.answer:
                    raise LookupError("no answer")
                return result

            async def dnspython(index: int) -> object:
                return await python.resolve(numbered(index) + ".", "A")

            tracer = self._floor.tracer_provider.get_tracer("lab.bench.dnsbench")
            # The duration histogram as bunny records it (bunnyrelay.histograms).
            record = HotHistogram(
                self._floor.meter_provider.get_meter("lab.bench.dnsbench"),
                semconv.METRIC_DNS_LOOKUP_DURATION,
                unit="s",
                description="How long a DNS lookup took",
            ).record

            async def floor(index: int) -> object:
                # The least a traced lookup can pay: the query, one exported span with the
                # question on it and the conventions' duration histogram.
                name = numbered(index)
                started = time.monotonic()
                span = tracer.start_span(
                    semconv.SPAN_DNS_LOOKUP, attributes={semconv.DNS_QUESTION_NAME: name}
                )
                try:
                    result = await floor_ares.query_dns(name, "A")
                finally:
                    span.end()
                    record(name, {semconv.DNS_QUESTION_NAME: name}, time.monotonic() - started)
                if not result.answer:
                    raise LookupError("no answer")
                return result

            await self._uncached_rows(
                [
                    _Method(
                        "bunny.traced", f"bunny resolve(), {self._tracing(True)}", bunny_traced
                    ),
                    _Method("bunny.off", f"bunny resolve(), {self._tracing(False)}", bunny_off),
                    _Method("aiodns", "aiodns query_dns (bare)", bare),
                    _Method("dnspython", "dnspython async resolve", dnspython),
                    _Method(
                        "floor",
                        "the floor: aiodns on the loop + one exported span + the histogram",
                        floor,
                    ),
                ]
            )
        finally:
            await traced.close()
            await untraced.close()
            await ares.close()
            await floor_ares.close()
        self.rows["getaddrinfo"] = Row(
            "uncached",
            "getaddrinfo",
            None,
            None,
            None,
            None,
            None,
            0,
            note="not measured: the system resolver cannot be pointed at the bench zone",
        )

    async def _uncached_rows(self, methods: Sequence[_Method]) -> None:
        """Every method in turn, round after round, so that the machine's drift (large
        on a shared VM) falls on all of them alike; a ratio is taken within a round."""
        s = self.settings
        rounds = max(1, s.rounds)
        per_round = max(1, s.lookups // rounds)
        in_flight_per_round = max(s.concurrency, s.throughput_lookups // rounds)
        for method in methods:
            method.failed += (await _one_at_a_time(method.lookup, method.take(s.warm))).failed
        for _ in range(rounds):
            for method in methods:
                timing = await _one_at_a_time(method.lookup, method.take(per_round))
                rate, cpu, failed = await _in_flight(
                    method.lookup, method.take(in_flight_per_round), s.concurrency, self._settle
                )
                method.latencies_us.extend(timing.latencies_us)
                method.failed += timing.failed + failed
                sorted_round = sorted(timing.latencies_us)
                method.rounds.append(
                    RoundFigures(
                        percentile(sorted_round, 50) if sorted_round else None,
                        rate,
                        cpu,
                    )
                )
        for method in methods:
            p50, mean, p99 = _Timing(method.latencies_us, method.failed).stats()
            self.rows[method.key] = Row(
                "uncached",
                method.label,
                p50,
                mean,
                p99,
                _median([r.lookups_per_s for r in method.rounds]),
                _median([r.cpu_us_per_lookup for r in method.rounds]),
                method.failed,
            )
            self._rounds[method.key] = method.rounds

    # --- the performance targets these numbers are held to ----------------------------

    def targets(self) -> list[dict[str, object]]:
        rows = self.rows
        fast, hit = rows["bunny.fast"], rows["bunny.hit.traced"]
        out: list[dict[str, object]] = []

        def add(
            what: str, value: float | None, goal: str, met: bool | None, spread: Spread | None
        ) -> None:
            out.append(target_row(what, value, goal, met, spread))

        met = None if fast.mean_us is None else fast.mean_us < CACHED_TARGET_US
        add(
            "cached lookup via cached(), mean µs",
            fast.mean_us,
            f"< {CACHED_TARGET_US:g}",
            met,
            None,
        )
        # Jobs take their address from cached(); a hit through resolve() makes a span.
        add("cached lookup via resolve() (traced), p50 µs", hit.p50_us, "-", None, None)
        latency, throughput, cpu_bound = uncached_ratios(self._rounds)
        floor_rounds = self._rounds["floor"]
        floor_latency = Spread.of(
            ratio(f.p50_us, b.p50_us)
            for f, b in zip(floor_rounds, self._rounds["aiodns"], strict=True)
        )
        floor_cpu = Spread.of(
            ratio(p.cpu_us_per_lookup, f.cpu_us_per_lookup)
            for f, p in zip(floor_rounds, self._rounds["dnspython"], strict=True)
        )
        traced_cpu = Spread.of(
            ratio(t.cpu_us_per_lookup, f.cpu_us_per_lookup)
            for t, f in zip(self._rounds["bunny.traced"], floor_rounds, strict=True)
        )
        judged: list[tuple[str, Spread | None, str, Callable[[float], bool] | None]] = [
            (
                "traced uncached latency / bare aiodns (p50)",
                latency,
                f"<= {TRACED_VS_AIODNS_MAX:g}x",
                lambda ratio: ratio <= TRACED_VS_AIODNS_MAX,
            ),
            (
                "traced uncached CPU per lookup / the floor's",
                traced_cpu,
                f"<= {TRACED_VS_FLOOR_CPU_MAX:g}x",
                lambda ratio: ratio <= TRACED_VS_FLOOR_CPU_MAX,
            ),
            ("traced uncached lookups/s / dnspython", throughput, "-", None),
            ("the same, CPU-bound (dnspython CPU per lookup / traced)", cpu_bound, "-", None),
        ]
        for what, spread, goal, passes in judged:
            if spread is None:
                add(what, None, goal, None, None)
            else:
                met = None if passes is None else passes(spread.median)
                add(what, spread.median, goal, met, spread)
        # The least any traced lookup can cost: a traced resolver can match these, not beat them.
        for what, spread in (
            (
                "the floor (aiodns on the loop + one exported span + the histogram): "
                "latency / bare aiodns",
                floor_latency,
            ),
            ("the floor: dnspython CPU per lookup / the floor's", floor_cpu),
        ):
            add(what, None if spread is None else spread.median, "-", None, spread)
        return out

    def close(self) -> None:
        self._traced.shutdown()
        self._floor.shutdown()
        self._untraced.shutdown()
        self._meters.shutdown()


@asynccontextmanager
async def _dns_server(nameserver: HostPort | None) -> AsyncIterator[tuple[HostPort, str]]:
    """The server to ask and what it is: ``nameserver``, or CoreDNS started for the run."""
    if nameserver is not None:
        yield nameserver, f"the DNS server at {nameserver}"
        return
    with tempfile.TemporaryDirectory(prefix="bunnyrelay-dnsbench-") as workdir:
        async with coredns_zone(Path(workdir)) as zone:
            yield zone.address, f"CoreDNS {zone.version} (template plugin), a process of its own"


async def run(
    settings: DnsBenchSettings,
    *,
    nameserver: HostPort | None = None,
    progress: Any = sys.stderr,
) -> dict[str, object]:
    """Every method against ``nameserver``, or against a CoreDNS of its own when None."""
    async with _dns_server(nameserver) as (address, server):
        print(f"dns bench: asking {server} on {address}", file=progress, flush=True)
        bench = DnsBench(address, settings)
        try:
            print("dns bench: cached lookups", file=progress, flush=True)
            await bench.cached()
            print("dns bench: uncached lookups", file=progress, flush=True)
            await bench.uncached()
            targets = bench.targets()
        finally:
            bench.close()
    return {
        "nameserver": str(address),
        "server": server,
        "exported": bench.exported,
        "settings": {
            "warm": settings.warm,
            "lookups": settings.lookups,
            "throughput_lookups": settings.throughput_lookups,
            "cached_lookups": settings.cached_lookups,
            "concurrency": settings.concurrency,
            "rounds": settings.rounds,
        },
        "rows": [row.as_dict() for row in bench.rows.values()],
        "targets": targets,
        "notes": [
            f"every client asks {server}, over UDP on loopback; a server in Python (the lab's "
            "ZoneServer) would cap lookups/s for every client alike, CoreDNS answers on every "
            "core",
            "every uncached lookup asks a name never asked before, so c-ares' own cache "
            "cannot answer it and each one reaches the server",
            "getaddrinfo uses the system resolver (/etc/hosts, glibc) and is only measured "
            "for localhost",
            "client and server share the machine's cores, so with lookups in flight CPU per "
            "lookup is the fairer comparison of clients; a traced row's CPU includes exporting "
            "its own spans (the exporter is flushed before and after each measured run)",
        ],
    }


def render(result: dict[str, Any]) -> str:
    def cell(value: object, spec: str) -> str:
        width = int(spec.split(".")[0].rstrip(",")) if spec[0].isdigit() else 0
        return f"{'-':>{width}}" if value is None else format(value, spec)

    lines = [
        f"{'':9} {'method':<48} {'p50 µs':>9} {'mean µs':>9} {'p99 µs':>9} "
        f"{'lookups/s':>10} {'CPU µs':>8} {'failed':>6}"
    ]
    for row in result["rows"]:
        lines.append(
            f"{row['group']:<9} {row['method']:<48} {cell(row['p50_us'], '9.1f')} "
            f"{cell(row['mean_us'], '9.2f')} {cell(row['p99_us'], '9.1f')} "
            f"{cell(row['lookups_per_s'], '10,.0f')} {cell(row['cpu_us_per_lookup'], '8.1f')} "
            f"{row['failed']:>6}" + (f"  ({row['note']})" if row["note"] else "")
        )
    return "\n".join(lines)


def arguments(settings: DnsBenchSettings) -> list[str]:
    """The command-line flags that give :func:`main` these settings."""
    return [
        "--warm",
        str(settings.warm),
        "--lookups",
        str(settings.lookups),
        "--throughput-lookups",
        str(settings.throughput_lookups),
        "--cached-lookups",
        str(settings.cached_lookups),
        "--concurrency",
        str(settings.concurrency),
        "--rounds",
        str(settings.rounds),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lab.bench.dnsbench",
        description="bunny's resolver against bare aiodns, dnspython and getaddrinfo.",
    )
    parser.add_argument(
        "--nameserver",
        help="IP:PORT of a server for the bench zone (default: start CoreDNS for the run)",
    )
    parser.add_argument("--warm", type=int, default=50)
    parser.add_argument("--lookups", type=int, default=1000)
    parser.add_argument("--throughput-lookups", type=int, default=4000)
    parser.add_argument("--cached-lookups", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--rounds", type=int, default=5, help="rounds of every uncached method in turn"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    settings = DnsBenchSettings(
        warm=args.warm,
        lookups=args.lookups,
        throughput_lookups=args.throughput_lookups,
        cached_lookups=args.cached_lookups,
        concurrency=args.concurrency,
        rounds=args.rounds,
    )
    nameserver = parse_ip_port(args.nameserver, default_port=53) if args.nameserver else None
    result = asyncio.run(run(settings, nameserver=nameserver))
    print(json.dumps(result) if args.json else render(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
