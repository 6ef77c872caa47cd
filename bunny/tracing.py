"""bunny's telemetry, in one place: every tracer and instrument bunny uses, made once, injected.

:class:`BunnyTelemetry` is made once per process, after the providers are
installed (:func:`bunnyrelay.telemetry.setup_telemetry`), and handed to what
needs it; nothing in bunny asks the OpenTelemetry globals for a tracer itself.

- :attr:`~BunnyTelemetry.jobs`: each job is one trace. Its root span ``job.submit``
  is wrapped around the submitter (:meth:`JobSpans.wrap`), so that the lookup and
  the RPC attempts inside it are its children; a job whose address came from
  bunny's cache, the hosts file or an IP target has no ``dns.lookup`` span (it
  would cost more than the answer), and its root span says where the address came
  from instead.
  ``bunnyrelay.jobs`` counts jobs by kind, final status and ``error.type``,
  ``bunnyrelay.job.attempts`` their RPC attempts (attempts per job, and so retries, is
  one over the other) and ``bunnyrelay.job.duration`` times them as the user waited.
- :attr:`~BunnyTelemetry.rpc`: a CLIENT span per RPC attempt (:mod:`bunny.rpcspans`).
- :attr:`~BunnyTelemetry.dns`: the resolver's lookup spans and metric (:mod:`bunny.dns.tracing`).
- :attr:`~BunnyTelemetry.diagnose`: the tracer of ``bunny diagnose``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from opentelemetry import context, metrics, trace
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    Status,
    StatusCode,
    Tracer,
    get_current_span,
)
from opentelemetry.util.types import AttributeValue

from bunny.dns.model import Resolution
from bunny.dns.tracing import DnsTelemetry
from bunny.droppedroots import dropped_root_maker
from bunny.outcome import SUCCEEDED, JobOutcome
from bunny.rpcspans import SCOPE as RPC_SCOPE
from bunny.rpcspans import RpcSpans
from bunnyrelay import semconv
from bunnyrelay.histograms import HotHistogram
from bunnyrelay.keeping import LocalRoot
from bunnyrelay.tally import Tally
from bunnyrelay.v1 import jobs_pb2
from bunnyrelay.w3cheaders import trace_id_hex

JOB_SCOPE = "bunny.runner"
DIAGNOSE_SCOPE = "bunny.diagnose"

# Answers that come without a dns.lookup span of their own: the job's span tells them.
_NO_LOOKUP_SPAN = frozenset({"cache", "hosts", "literal"})
# Kinds come from callers; past this many (kind, status) pairs the rest count as one.
_MAX_COUNTED = 1024
# Seconds: a job is a lookup and an RPC or a few, up to its deadline with retries.
_JOB_DURATION_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
)

_SUCCEEDED: dict[str, AttributeValue] = {semconv.JOB_STATUS: SUCCEEDED}

JobCore = Callable[[jobs_pb2.JobRequest, str], Awaitable[JobOutcome]]
"""Runs one job given its trace id; the part of a submitter that the job's span wraps."""
Job = Callable[[jobs_pb2.JobRequest], Awaitable[JobOutcome]]


class JobSpans:
    """The ``job.submit`` span around each job, and the ``bunnyrelay.jobs`` count."""

    def __init__(self, tracer: Tracer, meter: metrics.Meter) -> None:
        self._tracer = tracer
        self._jobs = Tally(
            meter,
            semconv.METRIC_JOBS,
            unit="{job}",
            description="Jobs bunny submitted, by kind and final status",
        )
        self._attempts = Tally(
            meter,
            semconv.METRIC_JOB_ATTEMPTS,
            unit="{attempt}",
            description="RPC attempts bunny made for its jobs, by kind and final status",
        )
        self._duration = HotHistogram(
            meter,
            semconv.METRIC_JOB_DURATION,
            unit="s",
            description="How long bunny's jobs took, lookup and retries included",
            boundaries=_JOB_DURATION_BUCKETS,
        )
        self._counted: dict[tuple[str, str, str], dict[str, AttributeValue]] = {}
        # The attributes of the last answer told on a job's span, rebuilt when it changes.
        self._told: Resolution | None = None
        self._told_attributes: dict[str, AttributeValue] = {}
        self._told_succeeded: dict[str, AttributeValue] = dict(_SUCCEEDED)

    def wrap(self, core: JobCore) -> Job:
        """``core`` inside the job's span, current while it runs, then counted."""
        tracer = self._tracer

        async def run(request: jobs_pb2.JobRequest) -> JobOutcome:
            # start_span and attach rather than start_as_current_span (docs/benchmarks.md).
            span = tracer.start_span(
                "job.submit",
                attributes={semconv.JOB_ID: request.job_id, semconv.JOB_KIND: request.kind},
            )
            token = context.attach(trace.set_span_in_context(span))
            try:
                outcome = await core(request, trace_id_hex(span.get_span_context().trace_id))
            except BaseException:
                context.detach(token)
                span.end()
                raise
            context.detach(token)
            if type(span) is LocalRoot:
                # An unsampled job's root, recorded by keeping: most end well, their trace
                # forgotten as they end, and need not be told anything.
                if not (outcome.error is None and outcome.status == SUCCEEDED and span.end_well()):
                    self._finish(span, outcome)
                    span.end()
            elif span.is_recording():
                self._finish(span, outcome)
                span.end()
            self._count(outcome)
            return outcome

        dropped_root = dropped_root_maker(tracer)
        if dropped_root is None:
            return run

        async def run_untraced(request: jobs_pb2.JobRequest) -> JobOutcome:
            # Tracing off: the job's root is made directly (bunny.droppedroots). It records
            # nothing, so it is told nothing and has nothing to end.
            # Most jobs start in an empty context (falsy): no span to look for in it.
            current = context.get_current()
            if current and get_current_span(current).get_span_context().is_valid:
                return await run(request)
            root = dropped_root()
            if root is None:
                return await run(request)
            token = context.attach(trace.set_span_in_context(NonRecordingSpan(root), current))
            try:
                outcome = await core(request, trace_id_hex(root.trace_id))
            finally:
                context.detach(token)
            self._count(outcome)
            return outcome

        return run_untraced

    def _finish(self, span: Span, outcome: JobOutcome) -> None:
        """Tell ``span`` how its job ended."""
        answer = outcome.resolution
        if answer is not None and answer.source not in _NO_LOOKUP_SPAN:
            answer = None  # its dns.lookup span tells it
        if answer is not None and answer is not self._told:
            self._told = answer
            self._told_attributes = {
                semconv.DNS_SOURCE: answer.source,
                semconv.DNS_QUESTION_NAME: answer.name,
                semconv.DNS_ANSWERS: answer.addresses,
            }
            self._told_succeeded = {**_SUCCEEDED, **self._told_attributes}
        if outcome.error is None and outcome.status == SUCCEEDED:
            # Most jobs: their attributes in one call, from a dict built once per answer.
            span.set_attributes(_SUCCEEDED if answer is None else self._told_succeeded)
            return
        span.set_attribute(semconv.JOB_STATUS, outcome.status)
        if outcome.error is not None:
            span.set_status(Status(StatusCode.ERROR, outcome.error.message))
            span.set_attribute(semconv.ERROR_TYPE, outcome.error.type)
        if answer is not None:
            span.set_attributes(self._told_attributes)

    def _count(self, outcome: JobOutcome) -> None:
        kind, status = outcome.kind, outcome.status
        error_type = outcome.error.type if outcome.error is not None else ""
        key = (kind, status, error_type)
        attributes = self._counted.get(key)
        if attributes is None:
            if len(self._counted) >= _MAX_COUNTED:
                kind = "_other"
                key = (kind, status, error_type)
            attributes = {semconv.JOB_KIND: kind, semconv.JOB_STATUS: status}
            if error_type:
                attributes[semconv.ERROR_TYPE] = error_type
            self._counted[key] = attributes
        self._jobs.add(key, attributes)
        self._attempts.add(key, attributes, outcome.attempts)
        self._duration.record(key, attributes, outcome.duration_ms / 1000)


class BunnyTelemetry:
    """Every tracer and instrument of bunny, from the providers given (or the global ones,
    as they are when this is made)."""

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        def tracer(scope: str) -> Tracer:
            return trace.get_tracer(scope, tracer_provider=tracer_provider)

        def meter(scope: str) -> metrics.Meter:
            return metrics.get_meter(scope, meter_provider=meter_provider)

        self.jobs = JobSpans(tracer(JOB_SCOPE), meter(JOB_SCOPE))
        self.rpc = RpcSpans(tracer(RPC_SCOPE), meter(RPC_SCOPE))
        self.dns = DnsTelemetry(tracer_provider=tracer_provider, meter_provider=meter_provider)
        self.diagnose = tracer(DIAGNOSE_SCOPE)
