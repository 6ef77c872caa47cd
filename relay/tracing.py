"""Telemetry at relay's edge: wrappers around the servicer's methods and job executors.

- ``Run``: a SERVER span per call, its parent taken from the call's ``traceparent`` metadata
  with the global propagator, and the job's span (``job <kind>``) under it.
- ``RunStream`` and ``RunBatches``: each job is its own trace. Per job, a SERVER span (named
  for the method) whose parent is the job's ``trace_context``, and the job's span under it.
- Metrics (meter ``relay``): ``rpc.server.duration`` per call and ``bunnyrelay.jobs`` per job
  by kind and status (:mod:`bunnyrelay.histograms`, :mod:`bunnyrelay.tally`: the SDK's own
  instruments cost more per job than an echo job).

The wrappers are built once per server, with their names and attribute sets computed up front,
so a call pays for its spans and nothing else. Spans are made current with ``context.attach``
rather than ``start_as_current_span`` (two generator-based context managers per span). When the
sampler can never record (``OTEL_TRACES_SAMPLER=always_off``) no span is made at all: the
caller's context is still made current, so log lines keep its trace id.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping
from contextvars import ContextVar, Token
from time import perf_counter
from typing import Any, TypeAlias

import grpc
from opentelemetry import metrics, trace
from opentelemetry.context import Context as OtelContext
from opentelemetry.context import attach, detach
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode, get_current_span, set_span_in_context
from opentelemetry.util.types import AttributeValue

from bunnyrelay import semconv
from bunnyrelay.histograms import HotHistogram
from bunnyrelay.tally import Tally
from bunnyrelay.v1.jobs_pb2 import JobRequest, JobResult, JobStatus
from relay.callcontext import caller_context, caller_parent, job_context, job_parent
from relay.errors import Refused, failure_type
from relay.keptjobs import kept_jobs
from relay.runner import Context, Executor

SERVICE = "bunnyrelay.v1.JobService"

UnaryBehavior: TypeAlias = Callable[[JobRequest, Context], Awaitable[JobResult]]
StreamBehavior: TypeAlias = Callable[[AsyncIterable[Any], Context], Awaitable[None]]
Attributes: TypeAlias = Mapping[str, AttributeValue]

# The semantic conventions count these as the server's own failures; the others
# (INVALID_ARGUMENT, NOT_FOUND, ...) are the client's and leave the span's status unset.
_SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
_OK = grpc.StatusCode.OK
_SUCCEEDED = JobStatus.JOB_STATUS_SUCCEEDED
_UNKNOWN_KIND = "_unknown"
_ROOT = OtelContext()
# True while a call whose caller the head sampler did not sample runs spanless: its job knows
# it makes no span either without looking the current span up again (a dozen Python calls).
_UNSAMPLED_CALL: ContextVar[bool] = ContextVar("relay.unsampled_call", default=False)


def parse_peer(peer: str) -> dict[str, AttributeValue]:
    """``network.peer.*`` from gRPC's peer string (``ipv4:1.2.3.4:5``, ``ipv6:[::1]:5``)."""
    scheme, _, rest = peer.partition(":")
    if scheme in ("ipv4", "ipv6"):
        host, _, port = rest.rpartition(":")
        host = host.strip("[]")
        if host and port.isdigit():
            return {semconv.NETWORK_PEER_ADDRESS: host, semconv.NETWORK_PEER_PORT: int(port)}
    if scheme == "unix":
        return {semconv.NETWORK_PEER_ADDRESS: rest, semconv.NETWORK_TRANSPORT: "unix"}
    return {}


def never_records(provider: trace.TracerProvider) -> bool:
    """True when ``provider``'s sampler drops every span, whatever the parent says."""
    if not isinstance(provider, SdkTracerProvider):
        return False
    return provider.sampler.get_description() == "AlwaysOffSampler"


_DROPS_UNSAMPLED_PARENTS = (
    "remoteParentNotSampled:AlwaysOffSampler",
    "localParentNotSampled:AlwaysOffSampler",
)


def drops_unsampled_children(provider: trace.TracerProvider) -> bool:
    """True when ``provider``'s sampler records no child of an unsampled parent (every
    ``parentbased_*`` sampler the ``OTEL_*`` variables can choose)."""
    if not isinstance(provider, SdkTracerProvider):
        return False
    description = provider.sampler.get_description()
    return description.startswith("ParentBased{") and all(
        part in description for part in _DROPS_UNSAMPLED_PARENTS
    )


def _unsampled(span: trace.Span) -> bool:
    """A real trace's span that records nothing: its children would record nothing either."""
    context = span.get_span_context()
    return context.is_valid and not context.trace_flags.sampled and not span.is_recording()


def _cancelled_code(context: Context) -> grpc.StatusCode:
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0.001:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED


class RelayTelemetry:
    """Builds the wrappers; one per server, from the global providers unless given others."""

    def __init__(
        self,
        *,
        instance: str,
        kinds: Iterable[str],
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self._tracer = trace.get_tracer("relay", tracer_provider=tracer_provider)
        provider = tracer_provider or trace.get_tracer_provider()
        self._spans = not never_records(provider)
        # Then a span under a caller's unsampled span would be made only to be dropped:
        # the caller's own context stands in for it (same trace id on the log lines).
        self._skip_unsampled = drops_unsampled_children(provider)
        # Unless the job fails or is slow: then its spans are made once it is over.
        self._kept = kept_jobs(provider, self._tracer)
        meter = metrics.get_meter("relay", meter_provider=meter_provider)
        self._duration = HotHistogram(
            meter,
            semconv.METRIC_RPC_SERVER_DURATION,
            unit="ms",
            description="Duration of inbound RPCs",
        )
        self._jobs = Tally(
            meter,
            semconv.METRIC_JOBS,
            unit="{job}",
            description="Jobs answered, by kind and status",
        )
        self._instance = instance
        self._span_names = {kind: f"job {kind}" for kind in kinds}
        self._job_attributes: dict[str, Attributes] = {
            kind: {semconv.JOB_KIND: kind, semconv.RELAY_INSTANCE: instance}
            for kind in self._span_names
        }
        self._job_counts: dict[tuple[str, str, str, bool], Attributes] = {}

    # --- per call ----------------------------------------------------------------------

    def _rpc_attributes(
        self, method: str
    ) -> dict[grpc.StatusCode, tuple[tuple[str, int], Attributes]]:
        """Per status code, the duration's key and attributes for ``method``. The key holds
        the code's number, not the code: StatusCode is an Enum, whose hash is a Python call,
        so each call's OK duration is recorded under its key without hashing a code."""
        return {
            code: (
                (method, code.value[0]),
                {
                    semconv.RPC_SYSTEM: "grpc",
                    semconv.RPC_SERVICE: SERVICE,
                    semconv.RPC_METHOD: method,
                    semconv.RPC_GRPC_STATUS_CODE: code.value[0],
                },
            )
            for code in grpc.StatusCode
        }

    def _span_attributes(self, method: str) -> Callable[[str], Attributes]:
        base: dict[str, AttributeValue] = {
            semconv.RPC_SYSTEM: "grpc",
            semconv.RPC_SERVICE: SERVICE,
            semconv.RPC_METHOD: method,
        }

        # Keyed by the peer string: a connection's calls share one entry.
        @functools.lru_cache(maxsize=1024)
        def for_peer(peer: str) -> Attributes:
            return {**base, **parse_peer(peer)}

        return for_peer

    def _server_spans(self, method: str) -> Callable[[OtelContext, str], trace.Span]:
        """``start(parent, peer)``: the SERVER span of a call or a stream's job. Its callers
        make none under an unsampled caller when it would record nothing (``_skip_unsampled``):
        they know it from the caller's header, before they get here."""
        name = f"{SERVICE}/{method}"
        attributes_for = self._span_attributes(method)
        tracer = self._tracer

        def start(parent: OtelContext, peer: str) -> trace.Span:
            return tracer.start_span(
                name, context=parent, kind=SpanKind.SERVER, attributes=attributes_for(peer)
            )

        return start

    def unary(self, method: str, behavior: UnaryBehavior) -> UnaryBehavior:
        """A SERVER span and a duration per call, parented by the call's metadata."""
        start_server_span = self._server_spans(method)
        by_code = self._rpc_attributes(method)
        ok_key, ok_attributes = by_code[_OK]
        record = self._duration.record
        skip_unsampled = self._skip_unsampled

        async def traced(request: JobRequest, context: Context) -> JobResult:
            start = perf_counter()
            parent, unsampled = caller_parent(context.invocation_metadata() or ())
            code = _OK
            span: trace.Span | None
            flagged: Token[bool] | None = None
            if skip_unsampled and unsampled:
                # A span under the caller's unsampled one would record nothing: the caller's
                # context is made current as it is (the trace id on log lines), and the job
                # is told it makes no span either.
                span = None
                token = attach(parent)
                flagged = _UNSAMPLED_CALL.set(True)
            else:
                span = start_server_span(parent, context.peer())
                token = attach(set_span_in_context(span))
            try:
                return await behavior(request, context)
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except asyncio.CancelledError:
                code = _cancelled_code(context)
                raise
            except Exception as exc:
                code = grpc.StatusCode.UNKNOWN
                if span is not None:
                    span.record_exception(exc)
                raise
            finally:
                detach(token)
                if flagged is not None:
                    _UNSAMPLED_CALL.reset(flagged)
                if span is not None:
                    _end_rpc_span(span, code)
                    span.end()
                elapsed = (perf_counter() - start) * 1000
                if code is _OK:
                    record(ok_key, ok_attributes, elapsed)
                else:
                    record(*by_code[code], elapsed)

        async def untraced(request: JobRequest, context: Context) -> JobResult:
            start = perf_counter()
            # No span, but the caller's context, for the trace id on log lines (an empty
            # context, when the call carried none, is falsy: nothing to make current).
            caller = caller_context(context.invocation_metadata() or ())
            token = attach(caller) if caller else None
            code = _OK
            try:
                return await behavior(request, context)
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except asyncio.CancelledError:
                code = _cancelled_code(context)
                raise
            except Exception:
                code = grpc.StatusCode.UNKNOWN
                raise
            finally:
                if token is not None:
                    detach(token)
                elapsed = (perf_counter() - start) * 1000
                if code is _OK:
                    record(ok_key, ok_attributes, elapsed)
                else:
                    record(*by_code[code], elapsed)

        return traced if self._spans else untraced

    def stream(self, method: str, behavior: StreamBehavior) -> StreamBehavior:
        """A duration per call; the spans of a stream are per job (:meth:`streamed_job`)."""
        by_code = self._rpc_attributes(method)
        ok_key, ok_attributes = by_code[_OK]
        record = self._duration.record

        async def measured(requests: AsyncIterable[Any], context: Context) -> None:
            start = perf_counter()
            code = _OK
            try:
                await behavior(requests, context)
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except asyncio.CancelledError:
                code = _cancelled_code(context)
                raise
            except Exception:
                code = grpc.StatusCode.UNKNOWN
                raise
            finally:
                elapsed = (perf_counter() - start) * 1000
                if code is _OK:
                    record(ok_key, ok_attributes, elapsed)
                else:
                    record(*by_code[code], elapsed)

        return measured

    # --- per job -----------------------------------------------------------------------

    def job(self, execute: Executor) -> Executor:
        """The ``job <kind>`` span, under whatever span is current, and the jobs counter."""
        return self._job_span(execute) if self._spans else self._job_counter(execute)

    def _job_span(self, execute: Executor) -> Executor:
        tracer = self._tracer
        names = self._span_names
        known_attributes = self._job_attributes
        instance = self._instance
        skip_unsampled = self._skip_unsampled
        counted = self._kept_if_wrong("Run", execute)

        async def traced(request: JobRequest, context: Context) -> JobResult:
            if skip_unsampled and (_UNSAMPLED_CALL.get() or _unsampled(get_current_span())):
                # The span would record nothing; the caller's context is already current.
                return await counted(request, context)
            kind = request.kind
            known = known_attributes.get(kind)
            if known is None:
                # Unknown kinds share one span name, so a client cannot mint new names.
                known = {semconv.JOB_KIND: kind[:64], semconv.RELAY_INSTANCE: instance}
            span = tracer.start_span(
                names.get(kind, "job"),
                kind=SpanKind.INTERNAL,
                attributes={**known, semconv.JOB_ID: request.job_id},
            )
            token = attach(set_span_in_context(span))
            try:
                try:
                    result = await execute(request, context)
                except (asyncio.CancelledError, Exception) as exc:
                    # A refusal or a cancellation is a verdict; anything else a crash to show.
                    if not isinstance(exc, Refused | asyncio.CancelledError):
                        span.record_exception(exc)
                    self._end_job(span, kind, "FAILED", failure_type(exc), False)
                    raise
                if result.status == _SUCCEEDED:
                    self._end_job(span, kind, "SUCCEEDED", "", result.replayed)
                else:
                    self._end_job(span, kind, "FAILED", result.error.reason, result.replayed)
                return result
            finally:
                detach(token)
                span.end()

        return traced

    def _kept_if_wrong(self, method: str, execute: Executor) -> Executor:
        """``execute`` counted, for a job under an unsampled caller, with its spans made after
        all when it fails or is slow and this process keeps such jobs (:mod:`relay.keptjobs`)."""
        if self._kept is None:
            return self._job_counter(execute)
        names, known, instance = self._span_names, self._job_attributes, self._instance

        def job_attributes(kind: str) -> Attributes:
            return known.get(kind) or {
                semconv.JOB_KIND: kind[:64],
                semconv.RELAY_INSTANCE: instance,
            }

        return self._kept.wrap(
            execute,
            count=self._count_job,
            server_name=f"{SERVICE}/{method}",
            server_attributes=self._span_attributes(method),
            job_name=lambda kind: names.get(kind, "job"),
            job_attributes=job_attributes,
        )

    def _job_counter(self, execute: Executor) -> Executor:
        async def counted(request: JobRequest, context: Context) -> JobResult:
            kind = request.kind
            try:
                result = await execute(request, context)
            except (asyncio.CancelledError, Exception) as exc:
                self._count_job(kind, "FAILED", failure_type(exc), False)
                raise
            if result.status == _SUCCEEDED:
                self._count_job(kind, "SUCCEEDED", "", result.replayed)
            else:
                self._count_job(kind, "FAILED", result.error.reason, result.replayed)
            return result

        return counted

    def streamed_job(self, method: str, execute: Executor) -> Executor:
        """Per job of a stream: a SERVER span parented by the job's own trace context."""
        start_server_span = self._server_spans(method)
        traced_job = self.job(execute)
        counted_job = self._job_counter(execute)
        unsampled_job = self._kept_if_wrong(method, execute)
        skip_unsampled = self._skip_unsampled

        async def traced(request: JobRequest, context: Context) -> JobResult:
            carrier = request.trace_context
            if carrier.traceparent:
                parent, unsampled = job_parent(carrier.traceparent, carrier.tracestate)
            else:
                parent, unsampled = _ROOT, False
            if skip_unsampled and unsampled:
                # Neither span would record: the job runs in its caller's context, made
                # current once (for the trace id on log lines), as when tracing is off.
                token = attach(parent)
                try:
                    return await unsampled_job(request, context)
                finally:
                    detach(token)
            code = _OK
            span = start_server_span(parent, context.peer())
            token = attach(set_span_in_context(span))
            try:
                return await traced_job(request, context)
            except Refused as exc:
                code = exc.code
                raise
            except asyncio.CancelledError:
                code = _cancelled_code(context)
                raise
            except Exception:
                code = grpc.StatusCode.UNKNOWN
                raise
            finally:
                detach(token)
                _end_rpc_span(span, code)
                span.end()

        async def untraced(request: JobRequest, context: Context) -> JobResult:
            carrier = request.trace_context
            if not carrier.traceparent:
                return await counted_job(request, context)
            # No span, but the job's context, for the trace id on log lines.
            token = attach(job_context(carrier.traceparent, carrier.tracestate))
            try:
                return await counted_job(request, context)
            finally:
                detach(token)

        return traced if self._spans else untraced

    def _end_job(
        self, span: trace.Span, kind: str, status: str, error_type: str, replayed: bool
    ) -> None:
        self._count_job(kind, status, error_type, replayed)
        if span.is_recording():
            # One call: each attribute set on its own takes the span's lock again.
            ended: dict[str, AttributeValue] = {
                semconv.JOB_STATUS: status,
                semconv.JOB_REPLAYED: replayed,
            }
            if error_type:
                ended[semconv.ERROR_TYPE] = error_type
                span.set_status(Status(StatusCode.ERROR, error_type))
            span.set_attributes(ended)

    def _count_job(self, kind: str, status: str, error_type: str, replayed: bool) -> None:
        if kind not in self._span_names:
            kind = _UNKNOWN_KIND
        key = (kind, status, error_type, replayed)
        counted = self._job_counts.get(key)
        if counted is None:
            counted = {
                semconv.JOB_KIND: kind,
                semconv.JOB_STATUS: status,
                semconv.JOB_REPLAYED: replayed,
            }
            if error_type:
                counted[semconv.ERROR_TYPE] = error_type
            # Bounded: known kinds x two statuses x a few reasons.
            self._job_counts[key] = counted
        self._jobs.add(key, counted)


def _end_rpc_span(span: trace.Span, code: grpc.StatusCode) -> None:
    if code is _OK:
        span.set_attribute(semconv.RPC_GRPC_STATUS_CODE, 0)
        return
    span.set_attribute(semconv.RPC_GRPC_STATUS_CODE, code.value[0])
    if code in _SERVER_ERRORS:
        span.set_status(Status(StatusCode.ERROR, code.name))
