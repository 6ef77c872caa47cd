"""The client side of an RPC attempt in telemetry: one CLIENT span per attempt, W3C context out.

Both runners (unary and stream) call relay through :func:`client_attempt`, so
span names, attributes and the RPC duration metric are decided in one place,
following the OpenTelemetry RPC semantic conventions.

This runs once per attempt, so what does not change between attempts is built
once: the span attributes per endpoint and the metric attributes per method and
status code. The tracer is fetched from the installed provider on first use:
the one ``trace.get_tracer`` hands out before a provider is installed is a proxy
that delegates every call. The span is made current with ``context.attach``
rather than ``start_as_current_span``, whose two generator-based context
managers cost more than the rest of this module.
"""

from __future__ import annotations

import time
from contextvars import Token
from types import TracebackType
from typing import Final

import grpc
from opentelemetry import context, metrics, propagate, trace
from opentelemetry.context import Context
from opentelemetry.metrics import Histogram
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.util.types import AttributeValue

from bunny.relaypool import Endpoint
from bunnyrelay import semconv

SERVICE = "bunnyrelay.v1.JobService"

_OK: Final = grpc.StatusCode.OK
_SCOPE: Final = "bunny.rpc"


class LazyTracer:
    """A tracer fetched from the installed provider on first use after it is installed.

    ``trace.get_tracer`` at import time, before the provider is installed, hands out
    a proxy that delegates every call for the life of the process.
    """

    __slots__ = ("_proxy", "_real", "_scope")

    def __init__(self, scope: str) -> None:
        self._scope = scope
        self._proxy = trace.get_tracer(scope)
        self._real: Tracer | None = None

    def get(self) -> Tracer:
        real = self._real
        if real is None:
            if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
                return self._proxy
            real = self._real = trace.get_tracer(self._scope)
        return real


_tracer = LazyTracer(_SCOPE)
_duration: Histogram = metrics.get_meter(_SCOPE).create_histogram(
    semconv.METRIC_RPC_CLIENT_DURATION, unit="ms", description="Duration of RPC attempts to relay"
)
# Endpoints live as long as their channel: a few per process, so these stay small.
_span_attributes: dict[tuple[str, Endpoint, int], dict[str, AttributeValue]] = {}
_metric_attributes: dict[tuple[str, grpc.StatusCode], dict[str, AttributeValue]] = {}
_span_names: dict[str, str] = {}


def _attributes_for(method: str, endpoint: Endpoint, attempt: int) -> dict[str, AttributeValue]:
    key = (method, endpoint, attempt)
    attributes = _span_attributes.get(key)
    if attributes is None:
        if len(_span_attributes) > 1024:
            _span_attributes.clear()  # channels come and go over a long run
        attributes = _span_attributes[key] = {
            semconv.RPC_SYSTEM: "grpc",
            semconv.RPC_SERVICE: SERVICE,
            semconv.RPC_METHOD: method,
            semconv.SERVER_ADDRESS: endpoint.name,
            semconv.SERVER_PORT: endpoint.port,
            semconv.NETWORK_PEER_ADDRESS: endpoint.address,
            semconv.NETWORK_PEER_PORT: endpoint.port,
            semconv.JOB_ATTEMPT: attempt,
        }
    return attributes


def _metric_attributes_for(method: str, code: grpc.StatusCode) -> dict[str, AttributeValue]:
    key = (method, code)
    attributes = _metric_attributes.get(key)
    if attributes is None:
        attributes = _metric_attributes[key] = {
            semconv.RPC_SYSTEM: "grpc",
            semconv.RPC_SERVICE: SERVICE,
            semconv.RPC_METHOD: method,
            semconv.RPC_GRPC_STATUS_CODE: code.value[0],
        }
    return attributes


class AttemptRecord:
    """One attempt's CLIENT span, current between ``__enter__`` and ``__exit__``.

    ``metadata`` carries the span's W3C trace context for the call. Set ``code``
    before leaving; an exception leaves the span in error.
    """

    __slots__ = (
        "_attempt",
        "_endpoint",
        "_measured",
        "_method",
        "_started",
        "_token",
        "code",
        "metadata",
        "span",
    )

    span: Span
    _token: Token[Context] | None
    code: grpc.StatusCode
    metadata: list[tuple[str, str]]

    def __init__(self, method: str, endpoint: Endpoint, attempt: int, measured: bool) -> None:
        self._method = method
        self._endpoint = endpoint
        self._attempt = attempt
        self._measured = measured
        self.code = _OK
        self.metadata = []

    def __enter__(self) -> AttemptRecord:
        method = self._method
        name = _span_names.get(method)
        if name is None:
            name = _span_names[method] = f"{SERVICE}/{method}"
        self._started = time.perf_counter()
        current = trace.get_current_span()
        if current.get_span_context().is_valid and not current.is_recording():
            # The job's trace is not sampled, and with every sampler bunny accepts its
            # children would not be either: a span here would be made only to be
            # dropped. The job's own context goes out instead (same trace, sampled flag
            # off), so relay follows bunny's decision and logs the trace id.
            self.span = current
            self._token = None
        else:
            span = self.span = _tracer.get().start_span(
                name,
                kind=SpanKind.CLIENT,
                attributes=_attributes_for(method, self._endpoint, self._attempt),
            )
            self._token = context.attach(trace.set_span_in_context(span))
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        self.metadata = list(carrier.items())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        code = self.code
        # Without a token there is no span of its own (see __enter__): the job's span
        # is not this one to end.
        if self._token is not None:
            context.detach(self._token)
            span = self.span
            if span.is_recording():
                span.set_attribute(semconv.RPC_GRPC_STATUS_CODE, code.value[0])
                if code is not _OK:
                    span.set_status(Status(StatusCode.ERROR, code.name))
                    span.set_attribute(semconv.ERROR_TYPE, code.name)
            span.end()
        if self._measured:
            record_duration(self._method, code, time.perf_counter() - self._started)


def client_attempt(
    method: str, endpoint: Endpoint, attempt: int, *, measured: bool = True
) -> AttemptRecord:
    """A CLIENT span for one attempt of ``method`` on ``endpoint``, current while it runs::

    with client_attempt("Run", endpoint, attempt) as record:
        ...  # call with metadata=record.metadata; set record.code on failure

    ``measured``: the attempt is a whole call, so its duration is the call's
    ``rpc.client.duration``. A job on a stream is not: the stream records its own
    (:func:`record_duration`) when it ends, as the conventions define it.
    """
    return AttemptRecord(method, endpoint, attempt, measured)


def record_duration(method: str, code: grpc.StatusCode, seconds: float) -> None:
    """One call's ``rpc.client.duration``."""
    _duration.record(seconds * 1000.0, _metric_attributes_for(method, code))
