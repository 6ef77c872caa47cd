"""``bunny diagnose``: ask every hop of the DNS path, then relay itself, and say which hop broke.

The hops are given in order from the pod outward, for the cross-cloud path:

    cluster DNS (CoreDNS in AKS) -> forwarder (VNet DNS / VPN gateway)
        -> AWS VPC resolver -> private zone (Route 53)

Each hop is asked for the name directly (one candidate, no search list), so
its own rcode, answers, TTL and latency are visible. Then the resolv.conf is
read to show what the search list and ndots cost, and every address in the
answer is dialled: gRPC health, then one ``echo`` job (over TLS with the
``--tls*`` options of ``bunny submit``, relay's certificate checked against the
name). Each step is a span of one trace.

The verdict reads the hops the way an operator would:

- REFUSED at a hop: an ACL there rejects this client.
- NXDOMAIN from every hop: the record is missing from the zone.
- NXDOMAIN from the hops nearest the pod while a hop further out answers: the
  innermost of those lacks the conditional forward for the zone.
- No answer (timeout) or SERVFAIL at a hop while the next hop out answers:
  that hop cannot reach its upstream: between two clouds, the tunnel or its
  routes; SERVFAIL means the upstream of that hop failed.
- No answer from a hop and every hop beyond it: that hop is down or cut off.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import trace

from bunny.dns.model import Resolution
from bunny.dns.resolver import Resolver
from bunny.dns.settings import ResolverSettings
from bunny.errors import DnsLookupFailed
from bunny.relaypool import RelayEndpoint, grpc_target
from bunny.tls import ClientTls
from bunny.tracing import BunnyTelemetry
from bunnyrelay import semconv
from bunnyrelay.settings import HostPort, SettingError, parse_ip_port
from bunnyrelay.v1 import jobs_pb2, jobs_pb2_grpc

NO_ANSWER = frozenset({"TIMEOUT", "UNREACHABLE"})


@dataclass(frozen=True, slots=True)
class Hop:
    label: str
    server: HostPort


def parse_hop(text: str) -> Hop:
    """``LABEL=IP[:PORT]``, e.g. ``cluster-dns=10.0.0.10``."""
    label, sep, server = text.partition("=")
    if not sep or not label.strip():
        raise SettingError(f"{text!r}: a hop is LABEL=IP[:PORT], e.g. cluster-dns=10.0.0.10")
    return Hop(label.strip(), parse_ip_port(server, default_port=53))


@dataclass(slots=True)
class HopReport:
    label: str
    server: str
    rcode: str
    answers: list[str]
    ttl: int | None
    latency_ms: float
    ok: bool
    error: str | None


@dataclass(slots=True)
class SearchReport:
    """What resolving through resolv.conf costs: candidates tried, queries sent, wasted."""

    resolv_conf: str
    ndots: int
    search: list[str]
    queries_sent: int
    wasted_queries: int
    answered_by: str | None
    addresses: list[str]
    recommendation: str
    error: str | None = None
    source: str | None = None
    """Where the answer came from: ``hosts`` when the hosts file has the name (DNS is
    then not asked), else ``wire`` or a cache."""


@dataclass(slots=True)
class RelayReport:
    address: str
    connect_ok: bool
    health: str
    job_ok: bool
    relay_instance: str
    latency_ms: float
    error: str | None


@dataclass(slots=True)
class Verdict:
    ok: bool
    failed_hop: str | None
    explanation: str


@dataclass(slots=True)
class Diagnosis:
    name: str
    port: int
    trace_id: str
    hops: list[HopReport]
    search: SearchReport | None
    relay: list[RelayReport]
    verdict: Verdict
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge(hops: Sequence[HopReport], relay: Sequence[RelayReport]) -> Verdict:
    """The hop that explains the failure, and why, in words (see the module docstring)."""
    failing = [i for i, hop in enumerate(hops) if not hop.ok]
    if not failing:
        if not hops:
            return Verdict(False, None, "no hops were given, so the DNS path was not checked")
        return _judge_relay(relay)
    first = failing[0]
    hop = hops[first]
    if hop.rcode == "REFUSED":
        return Verdict(
            False,
            hop.label,
            f"{hop.label} ({hop.server}) answered REFUSED: an ACL there rejects this client "
            "or the zone is not served to it",
        )
    answered_further = next((i for i in range(first + 1, len(hops)) if hops[i].ok), None)
    if hop.rcode in ("NXDOMAIN", "NODATA"):
        if answered_further is not None:
            culprit = hops[answered_further - 1]
            return Verdict(
                False,
                culprit.label,
                f"{culprit.label} ({culprit.server}) says {culprit.rcode} while "
                f"{hops[answered_further].label} answers: {culprit.label} does not forward "
                "the zone (its conditional forward is missing)",
            )
        zone = hops[-1]
        return Verdict(
            False,
            zone.label,
            f"every hop says {hop.rcode}, down to {zone.label} ({zone.server}): "
            "the record is missing from the zone",
        )
    if answered_further is not None:
        culprit = hops[answered_further - 1]
        upstream = hops[answered_further]
        what = "no answer" if culprit.rcode in NO_ANSWER else culprit.rcode
        return Verdict(
            False,
            culprit.label,
            f"{what} from {culprit.label} ({culprit.server}) while {upstream.label} answers: "
            f"the path from {culprit.label} to {upstream.label} is broken (between clouds: "
            "the VPN tunnel or its routes)"
            + ("; SERVFAIL means the upstream of that hop failed" if what == "SERVFAIL" else ""),
        )
    silent = next((i for i in failing if hops[i].rcode in NO_ANSWER), None)
    if silent is not None and all(not h.ok for h in hops[silent:]):
        culprit = hops[silent]
        return Verdict(
            False,
            culprit.label,
            f"no answer from {culprit.label} ({culprit.server}) or any hop beyond it: "
            f"{culprit.label} is down, or the path to it (the VPN tunnel or its routes) is cut",
        )
    culprit = hops[failing[-1]]
    return Verdict(
        False,
        culprit.label,
        f"{culprit.rcode} from {culprit.label} ({culprit.server}), the furthest hop asked: "
        "its upstream failed",
    )


def _judge_relay(relay: Sequence[RelayReport]) -> Verdict:
    if not relay:
        return Verdict(False, "relay", "every hop answered, but with no address to dial")
    broken = [r for r in relay if not (r.connect_ok and r.job_ok)]
    if not broken:
        addresses = ", ".join(r.address for r in relay)
        return Verdict(True, None, f"every hop answers and relay runs jobs at {addresses}")
    details = "; ".join(f"{r.address}: {r.error}" for r in broken)
    return Verdict(False, "relay", f"DNS is fine but relay fails at {details}")


class Diagnoser:
    def __init__(
        self,
        name: str,
        port: int,
        hops: Sequence[Hop],
        *,
        resolv_conf: str | None,
        family: str = "ipv4",
        timeout: float = 2.0,
        attempts: int = 2,
        tls: ClientTls | None = None,
        hosts_file: str | None = None,
        telemetry: BunnyTelemetry | None = None,
    ) -> None:
        self.name = name.rstrip(".")
        self._telemetry = telemetry or BunnyTelemetry()
        self._tracer = self._telemetry.diagnose
        self.tls = tls
        self.port = port
        self.hops = list(hops)
        self.resolv_conf = resolv_conf
        self.family = family
        self.timeout = timeout
        self.attempts = attempts
        self.hosts_file = hosts_file

    async def run(self) -> Diagnosis:
        with self._tracer.start_as_current_span(
            "diagnose", attributes={semconv.DNS_QUESTION_NAME: self.name}
        ) as span:
            trace_id = f"{span.get_span_context().trace_id:032x}"
            hop_reports = list(await asyncio.gather(*(self._ask_hop(h) for h in self.hops)))
            search = await self._search_cost() if self.resolv_conf else None
            answers = next((h.answers for h in hop_reports if h.ok), [])
            if not hop_reports and search is not None:
                answers = search.addresses
            relay = [await self._check_relay(address) for address in answers]
            verdict = judge(hop_reports, relay) if hop_reports else _judge_relay(relay)
            span.set_attribute("bunnyrelay.diagnose.ok", verdict.ok)
            if verdict.failed_hop is not None:
                span.set_attribute(semconv.DNS_HOP, verdict.failed_hop)
                span.set_status(trace.Status(trace.StatusCode.ERROR, verdict.explanation))
        return Diagnosis(self.name, self.port, trace_id, hop_reports, search, relay, verdict)

    def _settings(self, nameservers: tuple[HostPort, ...]) -> ResolverSettings:
        return ResolverSettings(
            nameservers=nameservers,
            ndots=1,
            timeout=self.timeout,
            attempts=self.attempts,
            family=self.family,
            stale_max=0.0,
        )

    async def _ask_hop(self, hop: Hop) -> HopReport:
        with self._tracer.start_as_current_span(
            "diagnose.hop",
            attributes={semconv.DNS_HOP: hop.label, semconv.DNS_NAMESERVER: str(hop.server)},
        ) as span:
            resolver = self._telemetry.dns.wrap(Resolver(self._settings((hop.server,))))
            started = time.monotonic()
            try:
                resolution = await resolver.resolve(self.name + ".")
            except DnsLookupFailed as exc:
                rcode = exc.rcode or type(exc).__name__
                span.set_attribute(semconv.DNS_RCODE, rcode)
                span.set_status(trace.Status(trace.StatusCode.ERROR, str(exc)))
                return HopReport(
                    hop.label,
                    str(hop.server),
                    rcode,
                    [],
                    None,
                    (time.monotonic() - started) * 1000,
                    False,
                    str(exc),
                )
            finally:
                await resolver.close()
            span.set_attribute(semconv.DNS_RCODE, "NOERROR")
            return HopReport(
                hop.label,
                str(hop.server),
                "NOERROR",
                list(resolution.addresses),
                resolution.ttl,
                (time.monotonic() - started) * 1000,
                True,
                None,
            )

    async def _search_cost(self) -> SearchReport:
        assert self.resolv_conf is not None
        settings = ResolverSettings.from_sources(
            resolv_conf=self.resolv_conf,
            nameservers=(),
            ndots=None,
            hosts_file=self.hosts_file,
            family=self.family,
        )
        dots = self.name.count(".")
        if settings.ndots > dots:
            advice = (
                f"ndots:{settings.ndots} makes this {dots}-dot name try the search list first; "
                f"use a trailing dot ({self.name}.) or set ndots to {dots} or less"
            )
        else:
            advice = "the name is tried as given first; no change needed"
        resolver = self._telemetry.dns.wrap(Resolver(settings))
        with self._tracer.start_as_current_span("diagnose.search_list"):
            try:
                resolution: Resolution | None = await resolver.resolve(self.name)
                queries = resolution.queries if resolution else ()
                error = None
            except DnsLookupFailed as exc:
                resolution, queries, error = None, tuple(exc.queries), str(exc)
            finally:
                await resolver.close()
        answered_by = resolution.fqdn if resolution else None
        wasted = sum(1 for q in queries if q.fqdn.rstrip(".") != (answered_by or "").rstrip("."))
        return SearchReport(
            self.resolv_conf,
            settings.ndots,
            list(settings.search),
            len(queries),
            wasted,
            answered_by,
            list(resolution.addresses) if resolution else [],
            advice,
            error,
            resolution.source if resolution else None,
        )

    async def _check_relay(self, address: str) -> RelayReport:
        peer = f"[{address}]:{self.port}" if ":" in address else f"{address}:{self.port}"
        started = time.monotonic()
        target = grpc_target(address, self.port)
        options: list[tuple[str, Any]] = [("grpc.default_authority", f"{self.name}:{self.port}")]
        if self.tls is None:
            channel = grpc.aio.insecure_channel(target, options=options)
        else:
            # As bunny submit does: the certificate must name relay, not the address dialled.
            options.append(("grpc.ssl_target_name_override", self.name))
            channel = grpc.aio.secure_channel(target, self.tls.credentials, options=options)
        health = "UNKNOWN"
        with self._tracer.start_as_current_span(
            "diagnose.relay", attributes={semconv.NETWORK_PEER_ADDRESS: address}
        ) as span:
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=self.timeout
                )
                health = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
                endpoint = RelayEndpoint(
                    self.name, address, self.port, channel, jobs_pb2_grpc.JobServiceStub(channel)
                )
                request = jobs_pb2.JobRequest(
                    job_id=f"diagnose-{uuid.uuid4()}", kind="echo", payload=b"diagnose"
                )
                with self._telemetry.rpc.attempt("Run", endpoint, 1) as record:
                    try:
                        result = await endpoint.stub.Run(
                            request, timeout=self.timeout * 2, metadata=tuple(record.metadata)
                        )
                    except grpc.aio.AioRpcError as exc:
                        record.code = exc.code()
                        raise
                job_ok = result.status == jobs_pb2.JOB_STATUS_SUCCEEDED
                error = None if job_ok else result.error.message
                return RelayReport(
                    peer,
                    True,
                    health,
                    job_ok,
                    result.relay_instance,
                    (time.monotonic() - started) * 1000,
                    error,
                )
            except grpc.aio.AioRpcError as exc:
                span.set_status(trace.Status(trace.StatusCode.ERROR, exc.code().name))
                connected = exc.code() is not grpc.StatusCode.UNAVAILABLE
                return RelayReport(
                    peer,
                    connected,
                    health,
                    False,
                    "",
                    (time.monotonic() - started) * 1000,
                    f"{exc.code().name}: {exc.details()}",
                )
            finally:
                await channel.close()


def render_table(diagnosis: Diagnosis) -> str:
    """The diagnosis as people read it at a glance."""
    lines = [f"diagnose {diagnosis.name}:{diagnosis.port}   trace {diagnosis.trace_id}", ""]
    if diagnosis.hops:
        lines.append(f"{'hop':<16} {'server':<22} {'rcode':<10} {'ms':>8}  answers")
        for hop in diagnosis.hops:
            mark = "ok " if hop.ok else "XX "
            answers = ", ".join(hop.answers) or (hop.error or "-")
            ttl = f" (ttl {hop.ttl})" if hop.ttl is not None else ""
            lines.append(
                f"{mark}{hop.label:<13} {hop.server:<22} {hop.rcode:<10} "
                f"{hop.latency_ms:8.1f}  {answers}{ttl}"
            )
        lines.append("")
    if diagnosis.search is not None:
        s = diagnosis.search
        lines.append(
            f"resolv.conf {s.resolv_conf}: ndots:{s.ndots}, search {' '.join(s.search) or '-'}; "
            f"{s.queries_sent} queries sent, {s.wasted_queries} wasted"
        )
        if s.source == "hosts":
            lines.append(
                f"  {diagnosis.name} is in the hosts file: answered from it "
                f"({', '.join(s.addresses)}), DNS not asked"
            )
        lines.append(f"  {s.recommendation}")
        lines.append("")
    for relay in diagnosis.relay:
        mark = "ok " if relay.connect_ok and relay.job_ok else "XX "
        lines.append(
            f"{mark}relay {relay.address:<22} health {relay.health:<12} "
            f"echo job {'ok' if relay.job_ok else 'failed'} {relay.relay_instance} "
            f"{relay.latency_ms:.1f} ms" + (f"  {relay.error}" if relay.error else "")
        )
    verdict = diagnosis.verdict
    lines.append("")
    lines.append(
        ("OK: " if verdict.ok else f"BROKEN at {verdict.failed_hop}: ") + verdict.explanation
    )
    return "\n".join(lines)
