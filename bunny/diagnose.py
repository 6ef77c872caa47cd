"""``bunny diagnose``: ask every hop of the DNS path, then relay itself, and say which hop broke.

The hops are given in order from the pod outward, for the cross-cloud path:

    cluster DNS (CoreDNS in AKS) -> forwarder (Azure DNS Private Resolver or a forwarder VM)
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
  innermost of those lacks the conditional forward for the zone (at the cluster DNS:
  neither the coredns-custom block nor a linked forwarding ruleset's rule; further out:
  the forwarder's ruleset rule).
- No answer (timeout) or SERVFAIL at a hop while the next hop out answers:
  that hop cannot reach its upstream: between two clouds, the tunnel or its
  routes; SERVFAIL means the upstream of that hop failed.
- No answer from a hop and every hop beyond it: many forwarders drop a query
  their upstream leaves unanswered, so a hop that is silent for the name is
  asked something it answers itself (:mod:`bunny.liveness`). The verdict names
  the first hop, from the pod outward, that is up but whose upstream is silent,
  or the first hop that answers nothing at all: down, or unreachable from here.
- SERVFAIL from every hop asked: the furthest one's upstream failed (between two
  clouds, the tunnel or the resolver beyond it).
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import trace

from bunny import liveness
from bunny.alivequery import DEFAULT_QUERIES, AliveQuery
from bunny.dns.model import Resolution
from bunny.dns.resolver import Resolver
from bunny.dns.settings import ResolverSettings
from bunny.errors import DnsLookupFailed
from bunny.hop import Hop
from bunny.relaypool import RelayEndpoint, grpc_target
from bunny.tls import ClientTls
from bunny.tracing import BunnyTelemetry
from bunnyrelay import semconv
from bunnyrelay.settings import HostPort
from bunnyrelay.v1 import jobs_pb2, jobs_pb2_grpc

NO_ANSWER = frozenset({"TIMEOUT", "UNREACHABLE"})


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
    alive: bool | None = None
    """For a hop silent for the name: whether it answers a question of its own."""
    alive_evidence: str | None = None
    """What it answered, or what it left unanswered."""


def _up(hop: HopReport) -> bool | None:
    """Whether ``hop`` is up: it answered the name with any rcode, or a question of its own."""
    return True if hop.rcode not in NO_ANSWER else hop.alive


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
                f"the zone: {_missing_forward(nearest_the_pod=culprit is hops[0])}",
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
        if _up(culprit) is False:
            return _down(culprit, f" while {upstream.label} answers")
        what = "no answer" if culprit.rcode in NO_ANSWER else culprit.rcode
        return Verdict(
            False,
            culprit.label,
            f"{what} from {culprit.label} ({culprit.server}) while {upstream.label} answers: "
            f"the path from {culprit.label} to {upstream.label} is broken (between clouds: "
            "the VPN tunnel or its routes)"
            + ("; SERVFAIL means the upstream of that hop failed" if what == "SERVFAIL" else "")
            + _up_because(culprit),
        )
    silent = next((i for i in failing if hops[i].rcode in NO_ANSWER), None)
    if silent is not None and all(not h.ok for h in hops[silent:]):
        return _judge_silence(hops[silent:])
    culprit = hops[failing[-1]]
    return Verdict(
        False,
        culprit.label,
        f"{culprit.rcode} from {culprit.label} ({culprit.server}), the furthest hop asked: "
        "its upstream failed (between clouds: the VPN tunnel, or a resolver beyond it)",
    )


def _judge_silence(hops: Sequence[HopReport]) -> Verdict:
    """No answer for the name from ``hops[0]`` or any hop beyond it: the first hop that is up
    while the next one is down or unreachable, or that is up and the last hop given."""
    first = hops[0]
    if _up(first) is None:
        return Verdict(
            False,
            first.label,
            f"no answer from {first.label} ({first.server}) or any hop beyond it: "
            f"{first.label} is down, or the path to it (the VPN tunnel or its routes) is cut",
        )
    if not _up(first):
        return _down(first, " or any hop beyond it")
    for hop, upstream in itertools.pairwise(hops):
        if not _up(upstream):
            return Verdict(
                False,
                hop.label,
                f"{hop.label} ({hop.server}) is up{_evidence(hop)} but its upstream is silent: "
                f"{upstream.label} ({upstream.server}) answers nothing from here either "
                f"({upstream.alive_evidence}): {upstream.label} is down, or the path from "
                f"{hop.label} to it (between clouds: the VPN tunnel or its routes) is cut",
            )
    last = hops[-1]
    return Verdict(
        False,
        last.label,
        f"{last.label} ({last.server}), the furthest hop asked, is up{_evidence(last)} but "
        "gives no answer for the name: its upstream, beyond the hops given, is silent",
    )


def _down(hop: HopReport, context: str) -> Verdict:
    return Verdict(
        False,
        hop.label,
        f"no answer from {hop.label} ({hop.server}){context}, not even to a question it "
        f"answers itself ({hop.alive_evidence}): {hop.label} is down, or unreachable from here",
    )


def _evidence(hop: HopReport) -> str:
    return f" (it answers {hop.alive_evidence})" if hop.alive_evidence and hop.alive else ""


def _up_because(hop: HopReport) -> str:
    return f"; {hop.label} itself is up (it answers {hop.alive_evidence})" if hop.alive else ""


def _missing_forward(*, nearest_the_pod: bool) -> str:
    """What sends the zone on from a hop, where to add it (both ways on AKS).

    The cluster DNS has two: the coredns-custom block, and its default forward to Azure
    DNS, which applies a DNS forwarding ruleset's rule when the ruleset is linked to the
    cluster's VNet. NXDOMAIN there means neither is in place. Further out, a DNS Private
    Resolver forwards the zone only by that ruleset rule.
    """
    if nearest_the_pod:
        return (
            "its conditional forward is missing: neither the coredns-custom block (key "
            "private-aws-internal.server in kube-system/coredns-custom) nor a DNS forwarding "
            "ruleset rule for the zone, on a ruleset linked to the cluster's VNet, sends it on; "
            "add either"
        )
    return (
        "its conditional forward is missing: on an Azure DNS Private Resolver, the DNS "
        "forwarding ruleset's rule for the zone (the ruleset linked to the resolver's VNet), "
        "which the coredns-custom block only leads to; on a forwarder VM, its own forward"
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
        alive_queries: Sequence[AliveQuery] = (),
        hosts_file: str | None = None,
        telemetry: BunnyTelemetry | None = None,
    ) -> None:
        self.name = name.rstrip(".")
        self.alive_queries = (*DEFAULT_QUERIES, *alive_queries)
        self.tls = tls
        self.port = port
        self.hops = list(hops)
        self.resolv_conf = resolv_conf
        self.family = family
        self.timeout = timeout
        self.attempts = attempts
        self.hosts_file = hosts_file
        self._telemetry = telemetry or BunnyTelemetry()
        self._tracer = self._telemetry.diagnose

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
            report = await self._ask_for_the_name(hop)
            span.set_attribute(semconv.DNS_RCODE, report.rcode)
            if not report.ok:
                span.set_status(trace.Status(trace.StatusCode.ERROR, report.error))
            if report.rcode in NO_ANSWER:
                # Silent for the name: down, or up with a silent upstream?
                found = await liveness.check(
                    hop.server, self.alive_queries, timeout=self.timeout, attempts=self.attempts
                )
                report.alive, report.alive_evidence = found.alive, found.evidence
                span.set_attribute("bunnyrelay.diagnose.hop_alive", found.alive)
            return report

    async def _ask_for_the_name(self, hop: Hop) -> HopReport:
        resolver = self._telemetry.dns.wrap(Resolver(self._settings((hop.server,))))
        started = time.monotonic()
        try:
            resolution = await resolver.resolve(self.name + ".")
        except DnsLookupFailed as exc:
            took = (time.monotonic() - started) * 1000
            rcode = exc.rcode or type(exc).__name__
            return HopReport(hop.label, str(hop.server), rcode, [], None, took, False, str(exc))
        finally:
            await resolver.close()
        took = (time.monotonic() - started) * 1000
        addresses = list(resolution.addresses)
        return HopReport(
            hop.label, str(hop.server), "NOERROR", addresses, resolution.ttl, took, True, None
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
            if hop.alive is not None:
                state = "up" if hop.alive else "no sign of life"
                lines.append(f"   {'':<13} {'':<22} {state}: {hop.alive_evidence}")
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
