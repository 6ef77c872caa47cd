"""A local OTLP receiver that keeps the spans it is sent, for the demo and the tests.

It is a real OTLP endpoint over both OTLP transports, so bunny and relay export to
it exactly as they would to an OpenTelemetry Collector (:meth:`OtlpSink.env` gives the
variables):

- OTLP/gRPC: the opentelemetry-proto collector services, on :attr:`OtlpSink.endpoint`;
- OTLP/HTTP with binary protobuf: ``POST /v1/traces`` and ``/v1/metrics`` on
  :attr:`OtlpSink.http_endpoint` (HTTP/1.1 with keep-alive, gzip or deflate bodies).

Each trace request is kept as received (:attr:`OtlpSink.requests`) and flattened into
:attr:`OtlpSink.spans`; metric data points are flattened into :attr:`OtlpSink.points`
(cumulative temporality, as bunny and relay export: the latest point of a series is its total).
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable, Iterable, Mapping
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


@dataclass(frozen=True)
class SinkPoint:
    """One received metric data point, flattened for reading: a sum's or gauge's value, or a
    histogram's count and sum."""

    service: str
    name: str
    unit: str
    attributes: dict[str, Any] = field(hash=False)
    instance: str = ""
    """The process's ``service.instance.id``: two relays are two series."""
    value: float = 0.0
    count: int = 0
    sum: float = 0.0
    bounds: tuple[float, ...] = ()
    """A histogram's bucket boundaries; ``bucket_counts`` has one more count (above the last)."""
    bucket_counts: tuple[int, ...] = ()


def _points(service: str, instance: str, metric: Any) -> list[SinkPoint]:
    which = metric.WhichOneof("data")
    if which in ("sum", "gauge"):
        return [
            SinkPoint(
                service,
                metric.name,
                metric.unit,
                {kv.key: _value(kv.value) for kv in point.attributes},
                instance,
                value=point.as_int if point.WhichOneof("value") == "as_int" else point.as_double,
            )
            for point in getattr(metric, which).data_points
        ]
    if which == "histogram":
        return [
            SinkPoint(
                service,
                metric.name,
                metric.unit,
                {kv.key: _value(kv.value) for kv in point.attributes},
                instance,
                count=point.count,
                sum=point.sum,
                bounds=tuple(point.explicit_bounds),
                bucket_counts=tuple(point.bucket_counts),
            )
            for point in metric.histogram.data_points
        ]
    return []


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
        self.sink.add_metrics(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


_DECOMPRESS = {
    b"gzip": lambda body: zlib.decompress(body, wbits=16 + zlib.MAX_WBITS),
    b"deflate": zlib.decompress,
}
_MAX_BODY = 64 * 1024 * 1024


class _HttpReceiver:
    """OTLP/HTTP (binary protobuf) over HTTP/1.1: one request after another on a connection."""

    def __init__(self, sink: OtlpSink) -> None:
        self.sink = sink
        self.connections: set[asyncio.StreamWriter] = set()
        # Each path: the request parser, what to do with the request, the (empty) response.
        self.signals: dict[bytes, tuple[Callable[[bytes], Any], Callable[[Any], None], bytes]] = {
            b"/v1/traces": (
                trace_service_pb2.ExportTraceServiceRequest.FromString,
                sink.add,
                trace_service_pb2.ExportTraceServiceResponse().SerializeToString(),
            ),
            b"/v1/metrics": (
                metrics_service_pb2.ExportMetricsServiceRequest.FromString,
                sink.add_metrics,
                metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString(),
            ),
        }

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.add(writer)
        try:
            while await self._one(reader, writer):
                pass
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.connections.discard(writer)
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection is to be closed."""
        request_line = await reader.readline()
        if not request_line:
            return False
        method, path, _version = [*request_line.split(), b"", b"", b""][:3]
        headers: dict[bytes, bytes] = {}
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        length = headers.get(b"content-length", b"")
        if not length.isdigit() or int(length) > _MAX_BODY:
            await _respond(writer, 411, b"", close=True)
            return False
        body = await reader.readexactly(int(length))
        keep_open = headers.get(b"connection", b"").lower() != b"close"
        signal = self.signals.get(path.split(b"?")[0])
        if method != b"POST" or signal is None:
            await _respond(writer, 404, b"", close=not keep_open)
            return keep_open
        decompress = _DECOMPRESS.get(headers.get(b"content-encoding", b"").lower())
        parse, keep, response = signal
        try:
            request = parse(decompress(body) if decompress is not None else body)
        except Exception:  # a body that is not the message: the sender's error, a 400
            await _respond(writer, 400, b"", close=not keep_open)
            return keep_open
        keep(request)
        await _respond(writer, 200, response, close=not keep_open)
        return keep_open


async def _respond(writer: asyncio.StreamWriter, status: int, body: bytes, *, close: bool) -> None:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 411: "Length Required"}[status]
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Content-Type: application/x-protobuf\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n"
    )
    writer.write(head.encode() + body)
    await writer.drain()


class OtlpSink:
    """``async with OtlpSink() as sink:`` then point exporters at ``sink.endpoint``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.http_port = 0
        self.spans: list[SinkSpan] = []
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.metric_names: set[str] = set()
        self.points: list[SinkPoint] = []
        self._server: grpc.aio.Server | None = None
        self._http_server: asyncio.Server | None = None
        self._http = _HttpReceiver(self)
        self._changed = asyncio.Event()

    @property
    def endpoint(self) -> str:
        """The OTLP/gRPC endpoint."""
        return f"http://{self.host}:{self.port}"

    @property
    def http_endpoint(self) -> str:
        """The OTLP/HTTP base endpoint (the exporters add ``/v1/traces``)."""
        return f"http://{self.host}:{self.http_port}"

    def env(self, service_name: str, protocol: str = "grpc") -> dict[str, str]:
        """The standard variables that make a process export here over ``protocol``."""
        return {
            "OTEL_SERVICE_NAME": service_name,
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint
            if protocol == "grpc"
            else self.http_endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        }

    def add(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        self.requests.append(request)
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

    def add_metrics(self, request: metrics_service_pb2.ExportMetricsServiceRequest) -> None:
        for resource in request.resource_metrics:
            named = {kv.key: _value(kv.value) for kv in resource.resource.attributes}
            service = str(named.get("service.name", ""))
            instance = str(named.get("service.instance.id", ""))
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    self.metric_names.add(metric.name)
                    self.points.extend(_points(service, instance, metric))
        self._changed.set()

    def series(self) -> list[SinkPoint]:
        """The last point of every series received (service, instance, metric, attributes):
        with cumulative temporality, the totals of the run."""
        last: dict[tuple[str, str, str, str], SinkPoint] = {}
        for point in self.points:
            key = (
                point.service,
                point.instance,
                point.name,
                repr(sorted(point.attributes.items())),
            )
            last[key] = point
        return list(last.values())

    def latest(self, name: str, attributes: Mapping[str, Any] | None = None) -> SinkPoint | None:
        """The last point received of metric ``name`` whose attributes include ``attributes``."""
        wanted = attributes or {}
        for point in reversed(self.points):
            if point.name == name and all(
                point.attributes.get(key) == value for key, value in wanted.items()
            ):
                return point
        return None

    def trace(self, trace_id: str) -> list[SinkSpan]:
        return sorted((s for s in self.spans if s.trace_id == trace_id), key=lambda s: s.start_ns)

    async def wait_for(self, predicate: Any, *, timeout: float = 10.0) -> list[SinkSpan]:
        """Wait until ``predicate(spans)`` is true; return the spans (TimeoutError if never)."""
        async with asyncio.timeout(timeout):
            while not predicate(self.spans):
                self._changed.clear()
                await self._changed.wait()
        return self.spans

    async def wait_for_points(
        self, predicate: Callable[[], bool], *, timeout: float = 10.0
    ) -> None:
        """Wait until ``predicate()`` holds of the points received (TimeoutError if never)."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

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
        self._http_server = await asyncio.start_server(self._http.serve, self.host, self.http_port)
        self.http_port = self._http_server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._http_server is not None:
            self._http_server.close()
            for connection in list(self._http.connections):
                connection.close()
            await self._http_server.wait_closed()
            self._http_server = None
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
