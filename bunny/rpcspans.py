"""The client side of an RPC attempt in telemetry: one CLIENT span per attempt, W3C context out.

Both runners (unary and stream) call relay through :func:`client_attempt`, so
span names, attributes and the RPC duration metric are decided in one place,
following the OpenTelemetry RPC semantic conventions.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import grpc
from opentelemetry import metrics, propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AnyValue

from bunny.relaypool import Endpoint
from bunnyrelay import semconv

SERVICE = "bunnyrelay.v1.JobService"

_tracer = trace.get_tracer("bunny.rpc")
_meter = metrics.get_meter("bunny.rpc")
_duration = _meter.create_histogram(
    semconv.METRIC_RPC_CLIENT_DURATION, unit="ms", description="Duration of RPC attempts to relay"
)


@dataclass
class AttemptRecord:
    """Filled in by the caller while the attempt runs: the status code to record."""

    span: Span
    code: grpc.StatusCode = grpc.StatusCode.OK
    metadata: list[tuple[str, str]] = field(default_factory=list)


@contextmanager
def client_attempt(method: str, endpoint: Endpoint, attempt: int) -> Iterator[AttemptRecord]:
    """A CLIENT span for one attempt of ``method`` on ``endpoint``, current while it runs.

    ``record.metadata`` carries the span's W3C trace context for the call.
    Set ``record.code`` before leaving; an exception leaves the span in error.
    """
    attributes: dict[str, AnyValue] = {
        semconv.RPC_SYSTEM: "grpc",
        semconv.RPC_SERVICE: SERVICE,
        semconv.RPC_METHOD: method,
        semconv.SERVER_ADDRESS: endpoint.name,
        semconv.SERVER_PORT: endpoint.port,
        semconv.NETWORK_PEER_ADDRESS: endpoint.address,
        semconv.NETWORK_PEER_PORT: endpoint.port,
        semconv.JOB_ATTEMPT: attempt,
    }
    started = time.perf_counter()
    with _tracer.start_as_current_span(
        f"{SERVICE}/{method}",
        kind=SpanKind.CLIENT,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        record = AttemptRecord(span)
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        record.metadata = list(carrier.items())
        try:
            yield record
        finally:
            code = record.code
            span.set_attribute(semconv.RPC_GRPC_STATUS_CODE, code.value[0])
            if code is not grpc.StatusCode.OK:
                span.set_status(Status(StatusCode.ERROR, code.name))
                span.set_attribute(semconv.ERROR_TYPE, code.name)
            _duration.record(
                (time.perf_counter() - started) * 1000.0,
                {
                    semconv.RPC_SYSTEM: "grpc",
                    semconv.RPC_SERVICE: SERVICE,
                    semconv.RPC_METHOD: method,
                    semconv.RPC_GRPC_STATUS_CODE: code.value[0],
                },
            )
