"""The SDK's OTLP span exporters, each with only its encoding step given to :mod:`.wire`.

Everything else is the SDK's code, run unchanged: the ``OTEL_EXPORTER_OTLP_*`` settings,
retries, compression, headers, timeouts, size limits, the exporters' own metrics and logs.
Both hooks are private to the SDK, which is why :mod:`bunnyrelay.otlpencode` imports this
module only for the SDK versions it was checked against.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Sequence
from typing import Any, cast

import grpc
from opentelemetry.exporter.otlp.proto.grpc import trace_exporter as grpc_trace
from opentelemetry.exporter.otlp.proto.http import trace_exporter as http_trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from bunnyrelay.otlpencode import wire

__all__ = ["GrpcSpanExporter", "HttpSpanExporter"]


_EXPORT_METHOD = (
    f"/{ExportTraceServiceRequest.DESCRIPTOR.file.services_by_name['TraceService'].full_name}"
    "/Export"
)


class _SerializedTraceStub:
    """The generated TraceService stub, except that a request is sent as the bytes it is
    given: the generated one takes a message object and serializes it, so the encoder's
    bytes would be parsed into one first, only to be serialized again."""

    def __init__(self, channel: grpc.Channel) -> None:
        # Registered, as the generated stubs register theirs (grpcio's typing lacks it).
        self.Export: Any = channel.unary_unary(  # type: ignore[call-arg]
            _EXPORT_METHOD,
            request_serializer=None,
            response_deserializer=ExportTraceServiceResponse.FromString,
            _registered_method=True,
        )


class GrpcSpanExporter(grpc_trace.OTLPSpanExporter):
    """OTLP/gRPC: the exporter asks ``_translate_data`` for the request it sends, and its
    stub (made again whenever the exporter reconnects) sends those bytes as they are."""

    def _initialize_channel_and_stub(self) -> None:
        super()._initialize_channel_and_stub()  # type: ignore[no-untyped-call]  # the SDK's
        self._client = _SerializedTraceStub(self._channel)  # type: ignore[arg-type,assignment]

    def _translate_data(self, data: Sequence[ReadableSpan]) -> bytes:  # type: ignore[override]
        return wire.serialize_spans(data)


class _Serialized:
    """All that the OTLP/HTTP exporter asks of a request: its bytes."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data = data

    def SerializePartialToString(self) -> bytes:  # noqa: N802 - the protobuf method name
        return self._data


def _serialized(spans: Sequence[ReadableSpan]) -> _Serialized:
    return _Serialized(wire.serialize_spans(spans))


Export = Callable[[http_trace.OTLPSpanExporter, Sequence[ReadableSpan]], SpanExportResult]


def _official_export_encoding_with(encoder: Callable[[Sequence[ReadableSpan]], object]) -> Export:
    """The SDK's own ``OTLPSpanExporter.export`` for OTLP/HTTP, the same code object, run
    with its module's name ``encode_spans`` bound to ``encoder``.

    That method encodes inline, with no step a subclass could replace short of copying
    its body; this reuses the body instead of copying it.
    """
    official = http_trace.OTLPSpanExporter.export
    code = official.__code__
    if code.co_freevars or "encode_spans" not in code.co_names:
        raise ImportError("OTLPSpanExporter.export no longer encodes through encode_spans")
    namespace = {**official.__globals__, "encode_spans": encoder}
    export = types.FunctionType(code, namespace, official.__name__, official.__defaults__)
    export.__doc__ = official.__doc__
    return cast(Export, export)


class HttpSpanExporter(http_trace.OTLPSpanExporter):
    """OTLP/HTTP: the exporter's own ``export``, encoding with :func:`.wire.serialize_spans`."""

    export = _official_export_encoding_with(_serialized)  # type: ignore[assignment]
