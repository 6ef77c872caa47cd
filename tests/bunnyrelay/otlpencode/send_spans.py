"""Run as a child Python: export one fixed batch of spans over OTLP, report what encoded it.

    python send_spans.py PROTOCOL plugin|sdk

``plugin`` exports with :func:`bunnyrelay.otlpencode.span_exporter`, as bunny and relay do;
``sdk`` with the SDK's own exporter for the protocol. The receiver is wherever the
``OTEL_EXPORTER_OTLP_*`` variables point. The spans are the same in every run (fixed ids,
times and resource), so what two runs deliver can be compared. Prints one JSON object:
the encoder chosen, the installed versions, whether the fast encoder's module was imported
and how many entries its caches hold, and the export result.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)

from bunnyrelay import otlpencode


class _CountingIds(IdGenerator):
    def __init__(self) -> None:
        self.next = 0x1000

    def generate_span_id(self) -> int:
        self.next += 1
        return self.next

    def generate_trace_id(self) -> int:
        self.next += 1
        return 0xABC << 64 | self.next


def fixed_spans() -> Sequence[ReadableSpan]:
    """bunny-like spans: a job with a DNS lookup and an RPC under a remote parent, and more."""
    captured = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource({"service.name": "bunny", "service.instance.id": "bunny-0"}),
        id_generator=_CountingIds(),
        shutdown_on_exit=False,
    )
    provider.add_span_processor(SimpleSpanProcessor(captured))
    bunny = provider.get_tracer(
        "bunny", "0.1.0", schema_url="https://opentelemetry.io/schemas/1.26.0"
    )
    dns = provider.get_tracer("bunny.dns", attributes={"scope.kind": "resolver"})
    caller = SpanContext(
        0xFEED << 64 | 1,
        0xBEEF,
        is_remote=True,
        trace_flags=TraceFlags(1),
        trace_state=TraceState([("vendor", "v1")]),
    )
    now = 1_750_000_000_000_000_000
    for job in range(20):
        start = now + job * 1_000_000
        parent = trace.set_span_in_context(NonRecordingSpan(caller))
        root = bunny.start_span(
            "bunnyrelay.v1.JobService/Run",
            context=parent,
            kind=SpanKind.CLIENT,
            start_time=start,
            attributes={
                "rpc.system": "grpc",
                "rpc.service": "bunnyrelay.v1.JobService",
                "rpc.method": "Run",
                "server.address": "relay.private.aws.internal",
                "server.port": 50051,
                "bunnyrelay.job.id": f"job-{job}",
                "bunnyrelay.job.replayed": job % 3 == 0,
            },
            links=[Link(SpanContext(0xABC, 0xDEF, is_remote=True), {"link.reason": "retry"})],
        )
        lookup = dns.start_span(
            "dns.lookup",
            context=trace.set_span_in_context(root),
            start_time=start + 10,
            attributes={
                "dns.question.name": "relay.private.aws.internal",
                "dns.answers": ["10.20.0.5", "10.20.0.6"],
                "bunnyrelay.dns.ttl": 30.5,
            },
        )
        lookup.add_event("bunnyrelay.dns.serve_stale", {"attempt": job}, timestamp=start + 20)
        lookup.end(end_time=start + 500)
        if job % 4 == 0:
            root.set_status(Status(StatusCode.ERROR, "UNAVAILABLE: relay draining"))
        else:
            root.set_status(Status(StatusCode.OK))
        root.end(end_time=start + 900_000)
    spans = captured.get_finished_spans()
    provider.shutdown()
    return spans


def sdk_exporter(protocol: str) -> SpanExporter:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[assignment]
            OTLPSpanExporter,
        )
    return OTLPSpanExporter()


def main(protocol: str, exporter_from: str) -> None:
    exporter = (
        otlpencode.span_exporter(protocol) if exporter_from == "plugin" else sdk_exporter(protocol)
    )
    try:
        result = exporter.export(fixed_spans())
    finally:
        exporter.shutdown()
    wire = sys.modules.get("bunnyrelay.otlpencode.wire")
    cached = sum(entries for entries, _ in wire.cache_sizes().values()) if wire else 0
    report = {
        "encoder": otlpencode.encoder(),
        "exporter": f"{type(exporter).__module__}.{type(exporter).__qualname__}",
        "versions": otlpencode.installed_versions(),
        "wire_imported": wire is not None,
        "wire_cache_entries": cached,
        "result": result.name,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:3])
