"""A stream job's W3C trace context, written and read directly.

A job on a stream carries its trace context in ``JobRequest.trace_context``
(``traceparent`` and ``tracestate``), once per job rather than once per call.
Going through the configured propagators for it builds a carrier, a context and,
on bunny's side, call metadata per job, and on relay's side matches a regular
expression compiled anew per call: together more than the rest of a job's
tracing-off path. When the propagators are the W3C ones (the default:
``tracecontext,baggage``), the two headers are exactly what this module writes
and reads; with any other propagator, the callers go through the propagators as
before, so that ``OTEL_PROPAGATORS`` keeps its meaning.

Only the common form takes the short way: a version ``00`` header in lower-case
hex with non-zero ids and an empty ``tracestate``. Anything else (another
version, a ``tracestate``, a malformed header) is left to the SDK's propagator,
which decides as it always did.
"""

from __future__ import annotations

import re
from typing import Final

from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    TraceFlags,
    set_span_in_context,
)
from opentelemetry.trace.span import DEFAULT_TRACE_STATE

TRACEPARENT: Final = "traceparent"
TRACESTATE: Final = "tracestate"
_W3C_FIELDS: Final = frozenset({TRACEPARENT, TRACESTATE, "baggage"})
_VERSION_00: Final = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_EMPTY: Final = Context()


class _Propagation:
    """Whether the global propagator reads and writes W3C headers only, decided once per
    propagator (the global one may be replaced, e.g. by a test or by the SDK's setup)."""

    __slots__ = ("_propagator", "_w3c")

    def __init__(self) -> None:
        self._propagator: TextMapPropagator | None = None
        self._w3c = False

    def w3c(self) -> bool:
        propagator = propagate.get_global_textmap()
        if propagator is not self._propagator:
            fields = propagator.fields
            self._w3c = TRACEPARENT in fields and fields <= _W3C_FIELDS
            self._propagator = propagator
        return self._w3c


_PROPAGATION: Final = _Propagation()


def w3c_propagation() -> bool:
    """True when the global propagator writes and reads only the W3C headers (and baggage,
    which a stream's job does not carry)."""
    return _PROPAGATION.w3c()


def traceparent(context: SpanContext, span_id: int | None = None) -> str:
    """The version ``00`` ``traceparent`` of ``context`` (with ``span_id`` as the parent
    id when given), as the SDK's propagator writes it; "" for an invalid context."""
    if not context.is_valid:
        return ""
    parent = context.span_id if span_id is None else span_id
    return f"00-{context.trace_id:032x}-{parent:016x}-{context.trace_flags:02x}"


def extract(traceparent: str, tracestate: str) -> Context:
    """The context the configured propagators would extract from these two headers alone."""
    if not tracestate and _PROPAGATION.w3c():
        match = _VERSION_00.fullmatch(traceparent)
        if match is not None:
            trace_id = int(match.group(1), 16)
            span_id = int(match.group(2), 16)
            if trace_id and span_id:
                span = NonRecordingSpan(
                    SpanContext(
                        trace_id,
                        span_id,
                        is_remote=True,
                        trace_flags=TraceFlags(int(match.group(3), 16)),
                        trace_state=DEFAULT_TRACE_STATE,
                    )
                )
                return set_span_in_context(span, _EMPTY)
    return propagate.extract({TRACEPARENT: traceparent, TRACESTATE: tracestate})
