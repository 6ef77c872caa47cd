"""The caller's trace context, per call (unary) or per job (streams), as the propagator reads it.

``caller_context(metadata)`` returns what ``opentelemetry.propagate.extract(metadata,
getter=METADATA_GETTER)`` returns, for less: the global propagator walks the metadata once per
header it asks for (``traceparent``, ``tracestate``, ``baggage``), through a regular expression
that allows what a well-formed header never has, in about twenty Python calls; the header
bunny and most W3C clients send (``00-<trace id>-<parent id>-<flags>``, nothing else) needs one
walk and one anchored match. Anything else — a ``tracestate`` or ``baggage`` header, another
version, padding, other propagators in ``OTEL_PROPAGATORS`` — goes to the global propagator
itself, so the result never differs from it. ``job_context(traceparent, tracestate)`` does the
same for a job of a stream, whose context travels in its message (``JobRequest.trace_context``).

``caller_parent`` and ``job_parent`` return the same context with whether its span is a caller's
that the head sampler did not sample, read from the header's flags as it is parsed: relay makes
no span under such a caller, and asking the context for its span again costs about as much as
the rest of an unsampled job's telemetry.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final, TypeAlias

from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    TraceFlags,
    get_current_span,
    set_span_in_context,
)

from bunnyrelay.w3cheaders import TRACEPARENT, is_default_propagator

Metadata: TypeAlias = Iterable[tuple[str, str | bytes]]

# Headers only the global propagator reads: their presence sends the call its way.
_OTHERS: Final = frozenset({"tracestate", "baggage"})
# Version 00 exactly as bunny and the SDK write it, nothing around it.
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


Parent: TypeAlias = tuple[Context, bool]
"""A caller's context, and whether its span is valid and not sampled."""


def caller_context(metadata: Metadata) -> Context:
    """The context ``propagate.extract(metadata, getter=METADATA_GETTER)`` would return."""
    return caller_parent(metadata)[0]


def caller_parent(metadata: Metadata) -> Parent:
    """:func:`caller_context`, and whether its span is valid and not sampled."""
    propagator = propagate.get_global_textmap()
    if not is_default_propagator(propagator):
        return _flagged(propagator.extract(metadata, getter=METADATA_GETTER))
    traceparent: str | None = None
    for name, value in metadata:
        if name == TRACEPARENT:
            if traceparent is None and isinstance(value, str):
                traceparent = value
        elif name in _OTHERS:
            return _flagged(propagator.extract(metadata, getter=METADATA_GETTER))
    if traceparent is None:
        return (Context(), False)
    parent = _remote_parent(traceparent)
    if parent is None:
        return _flagged(propagator.extract(metadata, getter=METADATA_GETTER))
    return parent


def job_context(traceparent: str, tracestate: str) -> Context:
    """The context the global propagator would extract from a stream job's two headers
    (``JobRequest.trace_context``), taken the same short way as a call's."""
    return job_parent(traceparent, tracestate)[0]


def job_parent(traceparent: str, tracestate: str) -> Parent:
    """:func:`job_context`, and whether its span is valid and not sampled."""
    propagator = propagate.get_global_textmap()
    if not tracestate and is_default_propagator(propagator):
        parent = _remote_parent(traceparent)
        if parent is not None:
            return parent
    return _flagged(propagator.extract({TRACEPARENT: traceparent, "tracestate": tracestate}))


def _flagged(context: Context) -> Parent:
    """``context`` (from the propagator), and whether its span is valid, not sampled and
    records nothing (a propagator of another kind might put a recording one there)."""
    span = get_current_span(context)
    span_context = span.get_span_context()
    unsampled = span_context.is_valid and not span_context.trace_flags.sampled
    return (context, unsampled and not span.is_recording())


def _remote_parent(traceparent: str) -> Parent | None:
    """The context a plain version-00 ``traceparent`` gives (an empty one for the all-zero
    ids the propagator ignores) and whether it is unsampled, or None for any other header:
    the propagator reads those."""
    match = _VERSION_00.fullmatch(traceparent)
    if match is None:
        return None
    trace_hex, span_hex, flags_hex = match.groups()
    trace_id = int(trace_hex, 16)
    span_id = int(span_hex, 16)
    if not trace_id or not span_id:
        return (Context(), False)
    flags = int(flags_hex, 16)
    span_context = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags))
    return (
        set_span_in_context(NonRecordingSpan(span_context), Context()),
        not flags & TraceFlags.SAMPLED,
    )
