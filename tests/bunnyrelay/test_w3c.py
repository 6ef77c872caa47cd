"""A stream job's trace context, written and read directly, as the propagators would."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.trace.span import TraceState

from bunnyrelay import w3c

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
SPAN_ID = "b7ad6b7169203331"

HEADERS = [
    (f"00-{TRACE_ID}-{SPAN_ID}-01", ""),
    (f"00-{TRACE_ID}-{SPAN_ID}-00", ""),
    (f"00-{TRACE_ID}-{SPAN_ID}-01", "vendor=value,other=x"),
    (f"00-{TRACE_ID.upper()}-{SPAN_ID}-01", ""),
    (f" 00-{TRACE_ID}-{SPAN_ID}-01 ", ""),
    (f"01-{TRACE_ID}-{SPAN_ID}-01-future", ""),
    (f"ff-{TRACE_ID}-{SPAN_ID}-01", ""),
    (f"00-{'0' * 32}-{SPAN_ID}-01", ""),
    (f"00-{TRACE_ID}-{'0' * 16}-01", ""),
    (f"00-{TRACE_ID}-{SPAN_ID}-01-extra", ""),
    (f"00-{TRACE_ID[:-1]}_-{SPAN_ID}-01", ""),
    ("", ""),
    ("garbage", "vendor=value"),
]


def _span_context(context: Context) -> SpanContext:
    return trace.get_current_span(context).get_span_context()


@pytest.fixture
def restore_propagator() -> Iterator[None]:
    before = propagate.get_global_textmap()
    yield
    propagate.set_global_textmap(before)


@pytest.mark.parametrize(("traceparent", "tracestate"), HEADERS)
@pytest.mark.usefixtures("restore_propagator")
def test_extract_reads_what_the_default_propagators_read(traceparent: str, tracestate: str) -> None:
    propagate.set_global_textmap(
        CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
    )
    expected = propagate.extract({"traceparent": traceparent, "tracestate": tracestate})

    got = w3c.extract(traceparent, tracestate)

    assert _span_context(got) == _span_context(expected)
    assert _span_context(got).is_remote == _span_context(expected).is_remote
    assert dict(got).keys() == dict(expected).keys()


@pytest.mark.parametrize(
    "context",
    [
        SpanContext(int(TRACE_ID, 16), int(SPAN_ID, 16), False, TraceFlags(1)),
        SpanContext(int(TRACE_ID, 16), 1, False, TraceFlags(0)),
        SpanContext(1, int(SPAN_ID, 16), True, TraceFlags(1), TraceState([("vendor", "value")])),
    ],
)
def test_traceparent_is_what_the_propagator_writes(context: SpanContext) -> None:
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(
        carrier, trace.set_span_in_context(NonRecordingSpan(context))
    )

    assert w3c.traceparent(context) == carrier["traceparent"]
    noted = w3c.traceparent(context, span_id=0xABC)
    assert noted == carrier["traceparent"][:36] + f"{0xABC:016x}" + carrier["traceparent"][52:]


def test_an_invalid_context_has_no_traceparent() -> None:
    assert w3c.traceparent(trace.INVALID_SPAN_CONTEXT) == ""


class _OwnHeader(TextMapPropagator):
    """A propagator of another format, as ``OTEL_PROPAGATORS`` may choose."""

    def extract(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> Context:
        return context or Context()

    def inject(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        setter.set(carrier, "x-own", "1")

    @property
    def fields(self) -> set[str]:
        return {"x-own"}


@pytest.mark.usefixtures("restore_propagator")
def test_with_other_propagators_the_propagators_decide() -> None:
    propagate.set_global_textmap(_OwnHeader())
    assert not w3c.w3c_propagation()

    got = w3c.extract(f"00-{TRACE_ID}-{SPAN_ID}-01", "")

    assert not _span_context(got).is_valid

    propagate.set_global_textmap(TraceContextTextMapPropagator())
    assert w3c.w3c_propagation()
    assert _span_context(w3c.extract(f"00-{TRACE_ID}-{SPAN_ID}-01", "")).is_valid
