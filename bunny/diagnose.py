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

The verdict's rules are in :mod:`bunny.verdict`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import trace

from bunny.dns import liveness
from bunny.dns.alivequery import DEFAULT_QUERIES, AliveQuery
from bunny.dns.model import Resolution
from bunny.dns.resolver import Resolver
from bunny.dns.settings import ResolverSettings
from bunny.errors import DnsLookupFailed
from bunny.hop import Hop
from bunny.relaypool import RelayEndpoint, grpc_target
from bunny.tls import ClientTls
from bunny.tracing import BunnyTelemetry
from bunny.verdict import (
    NO_ANSWER,
    Diagnosis,
    HopReport,
    RelayReport,
    SearchReport,
    judge,
    judge_relay,
)
from bunnyrelay import semconv
from bunnyrelay.settings import HostPort
from bunnyrelay.v1 import jobs_pb2, jobs_pb2_grpc


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
            verdict = judge(hop_reports, relay) if hop_reports else judge_relay(relay)
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
                            request, timeout=self.timeout * 2, metadata=record.metadata
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
