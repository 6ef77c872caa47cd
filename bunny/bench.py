"""``bunny bench``: closed-loop load on a relay through bunny's real submitters.

Every job goes the way ``bunny submit`` sends it (the resolver and its caches,
the relay pool, the retries, the spans, ``Run`` or ``RunBatches``), driven by
:func:`bunny.loadgen.drive` with ``concurrency`` jobs in flight. Telemetry is
whatever the standard ``OTEL_*`` variables make it, so the same command measures
tracing off (``OTEL_TRACES_SAMPLER=always_off``), sampled, or exported.

The result is one JSON object (``--json``) or a short table, with jobs, failures,
jobs/s, latency percentiles, bunny's own CPU time per job and its peak memory,
and where the DNS answers came from (``cache`` when bunny's cache served them,
``wire`` or ``c-ares-cache`` when a lookup ran).

``make bench`` (:mod:`lab.bench`) runs this command against relays and
against a raw grpc.aio baseline; docs/benchmarks.md has the method and results.
"""

from __future__ import annotations

import os
import platform
from collections import Counter
from dataclasses import dataclass, field
from typing import TextIO

import grpc

from bunny.batch import new_job_id
from bunny.dns.resolver import Resolver
from bunny.dns.settings import ResolverSettings
from bunny.dns.tracing import TracedResolver
from bunny.loadgen import LoadResult, LoadSettings, drive
from bunny.relaypool import RelayPool
from bunny.streaming import StreamSubmitter
from bunny.submitter import JobSubmitter, SubmitSettings, UnarySubmitter
from bunny.targets import LiteralAddress, Target
from bunny.tls import ClientTls
from bunny.tracing import BunnyTelemetry
from bunnyrelay.v1 import jobs_pb2


@dataclass(frozen=True, slots=True)
class BenchSettings:
    """What ``bunny bench`` sends, and for how long."""

    duration_s: float = 10.0
    """Length of the measured window, in seconds."""
    concurrency: int = 64
    """Jobs in flight at every moment."""
    warmup_s: float = 1.0
    """Seconds of load before the window opens (channels connect, the DNS cache fills)."""
    stream: bool = False
    """Send jobs over ``RunBatches`` (one stream per relay address) instead of ``Run``."""
    payload_bytes: int = 100
    """Size of each job's payload."""
    kind: str = "echo"
    """The job kind relay runs."""
    run: SubmitSettings = field(default_factory=SubmitSettings)
    """Each job's deadline and RPC retries, as ``bunny submit`` uses them."""

    def __post_init__(self) -> None:
        if self.payload_bytes < 0:
            raise ValueError(f"the payload size must be at least 0, not {self.payload_bytes}")
        # LoadSettings checks duration, concurrency and warm-up.
        self.load()

    def load(self) -> LoadSettings:
        return LoadSettings(
            duration_s=self.duration_s, concurrency=self.concurrency, warmup_s=self.warmup_s
        )


@dataclass(frozen=True, slots=True)
class BenchReport:
    """One bench run: the load result, what was run, and where DNS answers came from."""

    target: str
    mode: str
    """``unary`` or ``stream``."""
    payload_bytes: int
    load: LoadResult
    dns_sources: dict[str, int]
    """Counts of each job's DNS source (``cache``, ``wire``, ``c-ares-cache``, ``literal``)."""
    retried: int
    """Jobs that needed more than one RPC attempt."""
    error_examples: dict[str, str] = field(default_factory=dict)
    """For each kind of failure counted in ``load.errors``, the first one's message: why
    relay rejected those jobs, in its words."""

    @property
    def ok(self) -> bool:
        return self.load.failed == 0 and self.load.warmup_failed == 0

    def as_dict(self) -> dict[str, object]:
        return {
            "target": self.target,
            "mode": self.mode,
            "payload_bytes": self.payload_bytes,
            **self.load.as_dict(),
            "dns_sources": dict(self.dns_sources),
            "retried": self.retried,
            "error_examples": dict(self.error_examples),
            "python": platform.python_version(),
            "grpcio": grpc.__version__,
            "pid": os.getpid(),
        }

    def render(self) -> str:
        """A table for people."""
        data = self.as_dict()

        def ms(key: str) -> str:
            value = data[key]
            return "-" if value is None else f"{value:.2f} ms"

        per_job = data["cpu_us_per_job"]
        rows = [
            ("target", f"{self.target} ({self.mode}, {self.payload_bytes}-byte payloads)"),
            ("in flight", str(self.load.concurrency)),
            ("window", f"{self.load.elapsed_s:.2f} s after {self.load.warmup_jobs} warm-up jobs"),
            ("jobs", f"{self.load.jobs} ({self.load.failed} failed, {self.retried} retried)"),
            ("jobs/s", f"{self.load.jobs_per_s:,.0f}"),
            ("latency p50", ms("p50_ms")),
            ("latency p90", ms("p90_ms")),
            ("latency p99", ms("p99_ms")),
            ("latency max", ms("max_ms")),
            (
                "bunny CPU",
                f"{self.load.cpu_s:.2f} s"
                + ("" if per_job is None else f" ({per_job:,.0f} µs per job)"),
            ),
            ("bunny peak RSS", f"{self.load.peak_rss_mb:.0f} MiB"),
            (
                "DNS answers",
                ", ".join(f"{k} {v}" for k, v in sorted(self.dns_sources.items())) or "-",
            ),
        ]
        ranked = sorted(self.load.errors.items(), key=lambda item: -item[1])
        for n, (kind, count) in enumerate(ranked):
            example = self.error_examples.get(kind)
            rows.append(
                (
                    "failures" if n == 0 else "",
                    f"{count} {kind}" + (f": {example}" if example else ""),
                )
            )
        width = max(len(label) for label, _ in rows)
        return "\n".join(f"{label:<{width}}  {value}".rstrip() for label, value in rows)


async def run_bench(
    target: Target,
    settings: BenchSettings,
    *,
    resolver: ResolverSettings | None,
    tls: ClientTls | None = None,
    progress: TextIO | None = None,
    telemetry: BunnyTelemetry | None = None,
) -> BenchReport:
    """Load ``target`` as ``bunny submit`` would, for ``settings.duration_s`` seconds.

    ``resolver`` is required for a DNS name and ignored for an IP literal.
    """
    telemetry = telemetry or BunnyTelemetry()
    if isinstance(target.host, LiteralAddress):
        source: TracedResolver | LiteralAddress = target.host
    else:
        if resolver is None:
            raise ValueError(f"{target.host}: a DNS name needs resolver settings")
        source = telemetry.dns.wrap(Resolver(resolver))
    pool = RelayPool(source, str(target.host), target.port, tls=tls)
    submitter_class = StreamSubmitter if settings.stream else UnarySubmitter
    submitter: JobSubmitter = submitter_class(pool, settings.run, telemetry)
    payload = os.urandom(settings.payload_bytes)
    kind = settings.kind
    sources: Counter[str] = Counter()
    retried = 0
    examples: dict[str, str] = {}

    async def job() -> str | None:
        nonlocal retried
        # A fresh id per job: relay remembers ids, and a repeated one would be a replay.
        request = jobs_pb2.JobRequest(job_id=new_job_id(), kind=kind, payload=payload)
        outcome = await submitter.run(request)
        sources[outcome.dns_source or "none"] += 1
        if outcome.attempts > 1:
            retried += 1
        if outcome.ok:
            return None
        error = outcome.error
        if error is None:
            return outcome.status
        # Counted by what failed and relay's reason; the message of the first says why.
        failure = " ".join(part for part in (error.type, error.code, error.reason) if part)
        examples.setdefault(failure, _without_peer(error.message, outcome.relay_address))
        return failure

    try:
        load = await drive(job, settings.load(), name="bunny bench", progress=progress)
    finally:
        await submitter.close()
        await pool.close(grace=1.0)
        await source.close()
    return BenchReport(
        target=f"{target.host}:{target.port}",
        mode="stream" if settings.stream else "unary",
        payload_bytes=settings.payload_bytes,
        load=load,
        dns_sources=dict(sources),
        retried=retried,
        error_examples=examples,
    )


def _without_peer(message: str, peer: str | None) -> str:
    """A failure's message without the address it starts with, and the status code after it:
    the row already says both."""
    if peer and message.startswith(f"{peer}: "):
        message = message[len(peer) + 2 :]
        code, sep, rest = message.partition(": ")
        if sep and code.isupper():
            message = rest
    return message
