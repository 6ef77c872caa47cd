"""A stream job's trace context (``JobRequest.trace_context``), read as the propagators would."""

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
from opentelemetry.trace import SpanContext
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from relay.callcontext import job_context, job_parent

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
def test_job_context_is_what_the_propagators_read(traceparent: str, tracestate: str) -> None:
    propagate.set_global_textmap(
        CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
    )
    expected = propagate.extract({"traceparent": traceparent, "tracestate": tracestate})

    got = job_context(traceparent, tracestate)

    assert _span_context(got) == _span_context(expected)
    assert _span_context(got).is_remote == _span_context(expected).is_remote
    assert dict(got).keys() == dict(expected).keys()


@pytest.mark.parametrize(("traceparent", "tracestate"), HEADERS)
@pytest.mark.usefixtures("restore_propagator")
def test_a_job_is_unsampled_exactly_when_the_read_span_is_valid_and_not_sampled(
    traceparent: str, tracestate: str
) -> None:
    propagate.set_global_textmap(
        CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
    )
    expected = _span_context(
        propagate.extract({"traceparent": traceparent, "tracestate": tracestate})
    )

    context, unsampled = job_parent(traceparent, tracestate)

    assert unsampled == (expected.is_valid and not expected.trace_flags.sampled)
    assert _span_context(context) == expected


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

    got = job_context(f"00-{TRACE_ID}-{SPAN_ID}-01", "")

    assert not _span_context(got).is_valid
    assert not job_parent(f"00-{TRACE_ID}-{SPAN_ID}-00", "")[1], "their context has no span"
