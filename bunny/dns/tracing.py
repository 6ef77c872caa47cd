"""Telemetry around bunny's resolver: ``dns.lookup`` and ``dns.query`` spans and a metric.

:class:`TracedResolver` wraps a :class:`~bunny.dns.resolver.Resolver` from
outside, as relay's telemetry wraps relay's servicer: the resolver notes what it
did (:class:`~bunny.dns.resolver.LookupNotes`) and this module turns the notes
into telemetry once the lookup is over.

- ``dns.lookup`` (current while the lookup runs, so that it is the parent of what
  happens inside): the name, the candidates (when the search list made more of it
  than the name itself), where the answer came from (``bunnyrelay.dns.source``), the
  answers and their TTL, how many queries went to the wire; a failed lookup carries
  ``error.type`` and the likely cause.
- ``dns.query`` (CLIENT), one per query and attempt, with the times it ran; a
  lookup that one query answered carries that query on its own span instead (a
  child span would only repeat it).
- ``dns.lookup.duration`` (seconds), by name, with ``error.type`` on failure.
- How each lookup ended, its queries and its stale answers (:mod:`bunny.dns.lookupmetrics`).

A lookup answered from the wire hands the caller its answer first: its span (ended as
of that moment) and its metrics are finished on the event loop's next pass, which the
caller's next wait gives it, so the caller's latency does not include them. A failed
lookup's telemetry is complete before the caller sees the error.

:meth:`TracedResolver.cached` is the resolver's own: a fresh answer from the
cache costs no span (the job's span tells it, :mod:`bunny.tracing`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from opentelemetry import context, metrics, trace
from opentelemetry.trace import Span, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from bunny.dns.lookupmetrics import LookupMetrics
from bunny.dns.model import DnsQuery, Resolution
from bunny.dns.resolver import LookupNotes, Resolver, SentQuery
from bunny.dns.settings import ResolverSettings
from bunny.errors import DnsLookupFailed
from bunnyrelay import semconv
from bunnyrelay.histograms import HotHistogram

SCOPE = "bunny.resolver"
# Seconds; the semantic conventions' advice for dns.lookup.duration.
_DURATION_BUCKETS = (0.0, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)


class DnsTelemetry:
    """The tracer and the lookup histogram, made once and shared by every resolver it wraps."""

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        """The providers default to the global ones, as they are when this is made."""
        self.tracer = trace.get_tracer(SCOPE, tracer_provider=tracer_provider)
        meter = metrics.get_meter(SCOPE, meter_provider=meter_provider)
        self.duration = HotHistogram(
            meter,
            semconv.METRIC_DNS_LOOKUP_DURATION,
            unit="s",
            description="How long a DNS lookup took, cache hits included.",
            boundaries=_DURATION_BUCKETS,
        )
        self.lookups = LookupMetrics(meter)

    def wrap(self, resolver: Resolver) -> TracedResolver:
        return TracedResolver(resolver, self)


class TracedResolver:
    """A :class:`Resolver` whose every ``resolve`` is a traced and measured lookup."""

    def __init__(self, resolver: Resolver, telemetry: DnsTelemetry) -> None:
        self.resolver = resolver
        # The resolver's own method: a cache hit through here costs nothing more.
        self.cached = resolver.cached
        self._tracer = telemetry.tracer
        self._duration = telemetry.duration
        self._lookups = telemetry.lookups
        self._finishing: list[tuple[str, Span, LookupNotes, Resolution, float, int | None]] = []
        """Lookups answered whose telemetry waits for the loop's next pass."""

    @property
    def settings(self) -> ResolverSettings:
        return self.resolver.settings

    async def close(self) -> None:
        if self._finishing:
            self._finish()
        await self.resolver.close()

    async def resolve(self, name: str, *, deadline: float | None = None) -> Resolution:
        """:meth:`Resolver.resolve`, inside a ``dns.lookup`` span and timed."""
        started = time.monotonic()
        # start_span and attach rather than start_as_current_span (see docs/benchmarks.md).
        span = self._tracer.start_span(
            semconv.SPAN_DNS_LOOKUP, attributes={semconv.DNS_QUESTION_NAME: name}
        )
        recording = span.is_recording()
        notes = LookupNotes(recording, span.get_span_context() if recording else None)
        token = context.attach(trace.set_span_in_context(span))
        try:
            resolution = await self.resolver.resolve(name, deadline=deadline, notes=notes)
        except DnsLookupFailed as exc:
            # A failure's telemetry is complete before the caller sees it: the caller
            # may end its job, and its trace, at once.
            if recording:
                self._lookup_failed(span, name, notes, exc)
            error_type = type(exc).__name__
            self._duration.record(
                (name, error_type),
                {semconv.DNS_QUESTION_NAME: name, semconv.ERROR_TYPE: error_type},
                time.monotonic() - started,
            )
            self._lookups.failed(name, exc, notes)
            span.end()
            raise
        except BaseException:
            if recording:
                span.set_attributes(self._what_it_did(span, name, notes))
            span.end()
            raise
        finally:
            context.detach(token)
        if not notes.queries_sent:
            # Nothing went to the wire, so nothing made this caller wait: finish now, as a
            # caller that never yields to the loop would otherwise pile these up.
            self._finished(name, span, notes, resolution, time.monotonic() - started, None)
            return resolution
        # The caller has its answer now; the span and the metrics are finished on the
        # loop's next pass, as of this moment, so that the caller does not wait for them.
        self._finishing.append(
            (name, span, notes, resolution, time.monotonic() - started, time.time_ns())
        )
        if len(self._finishing) == 1:
            asyncio.get_running_loop().call_soon(self._finish)
        return resolution

    def _finish(self) -> None:
        """Finish the lookups answered from the wire since the loop's last pass."""
        finishing, self._finishing = self._finishing, []
        for entry in finishing:
            self._finished(*entry)

    def _finished(
        self,
        name: str,
        span: Span,
        notes: LookupNotes,
        resolution: Resolution,
        elapsed: float,
        ended_ns: int | None,
    ) -> None:
        if notes.keep_sent:
            self._lookup_done(span, name, notes, resolution, ended_ns)
        span.end(end_time=ended_ns)
        self._duration.record(name, {semconv.DNS_QUESTION_NAME: name}, elapsed)
        self._lookups.answered(name, resolution, notes)

    def _lookup_done(
        self,
        span: Span,
        name: str,
        notes: LookupNotes,
        resolution: Resolution,
        ended_ns: int | None,
    ) -> None:
        # One set_attributes call for the whole lookup: the SDK takes its lock and
        # checks the span on every call.
        attributes = self._what_it_did(span, name, notes)
        attributes[semconv.DNS_SOURCE] = resolution.source
        attributes[semconv.DNS_ANSWERS] = resolution.addresses
        attributes[semconv.DNS_TTL] = resolution.ttl
        attributes[semconv.DNS_QUERIES_SENT] = notes.queries_sent
        if notes.refresh_error:
            attributes[semconv.DNS_REFRESH_ERROR] = notes.refresh_error
            # As of the answer, like the span's end, not of when the span is finished.
            span.add_event(
                semconv.EVENT_DNS_SERVE_STALE,
                {semconv.DNS_REFRESH_ERROR: notes.refresh_error},
                timestamp=ended_ns,
            )
        span.set_attributes(attributes)

    def _lookup_failed(
        self, span: Span, name: str, notes: LookupNotes, exc: DnsLookupFailed
    ) -> None:
        attributes = self._what_it_did(span, name, notes)
        attributes[semconv.ERROR_TYPE] = type(exc).__name__
        attributes[semconv.DNS_LIKELY_CAUSE] = exc.likely_cause
        attributes[semconv.DNS_SOURCE] = "negative-cache" if exc.from_negative_cache else "wire"
        attributes[semconv.DNS_QUERIES_SENT] = sum(1 for q in exc.queries if q.source == "wire")
        span.set_attributes(attributes)
        span.set_status(Status(StatusCode.ERROR, str(exc)))

    def _what_it_did(self, span: Span, name: str, notes: LookupNotes) -> dict[str, AttributeValue]:
        """What the lookup did, once it is over: the candidates, whether it waited for
        another caller's lookup, and its queries: when one query answered it, on the
        lookup's own span (returned, for the caller to set with the rest); otherwise a
        ``dns.query`` span each, with the times it ran, so that retries, the search
        list and what failed where are each a span."""
        attributes: dict[str, AttributeValue] = {}
        asked = notes.candidates
        # One candidate that is the name itself says nothing the name does not.
        if len(asked) > 1 or (asked and asked[0] != name and asked[0] + "." != name):
            attributes[semconv.DNS_CANDIDATES] = asked
        if notes.coalesced:
            attributes[semconv.DNS_COALESCED] = True
            leader = notes.waited_for.handle if notes.waited_for is not None else None
            if isinstance(leader, SpanContext):
                span.add_link(leader)
        sent: Sequence[SentQuery] = notes.sent or ()
        answered = sent[0].query if len(sent) == 1 and sent[0].failure is None else None
        if answered is not None:
            attributes[semconv.DNS_QUESTION_TYPE] = answered.qtype
            attributes[semconv.DNS_NAMESERVER] = answered.nameserver
            attributes[semconv.DNS_RCODE] = answered.rcode
            return attributes
        # Explicit: a lookup's span may be finished after the caller has let go of it.
        parent = trace.set_span_in_context(span) if sent else None
        for entry in sent:
            query_attributes: dict[str, AttributeValue] = {
                semconv.DNS_QUESTION_NAME: entry.fqdn,
                semconv.DNS_QUESTION_TYPE: entry.qtype,
                semconv.DNS_NAMESERVER: entry.nameserver,
                semconv.DNS_ATTEMPT: entry.attempt,
            }
            if entry.query is not None:
                query_attributes.update(_query_attributes(entry.query, entry.failure))
            child = self._tracer.start_span(
                semconv.SPAN_DNS_QUERY,
                context=parent,
                kind=SpanKind.CLIENT,
                start_time=entry.started_ns,
                attributes=query_attributes,
            )
            if entry.failure is not None:
                child.set_status(Status(StatusCode.ERROR, str(entry.failure)))
            child.end(end_time=entry.ended_ns or time.time_ns())
        return attributes


def _query_attributes(
    query: DnsQuery, failure: DnsLookupFailed | None
) -> dict[str, AttributeValue]:
    attributes: dict[str, AttributeValue] = {
        semconv.DNS_RCODE: query.rcode,
        semconv.DNS_SOURCE: query.source,
        semconv.DNS_ANSWERS: query.answers,
    }
    if query.ttl is not None:
        attributes[semconv.DNS_TTL] = query.ttl
    if failure is not None:
        attributes[semconv.ERROR_TYPE] = type(failure).__name__
    return attributes
