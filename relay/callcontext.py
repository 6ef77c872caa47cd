"""The caller's trace context from a unary call's invocation metadata, per call.

``caller_context(metadata)`` returns what ``opentelemetry.propagate.extract(metadata,
getter=METADATA_GETTER)`` returns, for less: the global propagator walks the metadata once per
header it asks for (``traceparent``, ``tracestate``, ``baggage``), through a regular expression
that allows what a well-formed header never has, in about twenty Python calls; the header
bunny and most W3C clients send (``00-<trace id>-<parent id>-<flags>``, nothing else) needs one
walk and one anchored match. Anything else — a ``tracestate`` or ``baggage`` header, another
version, padding, other propagators in ``OTEL_PROPAGATORS`` — goes to the global propagator
itself, so the result never differs from it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final, TypeAlias

from opentelemetry import propagate
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import Getter, TextMapPropagator
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

Metadata: TypeAlias = Iterable[tuple[str, str | bytes]]

_TRACEPARENT: Final = "traceparent"
# Headers only the global propagator reads: their presence sends the call its way.
_OTHERS: Final = frozenset({"tracestate", "baggage"})
# Version 00 exactly as bunny and the SDK write it; all-zero ids are invalid and left to the
# propagator, which ignores them.
_VERSION_00: Final = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


class _MetadataGetter(Getter[Metadata]):
    """Reads W3C headers from gRPC invocation metadata (a sequence of key/value pairs)."""

    def get(self, carrier: Metadata, key: str) -> list[str] | None:
        values = [value for name, value in carrier if name == key and isinstance(value, str)]
        return values or None

    def keys(self, carrier: Metadata) -> list[str]:
        return [name for name, _ in carrier]


METADATA_GETTER: Final = _MetadataGetter()
"""For ``extract(metadata, getter=METADATA_GETTER)`` on a call's invocation metadata."""


def _is_default(propagator: TextMapPropagator) -> bool:
    """Whether ``propagator`` is the API's default: W3C trace context, then W3C baggage."""
    if not isinstance(propagator, CompositePropagator):
        return False
    inner = getattr(propagator, "_propagators", None)
    return (
        isinstance(inner, list)
        and len(inner) == 2
        and type(inner[0]) is TraceContextTextMapPropagator
        and type(inner[1]) is W3CBaggagePropagator
    )


class _Checked:
    """Which global propagator was last found to be the default (it is set once, at start)."""

    propagator: TextMapPropagator | None = None


def caller_context(metadata: Metadata) -> Context:
    """The context ``propagate.extract(metadata, getter=METADATA_GETTER)`` would return."""
    propagator = propagate.get_global_textmap()
    if propagator is not _Checked.propagator:
        if not _is_default(propagator):
            return propagator.extract(metadata, getter=METADATA_GETTER)
        _Checked.propagator = propagator
    traceparent: str | None = None
    for name, value in metadata:
        if name == _TRACEPARENT:
            if traceparent is None and isinstance(value, str):
                traceparent = value
        elif name in _OTHERS:
            return propagator.extract(metadata, getter=METADATA_GETTER)
    if traceparent is None:
        return Context()
    match = _VERSION_00.fullmatch(traceparent)
    if match is None:
        return propagator.extract(metadata, getter=METADATA_GETTER)
    trace_hex, span_hex, flags = match.groups()
    trace_id = int(trace_hex, 16)
    span_id = int(span_hex, 16)
    if not trace_id or not span_id:
        return Context()
    span_context = SpanContext(
        trace_id, span_id, is_remote=True, trace_flags=TraceFlags(int(flags, 16))
    )
    return set_span_in_context(NonRecordingSpan(span_context), Context())
