"""The caller's context from a call's metadata is what the global propagator would extract."""

from __future__ import annotations

import pytest
from opentelemetry import baggage, propagate
from opentelemetry.context import Context
from opentelemetry.trace import get_current_span

from relay.callcontext import METADATA_GETTER, Metadata, caller_context, caller_parent

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
AGENT = ("user-agent", "grpc-python-asyncio/1.85.3")

CARRIERS: dict[str, Metadata] = {
    "nothing": (),
    "no trace context": (AGENT,),
    "sampled": (AGENT, ("traceparent", f"00-{TRACE}-{PARENT}-01")),
    "unsampled": (("traceparent", f"00-{TRACE}-{PARENT}-00"), AGENT),
    "other flags": (("traceparent", f"00-{TRACE}-{PARENT}-ff"),),
    "all-zero trace id": (("traceparent", f"00-{'0' * 32}-{PARENT}-01"),),
    "all-zero parent id": (("traceparent", f"00-{TRACE}-{'0' * 16}-01"),),
    "upper-case hex": (("traceparent", f"00-{TRACE.upper()}-{PARENT}-01"),),
    "version ff": (("traceparent", f"ff-{TRACE}-{PARENT}-01"),),
    "a later version with more": (("traceparent", f"01-{TRACE}-{PARENT}-01-extra"),),
    "version 00 with more": (("traceparent", f"00-{TRACE}-{PARENT}-01-extra"),),
    "padded": (("traceparent", f" \t00-{TRACE}-{PARENT}-01\t "),),
    "too short": (("traceparent", f"00-{TRACE[:-1]}-{PARENT}-01"),),
    "garbage": (("traceparent", "not a traceparent"),),
    "bytes value": (("traceparent", f"00-{TRACE}-{PARENT}-01".encode()),),
    "two, first wins": (
        ("traceparent", f"00-{TRACE}-{PARENT}-01"),
        ("traceparent", f"00-{'1' * 32}-{'2' * 16}-00"),
    ),
    "bytes first, then text": (
        ("traceparent", b"00-" + TRACE.encode() + b"-" + PARENT.encode() + b"-01"),
        ("traceparent", f"00-{'1' * 32}-{PARENT}-00"),
    ),
    "with tracestate": (
        ("traceparent", f"00-{TRACE}-{PARENT}-01"),
        ("tracestate", "vendor=value,other=thing"),
    ),
    "with baggage": (("traceparent", f"00-{TRACE}-{PARENT}-01"), ("baggage", "team=jobs")),
    "baggage alone": (("baggage", "team=jobs,tier=gold"),),
}


def _seen(context: Context) -> tuple[object, dict[str, object]]:
    return get_current_span(context).get_span_context(), dict(baggage.get_all(context))


@pytest.mark.parametrize("name", sorted(CARRIERS))
def test_caller_context_is_what_the_global_propagator_extracts(name: str) -> None:
    metadata = CARRIERS[name]
    expected = propagate.extract(metadata, getter=METADATA_GETTER)
    assert _seen(caller_context(metadata)) == _seen(expected)
    assert bool(caller_context(metadata)) == bool(expected)


@pytest.mark.parametrize("name", sorted(CARRIERS))
def test_a_caller_is_unsampled_exactly_when_the_extracted_span_is_valid_and_not_sampled(
    name: str,
) -> None:
    # relay makes no span under such a caller: the flag must say what the context's own
    # span says, or a sampled caller's job would go untraced (or the reverse).
    metadata = CARRIERS[name]
    context, unsampled = caller_parent(metadata)
    span_context = get_current_span(propagate.extract(metadata, getter=METADATA_GETTER))
    expected = span_context.get_span_context()
    assert unsampled == (expected.is_valid and not expected.trace_flags.sampled)
    assert _seen(context) == _seen(propagate.extract(metadata, getter=METADATA_GETTER))


def test_an_unsampled_caller_is_told_apart_from_a_sampled_one() -> None:
    assert caller_parent(CARRIERS["unsampled"])[1]
    assert not caller_parent(CARRIERS["sampled"])[1]
    assert not caller_parent(CARRIERS["nothing"])[1], "no caller: a root, not unsampled"
    assert not caller_parent(CARRIERS["all-zero trace id"])[1]


def test_a_well_formed_traceparent_gives_its_remote_span_context() -> None:
    context = get_current_span(caller_context(CARRIERS["sampled"])).get_span_context()
    assert (context.trace_id, context.span_id) == (int(TRACE, 16), int(PARENT, 16))
    assert context.is_remote
    assert context.trace_flags.sampled


@pytest.mark.usefixtures("trace_context_only")
def test_other_configured_propagators_are_asked_themselves() -> None:
    # Only W3C trace context is configured: the caller's baggage must not be taken.
    context = caller_context(CARRIERS["with baggage"])
    assert dict(baggage.get_all(context)) == {}
    assert get_current_span(context).get_span_context().trace_id == int(TRACE, 16)
