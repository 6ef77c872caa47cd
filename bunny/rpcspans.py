"""The client side of an RPC attempt in telemetry: one CLIENT span per attempt, W3C context out.

Both submitters (unary and stream) call relay through :meth:`RpcSpans.attempt`,
so span names, attributes and the RPC duration metric are decided in one place,
following the OpenTelemetry RPC semantic conventions.

This runs once per attempt, so what does not change between attempts is built
once per :class:`RpcSpans`: the span attributes per endpoint and the metric
attributes per method and status code.
"""

from __future__ import annotations

import time
from contextvars import Token
from types import TracebackType
from typing import Final

import grpc
from opentelemetry import context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.metrics import Meter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.util.types import AttributeValue

from bunny.relaypool import RelayEndpoint
from bunnyrelay import semconv
from bunnyrelay.histograms import HotHistogram
from bunnyrelay.keeping import KeepingTracer, NotedSpan
from bunnyrelay.v1 import jobs_pb2
from bunnyrelay.w3cheaders import (
    TRACEPARENT,
    TRACESTATE,
    inject_headers,
    is_default_propagator,
    traceparent,
)

SERVICE = "bunnyrelay.v1.JobService"
SCOPE = "bunny.rpc"

_OK: Final = grpc.StatusCode.OK
_TRACEPARENT: Final = "traceparent"
_NO_METADATA: Final = grpc.aio.Metadata()
# Endpoints live as long as their channel: a few per process. The bound is for the
# channels that come and go over a long run.
_MAX_CACHED = 1024


class RpcSpans:
    """Spans and the ``rpc.client.duration`` histogram for bunny's calls to relay."""

    def __init__(self, tracer: Tracer, meter: Meter) -> None:
        self.tracer = tracer
        self.keeping = tracer if isinstance(tracer, KeepingTracer) else None
        """The tracer again when it keeps what went wrong in traces its sampler drops."""
        self._duration = HotHistogram(
            meter,
            semconv.METRIC_RPC_CLIENT_DURATION,
            unit="ms",
            description="Duration of RPC attempts to relay",
        )
        self._span_attributes: dict[
            tuple[str, int, int], tuple[RelayEndpoint, dict[str, AttributeValue]]
        ] = {}
        self._metric_attributes: dict[tuple[str, grpc.StatusCode], dict[str, AttributeValue]] = {}
        self._span_names: dict[str, str] = {}

    def attempt(
        self,
        method: str,
        endpoint: RelayEndpoint,
        attempt: int,
        *,
        measured: bool = True,
        in_message: bool = False,
    ) -> AttemptRecord:
        """A CLIENT span for one attempt of ``method`` on ``endpoint``, current while it runs::

            with spans.attempt("Run", endpoint, attempt) as record:
                ...  # call with metadata=record.metadata; set record.code on failure

        ``measured``: the attempt is a whole call, so its duration is the call's
        ``rpc.client.duration``. A job on a stream is not: the stream records its own
        (:meth:`record_duration`) when it ends, as the conventions define it.
        ``in_message``: the trace context travels in the job's message, not in call
        metadata: :meth:`AttemptRecord.write_trace_context` puts it there, and
        ``metadata`` stays empty.
        """
        return AttemptRecord(self, method, endpoint, attempt, measured, in_message)

    def record_duration(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        """One call's ``rpc.client.duration``."""
        self._duration.record(
            (method, code), self._metric_attributes_for(method, code), seconds * 1000.0
        )

    def span_name(self, method: str) -> str:
        name = self._span_names.get(method)
        if name is None:
            name = self._span_names[method] = f"{SERVICE}/{method}"
        return name

    def span_attributes(
        self, method: str, endpoint: RelayEndpoint, attempt: int
    ) -> dict[str, AttributeValue]:
        # Keyed by the endpoint's identity: hashing the endpoint itself (a dataclass of five
        # fields) would cost more than the rest of this lookup, once per attempt.
        key = (method, id(endpoint), attempt)
        cached = self._span_attributes.get(key)
        if cached is not None and cached[0] is endpoint:
            return cached[1]
        if len(self._span_attributes) > _MAX_CACHED:
            self._span_attributes.clear()
        attributes: dict[str, AttributeValue] = {
            semconv.RPC_SYSTEM: "grpc",
            semconv.RPC_SERVICE: SERVICE,
            semconv.RPC_METHOD: method,
            semconv.SERVER_ADDRESS: endpoint.name,
            semconv.SERVER_PORT: endpoint.port,
            semconv.NETWORK_PEER_ADDRESS: endpoint.address,
            semconv.NETWORK_PEER_PORT: endpoint.port,
            semconv.JOB_ATTEMPT: attempt,
        }
        self._span_attributes[key] = (endpoint, attributes)
        return attributes

    def _metric_attributes_for(
        self, method: str, code: grpc.StatusCode
    ) -> dict[str, AttributeValue]:
        key = (method, code)
        attributes = self._metric_attributes.get(key)
        if attributes is None:
            attributes = self._metric_attributes[key] = {
                semconv.RPC_SYSTEM: "grpc",
                semconv.RPC_SERVICE: SERVICE,
                semconv.RPC_METHOD: method,
                semconv.RPC_GRPC_STATUS_CODE: code.value[0],
            }
        return attributes


class AttemptRecord:
    """One attempt's CLIENT span, current between ``__enter__`` and ``__exit__``.

    ``metadata`` carries the span's W3C trace context for the call. Set ``code``
    before leaving when the call failed: the span and the metric take it from there.
    The span is made current
    with ``context.attach`` rather than ``start_as_current_span`` (docs/benchmarks.md);
    in a trace the head sampler dropped and bunny holds lightly, it is only noted
    (:meth:`bunnyrelay.keeping.KeepingTracer.note_child`), made a span if the trace is kept.
    """

    __slots__ = (
        "_attempt",
        "_endpoint",
        "_in_message",
        "_measured",
        "_method",
        "_noted_id",
        "_own",
        "_spans",
        "_started",
        "_token",
        "code",
        "metadata",
        "span",
    )

    span: Span
    _own: bool
    _token: Token[Context] | None
    code: grpc.StatusCode
    metadata: grpc.aio.Metadata

    def __init__(
        self,
        spans: RpcSpans,
        method: str,
        endpoint: RelayEndpoint,
        attempt: int,
        measured: bool,
        in_message: bool = False,
    ) -> None:
        self._spans = spans
        self._method = method
        self._endpoint = endpoint
        self._attempt = attempt
        self._measured = measured
        self._in_message = in_message
        self._noted_id: int | None = None
        self.code = _OK
        self.metadata = _NO_METADATA

    def __enter__(self) -> AttemptRecord:
        spans = self._spans
        method = self._method
        self._started = time.perf_counter()
        current = trace.get_current_span()
        noted = None
        if spans.keeping is not None:
            noted = spans.keeping.note_child(
                current,
                spans.span_name(method),
                SpanKind.CLIENT,
                spans.span_attributes(method, self._endpoint, self._attempt),
            )
        if noted is not None:
            # The job's trace was dropped and is held lightly until the job ends: its
            # CLIENT span is noted, and made only if the trace is kept.
            self.span = noted
            self._own = True
            self._token = None
            self._noted_id = noted.span_id
            if not self._in_message:
                self.metadata = _injected(noted.span_id)
            return self
        if current.get_span_context().is_valid and not current.is_recording():
            # The job's trace is not sampled, and with every sampler bunny accepts its
            # children would not be either: a span here would be made only to be
            # dropped. The job's own context goes out instead (same trace, sampled flag
            # off), so relay follows bunny's decision and logs the trace id.
            self.span = current
            self._own = False
            self._token = None
        else:
            span = self.span = spans.tracer.start_span(
                spans.span_name(method),
                kind=SpanKind.CLIENT,
                attributes=spans.span_attributes(method, self._endpoint, self._attempt),
            )
            self._own = True
            self._token = context.attach(trace.set_span_in_context(span))
        if not self._in_message:
            self.metadata = _injected()
        return self

    def header(self, name: str) -> str:
        """What this attempt's metadata carries under ``name`` (a W3C header), or ""."""
        value = self.metadata.get(name, "")
        return value if isinstance(value, str) else ""

    def write_trace_context(self, carrier: jobs_pb2.TraceContext) -> None:
        """Put this attempt's W3C trace context in a job's message (``in_message``)."""
        if not is_default_propagator(propagate.get_global_textmap()):
            # Other propagators: what they would put in metadata, as they put it.
            self.metadata = _injected(self._noted_id)
            carrier.traceparent = self.header(TRACEPARENT)
            carrier.tracestate = self.header(TRACESTATE)
            return
        # The context _injected would write (the current span's, with a noted span's id
        # as the parent), formatted here: the call metadata costs more than the rest of a
        # job's trip through the stream.
        span_context = trace.get_current_span().get_span_context()
        carrier.traceparent = traceparent(span_context, self._noted_id)
        state = span_context.trace_state
        carrier.tracestate = state.to_header() if state and span_context.is_valid else ""

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        code = self.code
        # Without a span of its own (see __enter__) the job's span is not this one to end.
        if self._own:
            span = self.span
            if code is _OK and type(span) is NotedSpan:
                # How most attempts of unsampled jobs end: in one call.
                span.end_with(_ENDED_OK)
            else:
                if self._token is not None:
                    context.detach(self._token)
                if span.is_recording():
                    span.set_attribute(semconv.RPC_GRPC_STATUS_CODE, _CODE_NUMBERS[code])
                    if code is not _OK:
                        span.set_status(Status(StatusCode.ERROR, code.name))
                        span.set_attribute(semconv.ERROR_TYPE, code.name)
                span.end()
        if self._measured:
            self._spans.record_duration(self._method, code, time.perf_counter() - self._started)


# The number of each status code: StatusCode.value goes through the enum's descriptor, two
# Python calls, once per attempt otherwise.
_CODE_NUMBERS: Final[dict[grpc.StatusCode, int]] = {code: code.value[0] for code in grpc.StatusCode}
_ENDED_OK: Final[dict[str, AttributeValue]] = {semconv.RPC_GRPC_STATUS_CODE: _CODE_NUMBERS[_OK]}


def _injected(span_id: int | None = None) -> grpc.aio.Metadata:
    """The current context as the configured propagators put it in a call's metadata;
    with ``span_id`` as the parent in its W3C ``traceparent`` when given.

    A noted span is not made current (that alone would cost more than the span), so
    the context injected is its parent's, the same trace with the same flags: only the
    parent id differs, at a fixed place in a version 00 header
    (``00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>``).
    """
    carrier: dict[str, str] = {}
    inject_headers(carrier)
    if span_id is not None:
        parent = carrier.get(_TRACEPARENT)
        if parent is not None and len(parent) == 55 and parent[:3] == "00-":
            carrier[_TRACEPARENT] = f"{parent[:36]}{span_id:016x}{parent[52:]}"
    # A grpc.aio.Metadata, which the call takes as it is: any other sequence it copies
    # into one, per call.
    return grpc.aio.Metadata(*carrier.items())
