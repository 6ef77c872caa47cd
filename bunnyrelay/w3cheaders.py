"""A call's W3C trace-context header, written the way the configured propagators would write it.

``inject_headers(carrier)`` does what ``opentelemetry.propagate.inject(carrier)`` does for a
dict carrier, for less, when the propagators are the API's default (W3C trace context, then
W3C baggage): the usual call carries a valid span context with no ``tracestate`` and no
baggage, whose ``traceparent`` is one formatted string; the global propagator reaches it
through about twenty Python calls. Anything else (a ``tracestate``, baggage, an invalid span
context, other propagators in ``OTEL_PROPAGATORS``) is written by the global propagator
itself, so the headers never differ from its.

:func:`inject_child_headers` writes them for a child of the current span that is not made
current itself; :func:`span_headers` for the current span, its context already in hand.

:func:`is_default_propagator` is the check both this and relay's reading of a call's context
(:mod:`relay.callcontext`) make before they take their short way.
"""

from __future__ import annotations

from typing import Final

from opentelemetry import baggage, propagate
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context, get_current
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import SpanContext, get_current_span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.trace.span import DEFAULT_TRACE_STATE

TRACEPARENT: Final = "traceparent"
TRACESTATE: Final = "tracestate"


class _Checked:
    """The global propagator last found to be the default (it is set once, at start)."""

    propagator: TextMapPropagator | None = None


def is_default_propagator(propagator: TextMapPropagator) -> bool:
    """Whether ``propagator`` is the API's default: W3C trace context, then W3C baggage."""
    if propagator is _Checked.propagator:
        return True
    if not isinstance(propagator, CompositePropagator):
        return False
    inner = getattr(propagator, "_propagators", None)
    default = (
        isinstance(inner, list)
        and len(inner) == 2
        and type(inner[0]) is TraceContextTextMapPropagator
        and type(inner[1]) is W3CBaggagePropagator
    )
    if default:
        _Checked.propagator = propagator
    return default


def inject_headers(carrier: dict[str, str], context: Context | None = None) -> None:
    """Add the headers ``propagate.inject(carrier, context)`` would add to ``carrier``."""
    propagator = propagate.get_global_textmap()
    if not is_default_propagator(propagator):
        propagator.inject(carrier, context)
        return
    if context is None:
        context = get_current()
    span_context = get_current_span(context).get_span_context()
    if not span_context.is_valid or span_context.trace_state or baggage.get_all(context):
        propagator.inject(carrier, context)
        return
    carrier[TRACEPARENT] = traceparent(span_context)


def span_headers(span_context: SpanContext, context: Context) -> dict[str, str]:
    """The headers ``propagate.inject`` would write in ``context``, whose span's context is
    ``span_context`` (valid): for a caller that has both already, as bunny's attempt of an
    unsampled job has its job's, so that neither is looked up again."""
    propagator = propagate.get_global_textmap()
    state = span_context.trace_state
    if (
        is_default_propagator(propagator)
        and (state is DEFAULT_TRACE_STATE or not state)
        and not baggage.get_all(context)
    ):
        return {TRACEPARENT: _written(span_context, span_context.span_id)}
    carrier: dict[str, str] = {}
    propagator.inject(carrier, context)
    return carrier


def traceparent(span_context: SpanContext, parent_id: int | None = None) -> str:
    """The version 00 ``traceparent`` the W3C propagator writes for ``span_context`` (with
    ``parent_id`` as its parent id when given), or "" for an invalid context, which it skips.

    A job on a stream carries it in its message (``JobRequest.trace_context``) when the
    propagators are the default, so the stream needs no carrier and no call metadata.
    """
    if not span_context.is_valid:
        return ""
    return _written(span_context, span_context.span_id if parent_id is None else parent_id)


def trace_id_hex(trace_id: int) -> str:
    """A trace id as W3C trace context and the logs write it: 32 lowercase hex digits, the
    text of ``f"{trace_id:032x}"`` for any id that fits in 128 bits, made for a third of
    its cost (a format spec is parsed on every call)."""
    return trace_id.to_bytes(16, "big").hex()


# Each flags byte as the header writes it: looked up rather than formatted.
_FLAGS_HEX: Final = tuple(f"{flags:02x}" for flags in range(256))


def _written(span_context: SpanContext, parent_id: int) -> str:
    """The version 00 ``traceparent`` of a valid ``span_context`` with ``parent_id`` as its
    parent id: what every header here comes to, once per call or job."""
    return (
        f"00-{span_context.trace_id.to_bytes(16, 'big').hex()}-"
        f"{parent_id.to_bytes(8, 'big').hex()}-{_FLAGS_HEX[span_context.trace_flags & 0xFF]}"
    )


def inject_child_headers(
    carrier: dict[str, str], parent: SpanContext, span_id: int, context: Context | None = None
) -> None:
    """Add the headers ``propagate.inject(carrier)`` would add with a child ``span_id`` of
    ``parent`` current, ``parent`` being the span's context in ``context`` (the current
    context when None): what keeping sends for a noted span (:mod:`bunnyrelay.keeping`),
    which is not made current because that alone would cost more than the noted span. The
    child shares its parent's trace, flags, trace state and baggage; only the parent id in
    ``traceparent`` differs."""
    propagator = propagate.get_global_textmap()
    state = parent.trace_state
    if (
        is_default_propagator(propagator)
        and parent.is_valid
        and (state is DEFAULT_TRACE_STATE or not state)
        and not baggage.get_all(context)
    ):
        carrier[TRACEPARENT] = _written(parent, span_id)
        return
    inject_headers(carrier, context)
    written = carrier.get(TRACEPARENT)
    if written is not None and len(written) == 55 and written[:3] == "00-":
        # A version 00 header (00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>):
        # the parent id at a fixed place.
        carrier[TRACEPARENT] = f"{written[:36]}{span_id:016x}{written[52:]}"
