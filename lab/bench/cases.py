"""What ``make bench`` measures: each case is one client process against one server process.

A case names its client (the raw baseline, ``bunny bench`` or ghz), its server
(the raw echo servicer or a relay), and for bunny and relay the telemetry, the
DNS path and relay's store. Its ``baseline`` is the case its ratios are taken
against, and ``target`` the performance target it is held to.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Tracing(Enum):
    """Sampling in both bunny and relay, through the standard OTEL_* variables."""

    NONE = "none"
    """The raw baseline: no OpenTelemetry at all."""
    OFF = "off"
    SAMPLED = "10%"
    """Head sampling at 10 %, with the default keeping of failed, retried and slow jobs."""
    SAMPLED_PLAIN = "10% keeping off"
    """Plain head sampling at 10 %: bunny and relay keep nothing else (threshold 0)."""
    ALL = "100%"

    def env(self) -> dict[str, str]:
        if self is Tracing.OFF:
            return {"OTEL_TRACES_SAMPLER": "always_off"}
        if self is Tracing.SAMPLED:
            return {
                "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": "0.1",
            }
        if self is Tracing.SAMPLED_PLAIN:
            return {
                **Tracing.SAMPLED.env(),
                "BUNNY_KEEP_SLOWER_THAN": "0",
                "RELAY_KEEP_SLOWER_THAN": "0",
            }
        if self is Tracing.ALL:
            return {"OTEL_TRACES_SAMPLER": "parentbased_always_on"}
        return {}


class Dns(Enum):
    NONE = "-"
    """No DNS: the client dials an IP address."""
    CACHED = "cached"
    """A 300 s TTL: bunny answers from its cache."""
    EVERY_JOB = "every job"
    """TTL 0: every job's lookup goes to the DNS server (lookups in flight are shared)."""


class Store(Enum):
    NONE = "-"
    MEMORY = "memory"
    DEFAULT = "sqlite (default)"
    """relay's default durable store: SQLite in its state directory."""

    def relay_args(self) -> list[str]:
        return ["--store", "memory"] if self is Store.MEMORY else []


@dataclass(frozen=True, slots=True)
class Target:
    """A case's performance target: jobs/s at least ``ratio`` times ``against``'s."""

    ratio: float
    against: str
    """The key of the case whose jobs/s the ratio is taken against."""

    def describe(self) -> str:
        return f">= {self.ratio:g}x {self.against.replace('-', ' ')} jobs/s"


@dataclass(frozen=True, slots=True)
class Case:
    key: str
    client: str
    """``raw``, ``floor`` (raw with the conventions' telemetry), ``bunny`` or ``ghz``."""
    server: str
    """``raw``, ``floor`` or ``relay``."""
    stream: bool
    tracing: Tracing = Tracing.NONE
    dns: Dns = Dns.NONE
    store: Store = Store.NONE
    baseline: str = ""
    """The key of the case the ratios are against ("" for a baseline itself)."""
    target: Target | None = None
    title: str = ""
    """What the tables call it, when the generated label would not do."""

    @property
    def mode(self) -> str:
        return "stream" if self.stream else "unary"

    @property
    def label(self) -> str:
        if self.title:
            return self.title
        if self.client == "raw":
            return f"raw grpc.aio {self.mode}"
        if self.client == "ghz":
            return f"ghz -> {'raw server' if self.server == 'raw' else 'relay'} {self.mode}"
        parts = [f"bunny {self.mode}", f"tracing {self.tracing.value}", f"dns {self.dns.value}"]
        if self.store is Store.DEFAULT:
            parts.append("sqlite store")
        return ", ".join(parts)


RAW_UNARY = "raw-unary"
RAW_STREAM = "raw-stream"
RAW_UNARY_AGAIN = "raw-unary-end"
GHZ_RAW = "ghz-raw-unary"
FLOOR_OFF = "floor-unary-off"
FLOOR_TRACED = "floor-unary-100"

UNARY_10_PLAIN = "unary-10-plain"
STREAM_10_PLAIN = "stream-10-plain"

_UNARY_MIN = Target(0.95, RAW_UNARY)
# Keeping what went wrong may cost an unsampled job little: next to plain head sampling,
# run just before it in the same round.
_KEEPING_UNARY = Target(0.95, UNARY_10_PLAIN)
_KEEPING_STREAM = Target(0.95, STREAM_10_PLAIN)
_UNARY_TRACED = Target(0.85, RAW_UNARY)
_STREAMED = Target(3.0, RAW_UNARY)


def _bunny(
    key: str,
    *,
    stream: bool,
    tracing: Tracing,
    dns: Dns = Dns.CACHED,
    store: Store = Store.MEMORY,
    target: Target | None = None,
) -> Case:
    return Case(
        key,
        "bunny",
        "relay",
        stream,
        tracing,
        dns,
        store,
        baseline=RAW_STREAM if stream else RAW_UNARY,
        target=target,
    )


CASES: tuple[Case, ...] = (
    Case(RAW_UNARY, "raw", "raw", False),
    Case(RAW_STREAM, "raw", "raw", True, baseline=RAW_UNARY),
    # The most an instrumented service can reach: see lab.bench.floor.
    Case(
        FLOOR_OFF,
        "floor",
        "floor",
        False,
        Tracing.OFF,
        baseline=RAW_UNARY,
        title="floor: raw unary + W3C context, RPC duration metrics, tracing off",
    ),
    Case(
        FLOOR_TRACED,
        "floor",
        "floor",
        False,
        Tracing.ALL,
        baseline=RAW_UNARY,
        title="floor: the same + a CLIENT and a SERVER span per call, 100%",
    ),
    _bunny("unary-off", stream=False, tracing=Tracing.OFF, target=_UNARY_MIN),
    _bunny(UNARY_10_PLAIN, stream=False, tracing=Tracing.SAMPLED_PLAIN, target=_UNARY_MIN),
    _bunny("unary-10", stream=False, tracing=Tracing.SAMPLED, target=_KEEPING_UNARY),
    _bunny("unary-100", stream=False, tracing=Tracing.ALL, target=_UNARY_TRACED),
    _bunny("unary-off-dns", stream=False, tracing=Tracing.OFF, dns=Dns.EVERY_JOB),
    _bunny("unary-100-dns", stream=False, tracing=Tracing.ALL, dns=Dns.EVERY_JOB),
    _bunny(
        "unary-off-sqlite",
        stream=False,
        tracing=Tracing.OFF,
        store=Store.DEFAULT,
        target=_UNARY_TRACED,
    ),
    _bunny(
        "unary-100-sqlite",
        stream=False,
        tracing=Tracing.ALL,
        store=Store.DEFAULT,
        target=_UNARY_TRACED,
    ),
    _bunny("stream-off", stream=True, tracing=Tracing.OFF, target=_STREAMED),
    _bunny(STREAM_10_PLAIN, stream=True, tracing=Tracing.SAMPLED_PLAIN, target=_STREAMED),
    _bunny("stream-10", stream=True, tracing=Tracing.SAMPLED, target=_KEEPING_STREAM),
    _bunny("stream-100", stream=True, tracing=Tracing.ALL, target=_STREAMED),
    _bunny("stream-off-sqlite", stream=True, tracing=Tracing.OFF, store=Store.DEFAULT),
    Case(GHZ_RAW, "ghz", "raw", False),
    Case(
        "ghz-relay-unary",
        "ghz",
        "relay",
        False,
        Tracing.OFF,
        store=Store.MEMORY,
        baseline=GHZ_RAW,
    ),
    Case(
        "ghz-relay-stream",
        "ghz",
        "relay",
        True,
        Tracing.OFF,
        store=Store.MEMORY,
        baseline=GHZ_RAW,
    ),
    # The baseline again, last: how far the machine drifted during the run.
    Case(
        RAW_UNARY_AGAIN,
        "raw",
        "raw",
        False,
        baseline=RAW_UNARY,
        title="raw grpc.aio unary, again at the end",
    ),
)
"""Every case, in the order they run."""
