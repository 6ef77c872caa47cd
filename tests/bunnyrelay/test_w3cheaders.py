"""A call's W3C headers are what the global propagator would write, whatever the context."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from opentelemetry import baggage, propagate, trace
from opentelemetry.context import Context, attach, detach
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    TraceFlags,
    TraceState,
    set_span_in_context,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from bunnyrelay.w3cheaders import (
    inject_child_headers,
    inject_headers,
    trace_id_hex,
    traceparent,
)

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
SPAN_ID = "b7ad6b7169203331"
TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736
SPAN = 0x00F067AA0BA902B7


def _with_span(
    trace_id: int = TRACE,
    span_id: int = SPAN,
    flags: int = 1,
    state: TraceState | None = None,
) -> Context:
    span_context = SpanContext(
        trace_id, span_id, is_remote=False, trace_flags=TraceFlags(flags), trace_state=state
    )
    return set_span_in_context(NonRecordingSpan(span_context))


CONTEXTS: dict[str, Callable[[], Context]] = {
    "empty": Context,
    "sampled": _with_span,
    "unsampled": lambda: _with_span(flags=0),
    "small ids": lambda: _with_span(trace_id=1, span_id=2),
    "largest ids, random trace id flag": lambda: _with_span(
        trace_id=2**128 - 1, span_id=2**64 - 1, flags=3
    ),
    "tracestate": lambda: _with_span(state=TraceState([("vendor", "value")])),
    "baggage": lambda: baggage.set_baggage("team", "jobs", _with_span()),
    "baggage without a span": lambda: baggage.set_baggage("team", "jobs"),
    "no trace id": lambda: _with_span(trace_id=0),
    "no span id": lambda: _with_span(span_id=0),
}


def _expected(context: Context | None) -> dict[str, str]:
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context)
    return carrier


def _written(context: Context | None) -> dict[str, str]:
    carrier: dict[str, str] = {}
    inject_headers(carrier, context)
    return carrier


@pytest.mark.parametrize("name", sorted(CONTEXTS))
def test_the_headers_of_a_given_context_are_the_propagators(name: str) -> None:
    context = CONTEXTS[name]()
    assert _written(context) == _expected(context)


@pytest.mark.parametrize("name", sorted(CONTEXTS))
def test_the_headers_of_the_current_context_are_the_propagators(name: str) -> None:
    token = attach(CONTEXTS[name]())
    try:
        assert _written(None) == _expected(None)
    finally:
        detach(token)


def test_a_plain_span_context_is_one_traceparent() -> None:
    assert _written(_with_span()) == {
        "traceparent": f"00-{TRACE:032x}-{SPAN:016x}-01",
    }


@pytest.mark.usefixtures("trace_context_only")
def test_other_configured_propagators_write_themselves() -> None:
    # Only W3C trace context is configured: the context's baggage must not be sent.
    context = CONTEXTS["baggage"]()
    assert _written(context) == {"traceparent": f"00-{TRACE:032x}-{SPAN:016x}-01"}


@pytest.mark.parametrize(
    "context",
    [
        SpanContext(int(TRACE_ID, 16), int(SPAN_ID, 16), False, TraceFlags(1)),
        SpanContext(int(TRACE_ID, 16), 1, False, TraceFlags(0)),
        SpanContext(1, int(SPAN_ID, 16), True, TraceFlags(1), TraceState([("vendor", "value")])),
    ],
)
def test_traceparent_is_what_the_propagator_writes_with_the_parent_given(
    context: SpanContext,
) -> None:
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(
        carrier, trace.set_span_in_context(NonRecordingSpan(context))
    )

    assert traceparent(context) == carrier["traceparent"]
    noted = traceparent(context, 0xABC)
    assert noted == carrier["traceparent"][:36] + f"{0xABC:016x}" + carrier["traceparent"][52:]


@pytest.mark.parametrize("trace_id", [0, 1, SPAN, TRACE, 2**128 - 1])
def test_a_trace_id_is_written_as_the_logs_and_headers_write_it(trace_id: int) -> None:
    assert trace_id_hex(trace_id) == f"{trace_id:032x}"


def test_an_invalid_context_has_no_traceparent() -> None:
    assert traceparent(trace.INVALID_SPAN_CONTEXT) == ""


CHILD = 0x1234ABCD5678EF90


def _child_expected(context: Context) -> dict[str, str]:
    """What the propagator writes with a child of ``context``'s span made current."""
    parent = trace.get_current_span(context).get_span_context()
    child = SpanContext(parent.trace_id, CHILD, False, parent.trace_flags, parent.trace_state)
    return _expected(set_span_in_context(NonRecordingSpan(child), context))


@pytest.mark.parametrize(
    "name", sorted(n for n in CONTEXTS if n not in ("empty", "baggage without a span"))
)
@pytest.mark.parametrize("given", [True, False], ids=["context given", "current context"])
def test_a_noted_childs_headers_are_the_propagators_with_the_child_current(
    name: str, given: bool
) -> None:
    # An unsampled job's RPC attempt is noted, not made current: its headers must be those
    # the propagator would write were it current (its id as the parent, the rest its job's).
    context = CONTEXTS[name]()
    parent = trace.get_current_span(context).get_span_context()
    carrier: dict[str, str] = {}
    token = attach(context)
    try:
        inject_child_headers(carrier, parent, CHILD, context if given else None)
    finally:
        detach(token)
    assert carrier == _child_expected(context)
