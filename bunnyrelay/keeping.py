"""Keeping the traces of jobs that went wrong, whatever the head sampler decided.

A head sampler (``OTEL_TRACES_SAMPLER=parentbased_traceidratio``) decides when a
job starts, before anything has failed: at 10 %, nine failed jobs in ten would
leave no trace. Two parts change that, in each process, for its own spans:

- :class:`RecordDropped` wraps the head sampler: where it says DROP, the span
  is still recorded (RECORD_ONLY: not sampled, so the W3C context sent to
  relay still says what the head sampler decided). That covers a trace's local
  root, children of a local parent that records, and, on relay, a remote
  parent whose flags say not sampled.
- :class:`KeepingSpanProcessor` holds the ended spans of each unsampled trace
  until its local root ends, then exports the whole local trace when something
  in it failed, was retried, or the root took at least the threshold, with
  ``bunnyrelay.sampling.kept`` (``error``, ``retried`` or ``slow``) on every span
  of it; otherwise it forgets them. The SDK's BatchSpanProcessor skips spans
  whose context is not sampled, so a kept span goes to it as a copy whose
  context says sampled.

Memory is bounded: at most ``max_waiting`` traces are held, none longer than
``max_age_s``; what is given up is counted in ``bunnyrelay.sampling.dropped_traces``.
A span that ends after its trace's root is not kept (the decision is made).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

from opentelemetry import metrics
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import (
    Link,
    SpanContext,
    SpanKind,
    StatusCode,
    TraceFlags,
    get_current_span,
)
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from bunnyrelay import semconv
from bunnyrelay.keepsettings import KeepSettings

SCOPE = "bunnyrelay.keeping"

KEPT_ERROR = "error"
KEPT_RETRIED = "retried"
KEPT_SLOW = "slow"

DROPPED_CAP = "cap"
DROPPED_AGE = "age"

_NS = 1_000_000_000
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
# Samplers that never start a trace of their own: whoever chose one wants nothing kept.
_NEVER_ROOTS = ("AlwaysOffSampler", "ParentBased{root:AlwaysOffSampler,")


def keeps_anything(head: Sampler) -> bool:
    """False for a sampler chosen to trace nothing (``always_off``, ``parentbased_always_off``)."""
    return not head.get_description().startswith(_NEVER_ROOTS)


class RecordDropped(Sampler):
    """``head``'s decisions, except that a span it drops is recorded without being sampled,
    unless its parent is a local span that records nothing (keeping was off for that trace)."""

    def __init__(self, head: Sampler) -> None:
        self.head = head
        self._description = f"RecordDropped{{{head.get_description()}}}"

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        decided = self.head.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )
        if decided.decision is not Decision.DROP:
            return decided
        parent = get_current_span(parent_context)
        of_parent = parent.get_span_context()
        if of_parent.is_valid and not of_parent.is_remote and not parent.is_recording():
            return decided
        # The head sampler's DROP result carries no attributes: the span's own go back in.
        return SamplingResult(Decision.RECORD_ONLY, attributes, decided.trace_state)

    def get_description(self) -> str:
        return self._description


class _Waiting:
    """One unsampled trace's ended spans, while its local root runs."""

    __slots__ = ("opened_ns", "roots", "spans")

    def __init__(self, opened_ns: int) -> None:
        self.opened_ns = opened_ns
        # A trace may have more than one local root at once (relay: two attempts of one job).
        self.roots = 1
        self.spans: list[ReadableSpan] = []


def _is_local_root(parent: SpanContext | None) -> bool:
    return parent is None or parent.is_remote


class KeepingSpanProcessor(SpanProcessor):
    """Exports (through ``export``) the unsampled traces worth keeping; see the module."""

    def __init__(
        self,
        export: SpanProcessor,
        settings: KeepSettings,
        meter: metrics.Meter,
    ) -> None:
        self._export = export
        self._slower_than_ns = int(settings.slower_than_s * _NS)
        self._max_waiting = settings.max_waiting
        self._max_age_ns = int(settings.max_age_s * _NS)
        self._waiting: OrderedDict[int, _Waiting] = OrderedDict()
        self._lock = threading.Lock()
        self._kept = meter.create_counter(
            semconv.METRIC_SAMPLING_KEPT,
            unit="{trace}",
            description="Unsampled traces exported because their job failed, was retried or "
            "was slow, by reason",
        )
        self._dropped = meter.create_counter(
            semconv.METRIC_SAMPLING_DROPPED,
            unit="{trace}",
            description="Unsampled traces given up before their job ended (too many held, or "
            "held too long), by reason",
        )
        self._kept_attributes = {
            reason: {semconv.SAMPLING_KEPT: reason}
            for reason in (KEPT_ERROR, KEPT_RETRIED, KEPT_SLOW)
        }
        self._dropped_attributes = {
            reason: {semconv.SAMPLING_DROP_REASON: reason} for reason in (DROPPED_CAP, DROPPED_AGE)
        }

    @property
    def waiting(self) -> int:
        """Traces held now."""
        return len(self._waiting)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        context = span.context
        if context.trace_flags.sampled or not _is_local_root(span.parent):
            return
        started = span.start_time or 0
        with self._lock:
            waiting = self._waiting.get(context.trace_id)
            if waiting is not None:
                waiting.roots += 1
                return
            self._make_room(started)
            self._waiting[context.trace_id] = _Waiting(started)

    def _make_room(self, now_ns: int) -> None:
        """Give up the oldest traces while there are too many or they are too old."""
        waiting = self._waiting
        while waiting:
            oldest = next(iter(waiting.values()))
            if len(waiting) >= self._max_waiting:
                reason = DROPPED_CAP
            elif now_ns - oldest.opened_ns > self._max_age_ns:
                reason = DROPPED_AGE
            else:
                return
            waiting.popitem(last=False)
            self._dropped.add(1, self._dropped_attributes[reason])

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is None or context.trace_flags.sampled:
            return
        trace_id = context.trace_id
        with self._lock:
            waiting = self._waiting.get(trace_id)
            if waiting is None:
                return
            waiting.spans.append(span)
            if not _is_local_root(span.parent):
                return
            waiting.roots -= 1
            if waiting.roots:
                return
            del self._waiting[trace_id]
        reason = self._why_keep(waiting.spans)
        if reason is not None:
            self._keep(waiting.spans, reason)

    def _why_keep(self, spans: list[ReadableSpan]) -> str | None:
        """``error`` when a local root failed, else ``retried`` when anything was tried again,
        else ``error`` when anything else failed, else ``slow`` for a slow root."""
        failed = retried = slow = False
        lookups = 0
        for span in spans:
            root = _is_local_root(span.parent)
            if span.status.status_code is StatusCode.ERROR:
                if root:
                    return KEPT_ERROR
                failed = True
            if root:
                if (span.end_time or 0) - (span.start_time or 0) >= self._slower_than_ns:
                    slow = True
                continue
            if span.name == semconv.SPAN_DNS_LOOKUP:
                lookups += 1
            elif span.kind is SpanKind.CLIENT:
                attributes = span.attributes or {}
                attempt = attributes.get(semconv.JOB_ATTEMPT) or attributes.get(semconv.DNS_ATTEMPT)
                if isinstance(attempt, int) and attempt > 1:
                    retried = True
        if retried or lookups > 1:
            return KEPT_RETRIED
        if failed:
            return KEPT_ERROR
        return KEPT_SLOW if slow else None

    def _keep(self, spans: list[ReadableSpan], reason: str) -> None:
        self._kept.add(1, self._kept_attributes[reason])
        on_end = self._export.on_end
        for span in spans:
            on_end(_sampled_copy(span, reason))

    def shutdown(self) -> None:
        with self._lock:
            self._waiting.clear()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _sampled_copy(span: ReadableSpan, reason: str) -> ReadableSpan:
    """``span`` as an exporter takes it: sampled, and saying why it was kept."""
    context = span.context
    assert context is not None
    sampled = SpanContext(
        context.trace_id,
        context.span_id,
        context.is_remote,
        TraceFlags(context.trace_flags | _SAMPLED),
        context.trace_state,
    )
    attributes = BoundedAttributes(
        attributes={**(span.attributes or {}), semconv.SAMPLING_KEPT: reason}, immutable=True
    )
    return ReadableSpan(
        name=span.name,
        context=sampled,
        parent=span.parent,
        resource=span.resource,
        attributes=attributes,
        events=span.events,
        links=span.links,
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def keeping_tracer_provider(head: TracerProvider, resource: Resource) -> TracerProvider:
    """A provider like ``head`` (made from the ``OTEL_*`` variables, nothing added to it yet)
    whose sampler records what ``head``'s drops; ``head`` itself when that sampler never
    starts a trace."""
    if not keeps_anything(head.sampler):
        return head
    head.shutdown()
    return TracerProvider(resource=resource, sampler=RecordDropped(head.sampler))


def add_keeping(
    provider: TracerProvider,
    export: SpanProcessor,
    settings: KeepSettings,
    meter_provider: metrics.MeterProvider,
) -> KeepingSpanProcessor | None:
    """Keep, through ``export``, the traces worth keeping that ``provider`` records without
    sampling them; nothing when its sampler records nothing it does not sample."""
    if not isinstance(provider.sampler, RecordDropped):
        return None
    processor = KeepingSpanProcessor(
        export, settings, metrics.get_meter(SCOPE, meter_provider=meter_provider)
    )
    provider.add_span_processor(processor)
    return processor
