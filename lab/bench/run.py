"""``make bench``: every case of :mod:`.cases` in rounds, then the DNS benchmark, in one run.

Shared by all cases: a local OTLP receiver (in this process; it only counts
what it is sent) and the lab DNS server (:mod:`.zone`, a process of its own).
The DNS benchmark asks a CoreDNS of its own (:func:`.zone.coredns_zone`).
Per case: a fresh server process (relay, or the raw echo servicer), then one
client process (``bunny bench``, the raw client, or ghz) that runs the warm-up
and the measured window; the server's CPU time is read from /proc at the
client's window marks, its peak memory (VmHWM) before it is stopped.

Each round runs every case once, in order, so a baseline and the cases measured against it
are never far apart in time; the ratios are taken within a round (:mod:`.rounds`). Two cases
that name each other ``beside`` run at the same time (:attr:`.cases.Case.beside`).

    python -m lab.bench            # about 7 minutes; writes docs/benchmarks.md
    python -m lab.bench --quick    # a few seconds per case, once: a smoke run
    python -m lab.bench --rounds 5 --duration 10   # more rounds, longer windows
    python -m lab.bench --json     # one JSON object on stdout
    python -m lab.bench --dns-only --no-write   # only the DNS benchmark
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import json
import re
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from lab.bench import costs as job_costs
from lab.bench import dnsbench, ghz, procstat
from lab.bench.cases import CASES, Case, Dns, Protocol, Tracing, round_order
from lab.bench.children import run_client, serving
from lab.bench.dnsbench import DnsBenchSettings
from lab.bench.report import relay_targets, targets_text, text_table
from lab.bench.rounds import CaseResult, CaseRounds, combine_rounds
from lab.bench.writeup import hand_written_sections, markdown_document
from lab.bench.zone import CACHED_NAME, READY, UNCACHED_NAME, queries_so_far
from lab.otlpsink import OtlpSink
from lab.processes import relay_process

DOC = Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md"
_MODULES = {"raw": "rawecho", "floor": "floor", "peer": "peer"}
"""The module of each raw client and server kind: the bare pair, it with the
conventions' per-call telemetry (:mod:`.floor`), or with opentelemetry-instrumentation-grpc
(:mod:`.peer`)."""
_RAW_READY = re.compile(r"raw echo listening on (\S+):(\d+)")
_ZONE_READY = re.compile(re.escape(READY) + r" (\S+)")


@dataclass(frozen=True, slots=True)
class Plan:
    """How long, how hard and how many times each case runs."""

    duration_s: float = 6.0
    """Seconds measured per case and round: four rounds of every case with 6-second
    windows, plus the DNS benchmark and the costs, take about 15 minutes."""
    warmup_s: float = 1.0
    rounds: int = 4
    """How many times every case runs (one round: each case once, in order). Even, so that
    each pair of twins runs as often in one order as in the other (:func:`round_order`)."""
    concurrency: int = 64
    payload_bytes: int = 100
    dns: DnsBenchSettings | None = None
    """How many lookups the DNS benchmark makes; None: it does not run."""
    only: tuple[str, ...] = ()
    """Case keys to run (all when empty)."""
    dns_only: bool = False
    """Run no case, only the DNS benchmark."""
    costs: bool = True
    """Time the pieces of a job's path alone (:mod:`.costs`)."""
    quick: bool = False

    def cases(self) -> list[Case]:
        if self.dns_only:
            return []
        if not self.only:
            return list(CASES)
        unknown = set(self.only) - {c.key for c in CASES}
        if unknown:
            raise SystemExit(f"unknown case(s): {', '.join(sorted(unknown))}")
        return [c for c in CASES if c.key in self.only]


FULL = Plan(dns=DnsBenchSettings())
QUICK = Plan(
    duration_s=0.5,
    warmup_s=0.25,
    rounds=1,
    dns=DnsBenchSettings(
        warm=5,
        lookups=30,
        throughput_lookups=60,
        cached_lookups=500,
        concurrency=8,
    ),
    quick=True,
)


class _CountingSink(OtlpSink):
    """An OTLP receiver that only counts spans: decoding them is not what is measured."""

    def __init__(self) -> None:
        super().__init__()
        self.received = 0

    def add(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        self.received += sum(
            len(scope.spans) for rs in request.resource_spans for scope in rs.scope_spans
        )


def _otel_env(
    sink: OtlpSink, service: str, tracing: Tracing, protocol: Protocol = Protocol.GRPC
) -> dict[str, str]:
    if tracing is Tracing.NONE:
        return {}
    http = protocol is Protocol.HTTP
    return {
        "OTEL_SERVICE_NAME": service,
        "OTEL_EXPORTER_OTLP_ENDPOINT": sink.http_endpoint if http else sink.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol.value,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        **tracing.env(),
    }


@dataclass(frozen=True, slots=True)
class BenchResult:
    settings: dict[str, Any]
    results: list[CaseRounds]
    dns: dict[str, Any] | None
    """What the DNS benchmark printed (:func:`lab.bench.dnsbench.run`)."""
    costs: dict[str, dict[str, float]] | None = None
    """CPU µs per call of each piece of a job's path (:mod:`.costs`)."""

    @property
    def targets(self) -> list[dict[str, Any]]:
        """relay's own targets and the DNS ones (the jobs/s targets are in the table)."""
        return [*relay_targets(self.results), *((self.dns or {}).get("targets") or [])]

    def as_dict(self) -> dict[str, object]:
        return {
            "settings": self.settings,
            "cases": [r.as_dict() for r in self.results],
            "table": text_table(self.results) if self.results else "",
            "targets": self.targets,
            "dns": self.dns,
            "costs": self.costs,
        }


@dataclass
class _Server:
    pid: int
    port: int
    ready_s: float


class Bench:
    def __init__(self, plan: Plan, *, progress: TextIO) -> None:
        self.plan = plan
        self.progress = progress
        self.scratch = Path(tempfile.mkdtemp(prefix="bunnyrelay-bench-"))
        self.sink = _CountingSink()
        self.nameserver = ""
        self._zone: asyncio.subprocess.Process | None = None
        # The DNS server answers one question about its count at a time; two cases run
        # side by side both ask.
        self._zone_lock = asyncio.Lock()
        self._protoset: Path | None = None

    def say(self, text: str) -> None:
        print(f"bench: {text}", file=self.progress, flush=True)

    # --- servers ---------------------------------------------------------------------------

    @asynccontextmanager
    async def _server(self, case: Case) -> AsyncIterator[_Server]:
        if case.server in _MODULES:
            argv = [sys.executable, "-m", f"lab.bench.{_MODULES[case.server]}", "serve"]
            log = self.scratch / f"{case.server}-{case.key}.log"
            env = _otel_env(self.sink, f"{case.server}-server", case.tracing, case.protocol)
            async with serving(argv, ready=_RAW_READY, env=env, log_path=log) as raw:
                yield _Server(raw.pid, int(raw.ready.group(2)), raw.ready_s)
            return
        started = time.perf_counter()
        async with relay_process(
            "127.0.0.1:0",
            args=case.store.relay_args(),
            env=_otel_env(self.sink, "relay", case.tracing, case.protocol),
            log_path=self.scratch / f"relay-{case.key}.log",
        ) as relay:
            ready = time.perf_counter() - started
            try:
                yield _Server(relay.pid, relay.port, ready)
            finally:
                # SIGTERM, so that relay drains and flushes the spans it still holds.
                await relay.terminate()

    async def protoset(self) -> Path:
        """relay's descriptors from its reflection, fetched once (ghz needs them)."""
        if self._protoset is None:
            async with relay_process(
                "127.0.0.1:0", args=["--store", "memory"], log_path=self.scratch / "relay.log"
            ) as relay:
                data = await ghz.fetch_protoset(f"127.0.0.1:{relay.port}")
                await relay.terminate()
            self._protoset = self.scratch / "jobs.protoset"
            self._protoset.write_bytes(data)
        return self._protoset

    # --- one case --------------------------------------------------------------------------

    def _client_argv(self, case: Case, port: int) -> list[str]:
        plan = self.plan
        common = [
            "--duration",
            f"{plan.duration_s:g}",
            "--warmup",
            f"{plan.warmup_s:g}",
            "--concurrency",
            str(plan.concurrency),
            "--payload-bytes",
            str(plan.payload_bytes),
            "--json",
            *(["--stream"] if case.stream else []),
        ]
        if case.traceparent:
            common.append("--traceparent")
        if case.client in _MODULES:
            module = ["-m", f"lab.bench.{_MODULES[case.client]}", "load"]
            return [sys.executable, *module, "--target", f"127.0.0.1:{port}", *common]
        name = UNCACHED_NAME if case.dns is Dns.EVERY_JOB else CACHED_NAME
        return [
            sys.executable,
            "-m",
            "bunny",
            "bench",
            "--target",
            f"{name}:{port}",
            "--nameserver",
            self.nameserver,
            *common,
        ]

    async def run_case(self, case: Case) -> CaseResult:
        if case.client == "ghz":
            return await self._run_ghz(case)
        spans_before = self.sink.received
        async with self._server(case) as server:
            queries_before = await self._queries()
            run = await run_client(
                self._client_argv(case, server.port),
                env=_otel_env(self.sink, "bunny", case.tracing, case.protocol),
                watch=[server.pid],
                label=case.key,
                progress=self.progress,
                timeout=self.plan.duration_s + self.plan.warmup_s + 180,
            )
            server_peak = procstat.peak_rss_mb(server.pid)
            queries = await self._queries() - queries_before
        spans = self.sink.received - spans_before
        out = run.result
        succeeded = int(out["jobs"]) - int(out["failed"])
        all_jobs = int(out.get("all_jobs") or 0)
        traced = all_jobs > 0 and case.tracing is not Tracing.NONE
        resolved = all_jobs > 0 and case.dns is not Dns.NONE
        return CaseResult(
            case=case,
            jobs=int(out["jobs"]),
            failed=int(out["failed"]) + int(out.get("warmup_failed") or 0),
            jobs_per_s=float(out["jobs_per_s"]),
            p50_ms=out.get("p50_ms"),
            p99_ms=out.get("p99_ms"),
            client_cpu_us=out.get("cpu_us_per_job"),
            server_cpu_us=run.server_cpu_s[server.pid] / succeeded * 1e6 if succeeded else None,
            client_peak_mb=out.get("peak_rss_mb"),
            server_peak_mb=server_peak,
            server_ready_s=server.ready_s if case.server == "relay" else None,
            spans_per_job=spans / all_jobs if traced else None,
            dns_queries_per_job=queries / all_jobs if resolved else None,
            windowed=run.windowed,
            load_average=procstat.load_average()[0],
            errors=dict(out.get("errors") or {}),
        )

    async def _queries(self) -> int:
        if self._zone is None:
            return 0
        async with self._zone_lock:
            return await queries_so_far(self._zone)

    async def run_round(self, round_number: int, cases: Sequence[Case]) -> list[CaseResult]:
        """Round ``round_number``: its order of ``cases`` (:func:`round_order`), each alone,
        except two next to each other that name each other ``beside``: those at the same time."""
        order = round_order(cases, round_number)
        measured: list[CaseResult] = []
        at = 0
        while at < len(order):
            together = order[at : at + 2]
            if len(together) < 2 or together[0].beside != together[1].key:
                together = together[:1]
            for number, case in enumerate(together, at + 1):
                self.say(
                    f"[round {round_number}/{self.plan.rounds}] "
                    f"[{number}/{len(order)}] {case.label}"
                )
            measured += await asyncio.gather(*(self.run_case(case) for case in together))
            at += len(together)
        return measured

    async def _run_ghz(self, case: Case) -> CaseResult:
        protoset = await self.protoset()
        async with self._server(case) as server:
            children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            run = await run_client(
                ghz.command(
                    f"127.0.0.1:{server.port}",
                    protoset,
                    stream=case.stream,
                    duration_s=self.plan.duration_s,
                    concurrency=self.plan.concurrency,
                    payload_bytes=self.plan.payload_bytes,
                ),
                watch=[server.pid],
                label=case.key,
                progress=self.progress,
                timeout=self.plan.duration_s + 120,
            )
            children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
            server_peak = procstat.peak_rss_mb(server.pid)
        out = ghz.summary(run.result, stream=case.stream, jobs_per_call=self.plan.concurrency)
        succeeded = out.jobs - out.failed
        # ghz has exited and been waited for: the children's usage now includes it.
        client_cpu = (children_after.ru_utime - children_before.ru_utime) + (
            children_after.ru_stime - children_before.ru_stime
        )
        return CaseResult(
            case=case,
            jobs=out.jobs,
            failed=out.failed,
            jobs_per_s=out.jobs_per_s,
            p50_ms=out.p50_ms,
            p99_ms=out.p99_ms,
            client_cpu_us=client_cpu / succeeded * 1e6 if succeeded else None,
            server_cpu_us=run.server_cpu_s[server.pid] / succeeded * 1e6 if succeeded else None,
            client_peak_mb=None,
            server_peak_mb=server_peak,
            server_ready_s=server.ready_s if case.server == "relay" else None,
            windowed=False,
            load_average=procstat.load_average()[0],
            errors=out.errors,
        )

    # --- the whole run ---------------------------------------------------------------------

    async def run(self) -> BenchResult:
        plan = self.plan
        started = time.perf_counter()
        started_at = datetime.datetime.now(datetime.UTC)
        load_before = procstat.load_average()
        cases = plan.cases()
        rounds: list[list[CaseResult]] = []
        dns: dict[str, Any] | None = None
        costs: dict[str, dict[str, float]] | None = None
        zone_argv = [sys.executable, "-m", "lab.bench.zone"]
        try:
            zone_log = self.scratch / "zone.log"
            async with self.sink:
                if cases:
                    async with serving(
                        zone_argv, ready=_ZONE_READY, timeout=120, log_path=zone_log
                    ) as zone:
                        self._zone = zone.process
                        self.nameserver = zone.ready.group(1)
                        self.say(
                            f"DNS server on {self.nameserver}, "
                            f"OTLP receiver on {self.sink.endpoint}"
                        )
                        for round_number in range(1, plan.rounds + 1):
                            rounds.append(await self.run_round(round_number, cases))
                    self._zone = None
                if plan.dns is not None:
                    self.say("DNS lookups: bunny's resolver, aiodns, dnspython, getaddrinfo")
                    dns = await self._run_dns(plan.dns)
                if plan.costs and not plan.dns_only:
                    self.say("per-job costs: each piece of a job's path timed alone")
                    costs = await asyncio.to_thread(job_costs.measure_all, quick=plan.quick)
        except BaseException:
            self.say(f"relay logs kept in {self.scratch}")
            raise
        shutil.rmtree(self.scratch, ignore_errors=True)
        return BenchResult(
            settings=self._settings(started_at, load_before, time.perf_counter() - started),
            results=combine_rounds(rounds),
            dns=dns,
            costs=costs,
        )

    async def _run_dns(self, settings: DnsBenchSettings) -> dict[str, Any]:
        # Without --nameserver it starts CoreDNS for the bench zone itself.
        module = "lab.bench.dnsbench"
        argv = [sys.executable, "-m", module, "--json"]
        argv += dnsbench.arguments(settings)
        run = await run_client(
            argv,
            # Room for every span of the traced cache-hit row (tens of thousands in a
            # tight loop): with the SDK's 2,048 the queue overflows and the row would
            # pay to export only the spans that were not dropped.
            env={**_otel_env(self.sink, "bunny", Tracing.ALL), "OTEL_BSP_MAX_QUEUE_SIZE": "262144"},
            label="dns",
            progress=self.progress,
        )
        return run.result

    def _settings(
        self, started_at: datetime.datetime, load_before: tuple[float, float, float], wall: float
    ) -> dict[str, object]:
        plan = self.plan
        try:
            ghz_version = ghz.version()
        except FileNotFoundError as exc:
            ghz_version = f"missing ({exc})"
        return {
            "started_at": started_at.isoformat(timespec="seconds"),
            "wall_s": round(wall, 1),
            "quick": plan.quick,
            "rounds": plan.rounds,
            "duration_s": plan.duration_s,
            "warmup_s": plan.warmup_s,
            "concurrency": plan.concurrency,
            "payload_bytes": plan.payload_bytes,
            "machine": procstat.machine().as_dict(),
            "ghz": ghz_version,
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in procstat.load_average()],
            "relay": "relay serve --listen 127.0.0.1:0 [--store memory]; defaults otherwise "
            "(max in flight 256, INFO logs to a file)",
            "bunny": "bunny bench, resolver family any (A and AAAA), default retries and deadline",
            "dns_server": "lab.bench.zone (the lab ZoneServer, a process of its own); "
            "the DNS benchmark: CoreDNS (lab.bench.zone.coredns_zone)",
        }


def render_text(result: BenchResult) -> str:
    settings = result.settings
    machine = settings["machine"]
    packages = ", ".join(f"{k} {v}" for k, v in machine["packages"].items())
    lines = [
        f"make bench, {settings['started_at']} ({settings['wall_s']} s"
        + (", QUICK: smoke run, numbers mean nothing)" if settings["quick"] else ")"),
        f"machine: {machine['cores']} cores, {machine['cpu_model']}, Linux {machine['kernel']}",
        f"load average (1, 5, 15 min): before {settings['load_average_before']}, "
        f"after {settings['load_average_after']}",
        f"Python {machine['python']}: {packages}",
        f"ghz: {settings['ghz']}",
    ]
    if result.results:
        lines += [
            f"each case: {settings['warmup_s']} s warm-up, {settings['duration_s']} s measured, "
            f"{settings['concurrency']} jobs in flight, {settings['payload_bytes']}-byte payloads; "
            f"{_rounds_text(settings['rounds'])}",
            "",
            text_table(result.results),
            "",
            "x base: against the raw grpc.aio case of the same mode (ghz rows: ghz -> raw server)"
            + (
                " in the same round; the median of the rounds' ratios, then their lowest and "
                "highest. Other figures: medians over the rounds; failed: every round's; MiB: "
                "the largest of any round"
                if settings["rounds"] > 1
                else ""
            ),
        ]
    lines += ["", "targets:", targets_text(result.targets)]
    if result.dns:
        lines += ["", "DNS lookups (A only, one question per lookup):", dnsbench.render(result.dns)]
    if result.costs:
        width = max(len(what) for what, _, _ in job_costs.rows(result.costs))
        lines += ["", "per-job costs (CPU µs per call, each piece alone, in one process):"]
        lines += [
            f"  {what:<{width}}  {tracing:<20}  {value}"
            for what, tracing, value in job_costs.rows(result.costs)
        ]
    return "\n".join(lines)


def _rounds_text(rounds: int) -> str:
    return "1 round" if rounds == 1 else f"{rounds} rounds"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lab.bench",
        description="bunny and relay against raw grpc.aio, measured in the same run.",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds a case")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--rounds",
        type=_positive_int,
        help=f"how many times every case runs, in order (default {FULL.rounds}; "
        f"--quick: {QUICK.rounds})",
    )
    parser.add_argument(
        "--duration",
        type=float,
        help=f"seconds measured per case and round (default {FULL.duration_s:g})",
    )
    parser.add_argument(
        "--warmup", type=float, help=f"seconds of warm-up per case (default {FULL.warmup_s:g})"
    )
    parser.add_argument("--concurrency", type=int, help="jobs in flight (default 64)")
    parser.add_argument(
        "--cases", help=f"comma-separated case keys to run: {', '.join(c.key for c in CASES)}"
    )
    parser.add_argument("--no-dns", action="store_true", help="skip the DNS benchmark")
    parser.add_argument(
        "--no-costs", action="store_true", help="skip timing the pieces of a job's path"
    )
    parser.add_argument(
        "--dns-only", action="store_true", help="run only the DNS benchmark (no gRPC case)"
    )
    parser.add_argument(
        "--write",
        type=Path,
        help=f"write the results and method here (default for a full run: {DOC})",
    )
    parser.add_argument("--no-write", action="store_true", help="write no file")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    changes: dict[str, Any] = {}
    if args.rounds is not None:
        changes["rounds"] = args.rounds
    if args.duration is not None:
        changes["duration_s"] = args.duration
    if args.warmup is not None:
        changes["warmup_s"] = args.warmup
    if args.concurrency is not None:
        changes["concurrency"] = args.concurrency
    if args.cases:
        changes["only"] = tuple(k.strip() for k in args.cases.split(",") if k.strip())
    if args.no_dns:
        changes["dns"] = None
    if args.no_costs:
        changes["costs"] = False
    if args.dns_only:
        if args.no_dns or args.cases or args.write:
            parser.error("--dns-only runs no case, only the DNS benchmark, and writes no file")
        changes["dns_only"] = True
    plan = dataclasses.replace(plan, **changes)
    bench = Bench(plan, progress=sys.stderr)
    result = asyncio.run(bench.run())
    print(json.dumps(result.as_dict()) if args.json else render_text(result), flush=True)
    whole = not (plan.quick or plan.dns_only)
    target = None if args.no_write else args.write or (DOC if whole else None)
    if target is not None:
        document = markdown_document(result.settings, result.results, result.dns, result.costs)
        # Sections written by hand from other tools' runs stay, after the generated ones.
        kept = hand_written_sections(target.read_text()) if target.exists() else ""
        target.write_text(document + (f"\n{kept}" if kept else ""))
        print(f"bench: wrote {target}", file=sys.stderr)
    failed = sum(case.combined.failed for case in result.results)
    return 0 if failed == 0 else 1
