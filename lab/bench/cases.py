"""What ``make bench`` measures: each case is one client process against one server process.

A case names its client (the raw baseline, ``bunny bench`` or ghz), its server
(the raw echo servicer or a relay), and for bunny and relay the telemetry, the
DNS path and relay's store. Its ``baseline`` is the case its ratios are taken
against, and ``targets`` the performance targets it is held to, each a ratio of its
jobs/s to another case's in the same round.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
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


class Protocol(Enum):
    """The OTLP protocol a traced case exports spans with (``OTEL_EXPORTER_OTLP_PROTOCOL``)."""

    GRPC = "grpc"
    HTTP = "http/protobuf"
    """The specification's default, and so the project's."""


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
    """``raw``, ``floor`` (raw with the conventions' telemetry), ``peer`` (raw with
    opentelemetry-instrumentation-grpc), ``bunny`` or ``ghz``."""
    server: str
    """``raw``, ``floor``, ``peer`` or ``relay``."""
    stream: bool
    tracing: Tracing = Tracing.NONE
    dns: Dns = Dns.NONE
    store: Store = Store.NONE
    baseline: str = ""
    """The key of the case the ratios are against ("" for a baseline itself)."""
    targets: tuple[Target, ...] = ()
    traceparent: bool = False
    """The raw client sends a W3C traceparent header with every call (and nothing else of
    the telemetry): what gRPC itself costs of the trace context."""
    title: str = ""
    """What the tables call it, when the generated label would not do."""

    protocol: Protocol = Protocol.GRPC
    """How spans reach the OTLP receiver; only traced cases (10 %, 100 %) export any."""

    beside: str = ""
    """The key of the case this one runs side by side with, at the same time, each with
    its own server and client ("" to run alone). Two such cases share whatever the machine
    does while they run, which consecutive runs do not: a comparison of a few percent, which
    this machine's drift hides between runs a minute apart (docs/benchmarks.md, "Side by
    side")."""

    @property
    def mode(self) -> str:
        return "stream" if self.stream else "unary"

    @property
    def traced(self) -> bool:
        """Whether the case exports spans, so that its OTLP protocol matters."""
        return self.tracing in (Tracing.SAMPLED, Tracing.SAMPLED_PLAIN, Tracing.ALL)

    @property
    def label(self) -> str:
        return self._label() + (", OTLP http" if self.protocol is Protocol.HTTP else "")

    def _label(self) -> str:
        if self.title:
            return self.title
        if self.client == "raw":
            return f"raw grpc.aio {self.mode}"
        if self.client == "ghz":
            return f"ghz -> {'raw server' if self.server == 'raw' else 'relay'} {self.mode}"
        parts = [f"bunny {self.mode}", f"tracing {self.tracing.value}", f"dns {self.dns.value}"]
        if self.store is Store.DEFAULT:
            parts.append("sqlite store")
        if self.beside:
            parts.append("side by side")
        return ", ".join(parts)


RAW_UNARY = "raw-unary"
RAW_STREAM = "raw-stream"
RAW_UNARY_AGAIN = "raw-unary-end"
RAW_TRACEPARENT = "raw-unary-traceparent"
GHZ_RAW = "ghz-raw-unary"
FLOOR_OFF = "floor-unary-off"
FLOOR_TRACED = "floor-unary-100"
PEER = "peer-unary-100"
HTTP_SUFFIX = "-http"
"""The key of a traced case's http/protobuf twin: its OTLP/gRPC key and this."""
BESIDE_SUFFIX = "-beside"
"""The key of a case run side by side with its twin: the key of the case run alone and this."""


def _bunny(
    key: str,
    *,
    stream: bool,
    tracing: Tracing,
    dns: Dns = Dns.CACHED,
    store: Store = Store.MEMORY,
    targets: tuple[Target, ...] = (),
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
        targets=targets,
    )


def _keeping_side_by_side(*, stream: bool) -> tuple[Case, Case]:
    """Plain 10 % head sampling and the same with keeping, run side by side, the second held
    to the first: the one comparison on this machine sharp enough for a few percent."""
    mode = "stream" if stream else "unary"
    plain = f"{mode}-10-plain{BESIDE_SUFFIX}"
    keeping = f"{mode}-10{BESIDE_SUFFIX}"
    return (
        dataclasses.replace(
            _bunny(plain, stream=stream, tracing=Tracing.SAMPLED_PLAIN), baseline="", beside=keeping
        ),
        dataclasses.replace(
            _bunny(keeping, stream=stream, tracing=Tracing.SAMPLED, targets=(Target(0.95, plain),)),
            baseline=plain,
            beside=plain,
        ),
    )


def _on_both_protocols(cases: tuple[Case, ...]) -> tuple[Case, ...]:
    """Each traced case, then its twin exporting over OTLP http/protobuf right after it (so the
    two are measured close in time): held to 0.95x the OTLP/gRPC case, and to the same
    targets against other cases, taken against their http/protobuf twins."""
    out: list[Case] = []
    # The cases run side by side are there for the keeping comparison alone: no twin.
    twinned = {c.key for c in cases if c.traced and not c.beside}
    for case in cases:
        out.append(case)
        if case.key not in twinned:
            continue
        twin_targets = tuple(
            Target(t.ratio, t.against + HTTP_SUFFIX if t.against in twinned else t.against)
            for t in case.targets
        )
        out.append(
            dataclasses.replace(
                case,
                key=case.key + HTTP_SUFFIX,
                protocol=Protocol.HTTP,
                targets=(*twin_targets, Target(0.95, case.key)),
            )
        )
    return tuple(out)


CASES: tuple[Case, ...] = _on_both_protocols(
    (
        Case(RAW_UNARY, "raw", "raw", False),
        Case(RAW_STREAM, "raw", "raw", True, baseline=RAW_UNARY),
        Case(
            RAW_TRACEPARENT,
            "raw",
            "raw",
            False,
            baseline=RAW_UNARY,
            traceparent=True,
            title="raw unary + a traceparent header per call (gRPC's share of the floor)",
        ),
        # The most an instrumented service can reach: see lab.bench.floor.
        Case(
            FLOOR_OFF,
            "floor",
            "floor",
            False,
            Tracing.OFF,
            baseline=RAW_UNARY,
            targets=(Target(0.85, RAW_UNARY),),
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
        # What people add today instead of this project: see lab.bench.peer.
        Case(
            PEER,
            "peer",
            "peer",
            False,
            Tracing.ALL,
            baseline=RAW_UNARY,
            title="peer: raw unary + opentelemetry-instrumentation-grpc, 100%",
        ),
        _bunny("unary-off", stream=False, tracing=Tracing.OFF, targets=(Target(0.95, FLOOR_OFF),)),
        _bunny("unary-10", stream=False, tracing=Tracing.SAMPLED),
        *_keeping_side_by_side(stream=False),
        _bunny("unary-100", stream=False, tracing=Tracing.ALL, targets=(Target(1.0, PEER),)),
        _bunny("unary-off-dns", stream=False, tracing=Tracing.OFF, dns=Dns.EVERY_JOB),
        _bunny("unary-100-dns", stream=False, tracing=Tracing.ALL, dns=Dns.EVERY_JOB),
        _bunny(
            "unary-off-sqlite",
            stream=False,
            tracing=Tracing.OFF,
            store=Store.DEFAULT,
            targets=(Target(0.9, "unary-off"),),
        ),
        _bunny(
            "unary-100-sqlite",
            stream=False,
            tracing=Tracing.ALL,
            store=Store.DEFAULT,
            targets=(Target(0.9, "unary-100"),),
        ),
        _bunny("stream-off", stream=True, tracing=Tracing.OFF, targets=(Target(3.0, RAW_UNARY),)),
        _bunny(
            "stream-10", stream=True, tracing=Tracing.SAMPLED, targets=(Target(3.0, RAW_UNARY),)
        ),
        *_keeping_side_by_side(stream=True),
        _bunny("stream-100", stream=True, tracing=Tracing.ALL, targets=(Target(1.5, RAW_UNARY),)),
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
)
"""Every case, in the order they run."""


def round_order(cases: Sequence[Case], round_number: int) -> list[Case]:
    """``cases`` in the order round ``round_number`` (from 1) runs them: as given in odd
    rounds; in even rounds each run of cases held to the case just before them (a 10 % case
    with keeping after its keeping-off twin, an OTLP http case after its OTLP/gRPC twin) is
    run backwards, so each stays next to what it is held to but runs first. Such twins
    measure a few percent apart, less than consecutive runs of one case differ; were one
    always second, whatever the run before it left behind (a relay's last export, a busier
    machine a minute on) would always fall on the same one."""
    order = list(cases)
    if round_number % 2:
        return order
    runs: list[list[Case]] = []
    for case in order:
        if runs and any(target.against == runs[-1][-1].key for target in case.targets):
            runs[-1].append(case)
        else:
            runs.append([case])
    return [case for run in runs for case in reversed(run)]
