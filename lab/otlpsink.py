"""A local OTLP/gRPC receiver that keeps the spans it is sent, for the demo and the tests.

It is a real OTLP endpoint (the opentelemetry-proto collector services over
gRPC), so bunny and relay export to it exactly as they would to an
OpenTelemetry Collector: set ``OTEL_EXPORTER_OTLP_ENDPOINT`` to its address and
``OTEL_EXPORTER_OTLP_PROTOCOL=grpc``. Metrics are accepted and counted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2

_KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
_STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}


def _value(v: common_pb2.AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which == "array_value":
        return [_value(item) for item in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, which) if which else None


@dataclass(frozen=True)
class SinkSpan:
    """One received span, flattened for reading."""

    service: str
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: str
    start_ns: int
    end_ns: int
    status: str
    status_message: str
    attributes: dict[str, Any] = field(hash=False)

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, sink: OtlpSink) -> None:
        self.sink = sink

    async def Export(  # noqa: N802 - the OTLP method name
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.sink.add(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class _MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, sink: OtlpSink) -> None:
        self.sink = sink

    async def Export(  # noqa: N802 - the OTLP method name
        self, request: metrics_service_pb2.ExportMetricsServiceRequest, context: Any
    ) -> metrics_service_pb2.ExportMetricsServiceResponse:
        self.sink.metric_names.update(
            metric.name
            for resource in request.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
        )
        return metrics_service_pb2.ExportMetricsServiceResponse()


class OtlpSink:
    """``async with OtlpSink() as sink:`` then point exporters at ``sink.endpoint``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.spans: list[SinkSpan] = []
        self.metric_names: set[str] = set()
        self._server: grpc.aio.Server | None = None
        self._changed = asyncio.Event()

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self, service_name: str) -> dict[str, str]:
        """The standard variables that make a process export here."""
        return {
            "OTEL_SERVICE_NAME": service_name,
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        }

    def add(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        for resource_spans in request.resource_spans:
            service = next(
                (
                    _value(kv.value)
                    for kv in resource_spans.resource.attributes
                    if kv.key == "service.name"
                ),
                "",
            )
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    self.spans.append(
                        SinkSpan(
                            service=service,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            name=span.name,
                            kind=_KINDS.get(span.kind, str(span.kind)),
                            start_ns=span.start_time_unix_nano,
                            end_ns=span.end_time_unix_nano,
                            status=_STATUS.get(span.status.code, str(span.status.code)),
                            status_message=span.status.message,
                            attributes={kv.key: _value(kv.value) for kv in span.attributes},
                        )
                    )
        self._changed.set()

    def trace(self, trace_id: str) -> list[SinkSpan]:
        return sorted((s for s in self.spans if s.trace_id == trace_id), key=lambda s: s.start_ns)

    async def wait_for(self, predicate: Any, *, timeout: float = 10.0) -> list[SinkSpan]:
        """Wait until ``predicate(spans)`` is true; return the spans (TimeoutError if never)."""
        async with asyncio.timeout(timeout):
            while not predicate(self.spans):
                self._changed.clear()
                await self._changed.wait()
        return self.spans

    async def start(self) -> None:
        server = grpc.aio.server()
        # The OTLP packages ship untyped registration functions.
        add_traces = trace_service_pb2_grpc.add_TraceServiceServicer_to_server
        add_metrics = metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server
        add_traces(_TraceService(self), server)  # type: ignore[no-untyped-call]
        add_metrics(_MetricsService(self), server)  # type: ignore[no-untyped-call]
        self.port = server.add_insecure_port(f"{self.host}:{self.port}")
        await server.start()
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=None)
            self._server = None

    async def __aenter__(self) -> OtlpSink:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def services_in(spans: Iterable[SinkSpan]) -> set[str]:
    return {s.service for s in spans}
