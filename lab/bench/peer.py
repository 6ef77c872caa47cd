"""The peer: the raw echo pair traced the way people trace gRPC services today.

That is ``opentelemetry-instrumentation-grpc``'s aio interceptors on the raw echo
servicer and client (:mod:`.rawecho`), and the OpenTelemetry SDK set up as its
documentation shows: a ``TracerProvider`` whose sampler comes from the standard
``OTEL_TRACES_SAMPLER`` variables, a ``BatchSpanProcessor`` and the SDK's own OTLP span
exporter for ``OTEL_EXPORTER_OTLP_PROTOCOL`` (its own encoder, not
:mod:`bunnyrelay.otlpencode`). The interceptors make a CLIENT and a SERVER span per call
and carry W3C trace context; they record no metrics. It is the row a traced bunny
must beat: what someone adds instead of this project. Unary only.

    python -m lab.bench.peer serve --listen 127.0.0.1:0
    python -m lab.bench.peer load --target 127.0.0.1:PORT --duration 10 --json
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence

from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from bunny.loadgen import LoadSettings
from lab.bench import rawecho


def _sdk_span_exporter() -> SpanExporter:
    """The SDK's OTLP span exporter for the protocol the environment names (gRPC when unset,
    as the SDK's own auto-configuration does for this package)."""
    if os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc") == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[assignment]
            OTLPSpanExporter,
        )
    return OTLPSpanExporter()


def tracer_provider() -> TracerProvider:
    provider = TracerProvider(resource=Resource.create())
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        provider.add_span_processor(BatchSpanProcessor(_sdk_span_exporter()))
    return provider


def main(argv: Sequence[str] | None = None) -> int:
    parser = rawecho.build_parser()
    parser.prog = "python -m lab.bench.peer"
    parser.description = (
        "The raw echo pair with opentelemetry-instrumentation-grpc's aio interceptors (unary only)."
    )
    args = parser.parse_args(argv)
    if args.command == "load" and args.stream:
        parser.error("--stream: the peer is measured for unary calls only")
    provider = tracer_provider()
    try:
        if args.command == "serve":
            # The instrumentation package has no type hints: its two factories are untyped.
            interceptor = aio_server_interceptor(tracer_provider=provider)  # type: ignore[no-untyped-call]
            asyncio.run(rawecho.serve(args.listen, interceptors=[interceptor]))
            return 0
        settings = LoadSettings(
            duration_s=args.duration, concurrency=args.concurrency, warmup_s=args.warmup
        )
        return asyncio.run(
            rawecho.load(
                args.target,
                settings,
                stream=False,
                payload_bytes=args.payload_bytes,
                interceptors=aio_client_interceptors(tracer_provider=provider),  # type: ignore[no-untyped-call]
            )
        )
    finally:
        provider.shutdown()


if __name__ == "__main__":
    sys.exit(main())
