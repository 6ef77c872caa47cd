"""relay's side of keeping what went wrong, for jobs whose caller's trace is not sampled.

Such a job runs without spans, as it always has (:mod:`relay.tracing`), and
costs about what it did (two clock readings); only when it failed or took at
least the threshold are its two spans made, once it is over, with the times it
ran: the SERVER span under the caller's context and the job's span under it.
They are light spans of :mod:`bunnyrelay.keeping` (the caller's trace id, not
sampled), so the keeper judges them as any trace it holds and exports them
marked ``bunnyrelay.sampling.kept``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from time import time_ns

import grpc
from opentelemetry import trace
from opentelemetry.context import get_current
from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context
from opentelemetry.util.types import AttributeValue

from bunnyrelay import semconv
from bunnyrelay.keeping import KeepingTracerProvider, records_dropped_traces
from bunnyrelay.v1.jobs_pb2 import JobRequest, JobResult, JobStatus
from relay.errors import Refused, failure_type
from relay.runner import Context, Executor

_SUCCEEDED = JobStatus.JOB_STATUS_SUCCEEDED
_OK = grpc.StatusCode.OK.value[0]
_CANCELLED = grpc.StatusCode.CANCELLED.value[0]
_UNKNOWN = grpc.StatusCode.UNKNOWN.value[0]

Attributes = Mapping[str, AttributeValue]


Count = Callable[[str, str, str, bool], None]
"""Counts a job: its kind, final status, error type ("" for none), and whether it was replayed."""


def _status_code(error: BaseException) -> int:
    """The gRPC status a job that ended in ``error`` gave its caller."""
    if isinstance(error, Refused):
        return error.code.value[0]
    if isinstance(error, asyncio.CancelledError):
        return _CANCELLED
    return _UNKNOWN


class KeptJobs:
    """The span-less path of a job, counted, that traces a failed or slow one after all."""

    def __init__(self, tracer: trace.Tracer, slower_than_ns: int) -> None:
        self._tracer = tracer
        self._slower_than_ns = slower_than_ns

    def wrap(
        self,
        execute: Executor,
        *,
        count: Count,
        server_name: str,
        server_attributes: Callable[[str], Attributes],
        job_name: Callable[[str], str],
        job_attributes: Callable[[str], Attributes],
    ) -> Executor:
        """``execute``, each job counted, and afterwards the spans of a job that failed or
        was slow. The count is taken here rather than by a wrapper of its own: a coroutine
        less for every job, which is most of what keeping costs relay."""
        slower_than_ns = self._slower_than_ns
        tracer = self._tracer

        def traced(
            request: JobRequest, context: Context, started: int, error: str, code: int,
            result: JobResult | None,
        ) -> None:  # fmt: skip
            server = tracer.start_span(
                server_name,
                context=get_current(),
                kind=SpanKind.SERVER,
                attributes=server_attributes(context.peer()),
                start_time=started,
            )
            job = tracer.start_span(
                job_name(request.kind),
                context=set_span_in_context(server),
                attributes={**job_attributes(request.kind), semconv.JOB_ID: request.job_id},
                start_time=started,
            )
            ended: dict[str, AttributeValue] = {
                semconv.JOB_STATUS: "FAILED" if error else "SUCCEEDED",
                semconv.JOB_REPLAYED: result is not None and result.replayed,
            }
            if error:
                ended[semconv.ERROR_TYPE] = error
                job.set_status(Status(StatusCode.ERROR, error))
            job.set_attributes(ended)
            server.set_attribute(semconv.RPC_GRPC_STATUS_CODE, code)
            end = time_ns()
            job.end(end_time=end)
            server.end(end_time=end)

        async def kept(request: JobRequest, context: Context) -> JobResult:
            kind = request.kind
            started = time_ns()
            try:
                result = await execute(request, context)
            except (asyncio.CancelledError, Exception) as exc:
                error = failure_type(exc)
                count(kind, "FAILED", error, False)
                traced(request, context, started, error, _status_code(exc), None)
                raise
            if result.status == _SUCCEEDED:
                count(kind, "SUCCEEDED", "", result.replayed)
                if time_ns() - started >= slower_than_ns:
                    traced(request, context, started, "", _OK, result)
            else:
                reason = result.error.reason
                count(kind, "FAILED", reason, result.replayed)
                traced(request, context, started, reason or "FAILED", _OK, result)
            return result

        return kept


def kept_jobs(provider: trace.TracerProvider, tracer: trace.Tracer) -> KeptJobs | None:
    """A :class:`KeptJobs` when ``provider`` keeps what went wrong, else None."""
    if not isinstance(provider, KeepingTracerProvider) or not records_dropped_traces(provider):
        return None
    return KeptJobs(tracer, provider.keeper.slower_than_ns)
