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
    inject_child_headers,
    inject_headers,
    is_default_propagator,
    span_headers,
    traceparent,
)

SERVICE = "bunnyrelay.v1.JobService"
SCOPE = "bunny.rpc"

_OK: Final = grpc.StatusCode.OK
_NO_CARRIER: Final[dict[str, str]] = {}
# Endpoints live as long as their channel: a few per process. The bound is for the
# channels that come and go over a long run.
_MAX_CACHED = 1024


class RpcSpans:
    """Spans and the ``rpc.client.duration`` histogram for bunny's calls to relay."""

    def __init__(self, tracer: Tracer, meter: Meter) -> None:
        self.tracer = tracer
        self.keeping = tracer if isinstance(tracer, KeepingTracer) and tracer.keeps else None
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
        self._metric_attributes: dict[tuple[str, int], dict[str, AttributeValue]] = {}
        self._ok_durations: dict[str, tuple[tuple[str, int], dict[str, AttributeValue]]] = {}
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
        # Keyed by the code's number, an OK one found without hashing the code at all:
        # StatusCode is an Enum, whose hash is a Python call, twice per call otherwise.
        if code is _OK:
            known = self._ok_durations.get(method)
            if known is None:
                known = self._ok_durations[method] = self._metric_attributes_for(method, code)
        else:
            known = self._metric_attributes_for(method, code)
        self._duration.record(known[0], known[1], seconds * 1000.0)

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
    ) -> tuple[tuple[str, int], dict[str, AttributeValue]]:
        """The duration's key and attributes for ``method`` ending with ``code``."""
        key = (method, _CODE_NUMBERS[code])
        attributes = self._metric_attributes.get(key)
        if attributes is None:
            attributes = self._metric_attributes[key] = {
                semconv.RPC_SYSTEM: "grpc",
                semconv.RPC_SERVICE: SERVICE,
                semconv.RPC_METHOD: method,
                semconv.RPC_GRPC_STATUS_CODE: key[1],
            }
        return key, attributes


class AttemptRecord(NotedSpan):
    """One attempt's CLIENT span, current between ``__enter__`` and ``__exit__``.

    ``metadata`` carries the span's W3C trace context for the call (:meth:`header` reads
    one of its headers without building it). Set ``code`` before leaving when the call
    failed: the span and the metric take it from there. The span is made current
    with ``context.attach`` rather than ``start_as_current_span`` (docs/benchmarks.md).
    In a trace the head sampler dropped and bunny holds lightly, the attempt is only noted
    (:meth:`bunnyrelay.keeping.KeepingTracer.note`), and the record is that noted span
    itself: an unsampled attempt makes no object beyond its record, and a span only if its
    trace is kept.
    """

    __slots__ = (
        "_attempt",
        "_carrier",
        "_endpoint",
        "_in_message",
        "_measured",
        "_metadata",
        "_method",
        "_noted",
        "_own",
        "_span",
        "_spans",
        "_started",
        "_token",
        "code",
    )

    _carrier: dict[str, str]
    _metadata: grpc.aio.Metadata | None
    _noted: bool
    _own: bool
    _span: Span | None
    _token: Token[Context] | None
    code: grpc.StatusCode

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
        self.code = _OK
        self._carrier = _NO_CARRIER
        self._metadata = None
        self._noted = False

    @property
    def span(self) -> Span:
        """The attempt's span: the record itself when the attempt is noted (see above)."""
        # Not stored when it is the record: a reference to itself would leave every noted
        # record to the garbage collector's cycle search.
        return self if self._span is None else self._span

    @property
    def metadata(self) -> grpc.aio.Metadata:
        """The call's metadata: the W3C headers of its trace context."""
        metadata = self._metadata
        if metadata is None:
            # A grpc.aio.Metadata, which the call takes as it is: any other sequence it
            # copies into one, per call.
            metadata = self._metadata = grpc.aio.Metadata(*self._carrier.items())
        return metadata

    def __enter__(self) -> AttemptRecord:
        spans = self._spans
        method = self._method
        self._started = time.perf_counter()
        current_context = context.get_current()
        current = trace.get_current_span(current_context)
        keeping = spans.keeping
        if keeping is not None and keeping.note(self, current, self._attempt > 1):
            # The job's trace was dropped and is held lightly until the job ends: its
            # CLIENT span is noted, and made only if the trace is kept.
            self._noted = True
            self._own = True
            self._span = None
            self._token = None
            if not self._in_message:
                carrier: dict[str, str] = {}
                inject_child_headers(carrier, self._parent, self.span_id, current_context)
                self._carrier = carrier
            return self
        current_span_context = current.get_span_context()
        if current.is_recording() or not current_span_context.is_valid:
            span = self._span = spans.tracer.start_span(
                spans.span_name(method),
                kind=SpanKind.CLIENT,
                attributes=spans.span_attributes(method, self._endpoint, self._attempt),
            )
            self._own = True
            self._token = context.attach(trace.set_span_in_context(span))
        else:
            # The job's trace is not sampled, and with every sampler bunny accepts its
            # children would not be either: a span here would be made only to be
            # dropped. The job's own context goes out instead (same trace, sampled flag
            # off), so relay follows bunny's decision and logs the trace id.
            self._span = current
            self._own = False
            self._token = None
            if not self._in_message:
                self._carrier = span_headers(current_span_context, current_context)
            return self
        if not self._in_message:
            carrier = {}
            inject_headers(carrier)
            self._carrier = carrier
        return self

    def describe(self) -> None:
        # A noted attempt is described only when its trace is kept (see __enter__).
        spans = self._spans
        self._name = spans.span_name(self._method)
        self._kind = SpanKind.CLIENT
        self._attributes = spans.span_attributes(self._method, self._endpoint, self._attempt)
        self._scope = spans.keeping.scope  # type: ignore[union-attr]  # noted: keeping

    def header(self, name: str) -> str:
        """What this attempt's metadata carries under ``name`` (a W3C header), or ""."""
        return self._carrier.get(name, "")

    def write_trace_context(self, carrier: jobs_pb2.TraceContext) -> None:
        """Put this attempt's W3C trace context in a job's message (``in_message``)."""
        noted_id = self.span_id if self._noted else None
        if not is_default_propagator(propagate.get_global_textmap()):
            # Other propagators: what they would put in metadata, as they put it.
            headers: dict[str, str] = {}
            if noted_id is not None:
                inject_child_headers(headers, self._parent, noted_id)
            else:
                inject_headers(headers)
            carrier.traceparent = headers.get(TRACEPARENT, "")
            carrier.tracestate = headers.get(TRACESTATE, "")
            return
        # The context the headers would carry (the current span's, with a noted span's id
        # as the parent), formatted here: the call metadata costs more than the rest of a
        # job's trip through the stream.
        # Neither is looked up again: a noted attempt holds its parent's context, and any
        # other holds the span it made current (its own, or its job's when it made none).
        span = self._span
        span_context = self._parent if span is None else span.get_span_context()
        carrier.traceparent = traceparent(span_context, noted_id)
        state = span_context.trace_state
        carrier.tracestate = state.to_header() if state and span_context.is_valid else ""

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        code = self.code
        if self._noted:
            if code is _OK:
                # How most attempts of unsampled jobs end: in one call.
                self.end_with(_ENDED_OK)
            else:
                self.set_attributes(
                    {
                        semconv.RPC_GRPC_STATUS_CODE: _CODE_NUMBERS[code],
                        semconv.ERROR_TYPE: code.name,
                    }
                )
                self.set_status(Status(StatusCode.ERROR, code.name))
                self.end()
        # Without a span of its own (see __enter__) the job's span is not this one to end.
        elif self._own:
            span = self.span
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
