"""A job's root span when tracing is off: the SDK's non-recording span, made without the SDK.

With ``OTEL_TRACES_SAMPLER=always_off`` or ``parentbased_always_off`` no job is traced, yet
every job still starts a root span: its ids are the trace id on bunny's log lines and the
``traceparent`` relay receives (sampled flag off), so relay logs the same trace id. The
SDK's ``Tracer.start_span`` asks the sampler, builds a sampling result and two sets of flags
on the way to the one thing it can return here, a ``NonRecordingSpan`` with fresh ids:
about a fifth of what bunny's own steps cost a job with tracing off. :func:`dropped_root_maker`
makes that span's context (the same ids from the same generator, in the same order, the
same flags) for a fraction of the cost when nothing else could come out: the tracer is the
SDK's, enabled, counts no spans of its own (``OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED``),
its sampler is one of the two above, and no span is current (under a span, the SDK is
asked as before).
"""

from __future__ import annotations

from collections.abc import Callable

from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace._tracer_metrics import NoOpTracerMetrics
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, DEFAULT_OFF
from opentelemetry.trace import SpanContext, TraceFlags, Tracer

from bunnyrelay.keeping import sampled_spans_checked

DroppedRoot = Callable[[], SpanContext | None]
"""The context of a root span as the SDK would make it with no span current (its span is
``NonRecordingSpan(context)``), or None when the tracer was turned off meanwhile (the SDK
would then return an invalid span: ask it)."""

# The samplers OTEL_TRACES_SAMPLER chooses to trace nothing, as the SDK builds them (the
# same objects every time): at a root each can only drop, with no trace state and no
# attributes.
_DROP_EVERY_ROOT = (ALWAYS_OFF, DEFAULT_OFF)


def dropped_root_maker(tracer: Tracer) -> DroppedRoot | None:
    """What makes ``tracer``'s root spans when its sampler drops every root, or None when a
    root could come out any other way (then ``tracer.start_span`` makes them)."""
    if (
        type(tracer) is not SdkTracer
        # The SDK internals read here were checked against these releases.
        or not sampled_spans_checked()
        or not any(tracer.sampler is sampler for sampler in _DROP_EVERY_ROOT)
        or not isinstance(tracer._tracer_metrics, NoOpTracerMetrics)
    ):
        return None
    ids = tracer.id_generator
    new_trace_id = ids.generate_trace_id
    new_span_id = ids.generate_span_id
    # As the SDK flags a dropped root: not sampled, its trace id random when the generator's is.
    flags = TraceFlags(
        TraceFlags.DEFAULT | TraceFlags.RANDOM_TRACE_ID
        if ids.is_trace_id_random()
        else TraceFlags.DEFAULT
    )

    def make() -> SpanContext | None:
        # The provider can turn its tracers off at any time (its tracer configurator).
        if not tracer._tracer_config.is_enabled:
            return None
        trace_id = new_trace_id()
        return SpanContext(trace_id, new_span_id(), False, flags)

    return make
