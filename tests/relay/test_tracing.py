"""relay's spans form a tree under the caller's trace; its metrics count calls and jobs."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased
from opentelemetry.trace import SpanKind, StatusCode

from bunnyrelay import semconv
from bunnyrelay.logs import configure_logging
from bunnyrelay.v1.jobs_pb2 import JobBatch, TraceContext
from relay.tracing import parse_peer
from tests.metrics_capture import MetricsCapture
from tests.relay.harness import collect, job, local_relay
from tests.telemetry_fixtures import span_exporter

TRACE_A = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACE_B = "0af7651916cd43dd8448eb211c80319c"
PARENT = "00f067aa0ba902b7"


def _traceparent(trace_id: str, span_id: str = PARENT) -> str:
    return f"00-{trace_id}-{span_id}-01"


def _in_trace(spans: Sequence[ReadableSpan], trace_id: str) -> dict[str, ReadableSpan]:
    ours = [s for s in spans if s.context is not None and s.context.trace_id == int(trace_id, 16)]
    by_name = {s.name: s for s in ours}
    assert len(by_name) == len(ours), [s.name for s in ours]
    return by_name


def _parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def _span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


async def test_run_server_span_continues_the_callers_trace_and_parents_the_job_span() -> None:
    exporter = span_exporter()
    exporter.clear()
    async with local_relay() as local:
        await local.stub.Run(
            job("traced-1", "sha256", b"x"), metadata=(("traceparent", _traceparent(TRACE_A)),)
        )
    spans = _in_trace(exporter.get_finished_spans(), TRACE_A)

    server = spans["bunnyrelay.v1.JobService/Run"]
    assert server.kind is SpanKind.SERVER
    assert server.parent is not None
    assert server.parent.is_remote
    assert server.parent.span_id == int(PARENT, 16)
    attributes = dict(server.attributes or {})
    assert attributes[semconv.RPC_SYSTEM] == "grpc"
    assert attributes[semconv.RPC_SERVICE] == "bunnyrelay.v1.JobService"
    assert attributes[semconv.RPC_METHOD] == "Run"
    assert attributes[semconv.RPC_GRPC_STATUS_CODE] == 0
    assert attributes[semconv.NETWORK_PEER_ADDRESS] == "127.0.0.1"
    assert isinstance(attributes[semconv.NETWORK_PEER_PORT], int)

    job_span = spans["job sha256"]
    assert job_span.kind is SpanKind.INTERNAL
    assert _parent_id(job_span) == _span_id(server)
    assert dict(job_span.attributes or {}) == {
        semconv.JOB_ID: "traced-1",
        semconv.JOB_KIND: "sha256",
        semconv.JOB_STATUS: "SUCCEEDED",
        semconv.JOB_REPLAYED: False,
        semconv.RELAY_INSTANCE: "relay-test",
    }


async def test_a_refused_call_records_its_status_code_and_the_jobs_error_type() -> None:
    exporter = span_exporter()
    exporter.clear()
    async with local_relay() as local:
        with pytest.raises(grpc.aio.AioRpcError):
            await local.stub.Run(
                job("traced-2", "teleport"), metadata=(("traceparent", _traceparent(TRACE_A)),)
            )
        await local.stub.Run(
            job("traced-3", "fail", b"no"), metadata=(("traceparent", _traceparent(TRACE_B)),)
        )
    refused = _in_trace(exporter.get_finished_spans(), TRACE_A)
    failed = _in_trace(exporter.get_finished_spans(), TRACE_B)

    server = refused["bunnyrelay.v1.JobService/Run"]
    assert (server.attributes or {})[semconv.RPC_GRPC_STATUS_CODE] == 5  # NOT_FOUND
    assert server.status.status_code is StatusCode.UNSET  # the client's mistake, not ours
    assert (refused["job"].attributes or {})[semconv.ERROR_TYPE] == "UNKNOWN_KIND"
    job_failed = failed["job fail"]
    assert (job_failed.attributes or {})[semconv.ERROR_TYPE] == "JOB_FAILED"
    assert job_failed.status.status_code is StatusCode.ERROR
    server_ok = failed["bunnyrelay.v1.JobService/Run"]
    assert (server_ok.attributes or {})[semconv.RPC_GRPC_STATUS_CODE] == 0


async def test_each_job_of_a_stream_is_its_own_trace_under_its_own_server_span() -> None:
    exporter = span_exporter()
    exporter.clear()
    requests = [
        job("stream-a", "echo"),
        job("stream-b", "sha256"),
        job("stream-root", "echo"),
    ]
    requests[0].trace_context.CopyFrom(TraceContext(traceparent=_traceparent(TRACE_A)))
    requests[1].trace_context.CopyFrom(TraceContext(traceparent=_traceparent(TRACE_B)))
    async with local_relay() as local:
        await collect(local.stub.RunStream(iter(requests)))
    finished = exporter.get_finished_spans()

    for trace_id, kind in ((TRACE_A, "echo"), (TRACE_B, "sha256")):
        spans = _in_trace(finished, trace_id)
        assert set(spans) == {"bunnyrelay.v1.JobService/RunStream", f"job {kind}"}
        server = spans["bunnyrelay.v1.JobService/RunStream"]
        assert server.kind is SpanKind.SERVER
        assert _parent_id(server) == int(PARENT, 16)
        assert _parent_id(spans[f"job {kind}"]) == _span_id(server)

    (root_job,) = [s for s in finished if (s.attributes or {}).get(semconv.JOB_ID) == "stream-root"]
    (root_server,) = [s for s in finished if s.context.span_id == _parent_id(root_job)]
    assert root_server.parent is None
    assert root_server.context is not None
    assert root_server.context.trace_id not in (int(TRACE_A, 16), int(TRACE_B, 16))


async def test_metrics_count_calls_by_status_code_and_jobs_by_kind_and_status() -> None:
    capture = MetricsCapture()
    provider = capture.provider
    try:
        async with local_relay(meter_provider=provider) as local:
            await local.stub.Run(job("m-1", "echo"))
            await local.stub.Run(job("m-1", "echo"))
            await local.stub.Run(job("m-2", "fail"))
            with pytest.raises(grpc.aio.AioRpcError):
                await local.stub.Run(job("m-3", "teleport"))
        data = capture.collect()
    finally:
        provider.shutdown()
    assert data is not None
    points: dict[str, list[tuple[dict[str, object], float]]] = {}
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            assert scope_metrics.scope.name == "relay"
            for metric in scope_metrics.metrics:
                points[metric.name] = [
                    (dict(p.attributes or {}), getattr(p, "count", getattr(p, "value", 0)))
                    for p in metric.data.data_points
                ]

    durations = {
        attributes[semconv.RPC_GRPC_STATUS_CODE]: count
        for attributes, count in points["rpc.server.duration"]
    }
    assert durations == {0: 3, 5: 1}
    jobs = {
        (a[semconv.JOB_KIND], a[semconv.JOB_STATUS], a[semconv.JOB_REPLAYED]): n
        for a, n in points["bunnyrelay.jobs"]
    }
    assert jobs == {
        ("echo", "SUCCEEDED", False): 1,
        ("echo", "SUCCEEDED", True): 1,
        ("fail", "FAILED", False): 1,
        ("_unknown", "FAILED", False): 1,
    }


@pytest.mark.parametrize(
    ("peer", "expected"),
    [
        ("ipv4:10.1.2.3:5000", {"network.peer.address": "10.1.2.3", "network.peer.port": 5000}),
        ("ipv6:[::1]:443", {"network.peer.address": "::1", "network.peer.port": 443}),
        (
            "unix:/run/relay.sock",
            {"network.peer.address": "/run/relay.sock", "network.transport": "unix"},
        ),
        ("garbage", {}),
    ],
)
def test_peer_strings_become_network_peer_attributes(
    peer: str, expected: dict[str, object]
) -> None:
    assert parse_peer(peer) == expected


async def test_with_sampling_always_off_no_span_is_made_yet_logs_keep_the_callers_trace_id() -> (
    None
):
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider(sampler=ALWAYS_OFF)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    capture = MetricsCapture()
    meter_provider = capture.provider
    stream = io.StringIO()
    logger = configure_logging("relay.test-always-off", fmt="json", stream=stream)
    try:
        async with local_relay(
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            logger=logger,
            log_format="json",
            log_executions=True,
        ) as local:
            await local.stub.Run(
                job("off-1", "echo"), metadata=(("traceparent", _traceparent(TRACE_A)),)
            )
            streamed = job("off-2", "echo")
            streamed.trace_context.CopyFrom(TraceContext(traceparent=_traceparent(TRACE_B)))
            await collect(local.stub.RunStream(iter([streamed])))
        data = capture.collect()
    finally:
        meter_provider.shutdown()
        tracer_provider.shutdown()

    assert exporter.get_finished_spans() == ()
    executed = [
        json.loads(line)
        for line in stream.getvalue().splitlines()
        if json.loads(line).get("event") == "job.executed"
    ]
    assert {(line["job_id"], line["trace_id"]) for line in executed} == {
        ("off-1", TRACE_A),
        ("off-2", TRACE_B),
    }
    assert data is not None
    counted = {
        metric.name: sum(
            getattr(p, "value", getattr(p, "count", 0)) for p in metric.data.data_points
        )
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
    }
    assert counted["bunnyrelay.jobs"] == 2
    assert counted["rpc.server.duration"] == 2  # one Run call, one RunStream call


async def test_an_unsampled_callers_jobs_make_no_spans_but_sampled_ones_do() -> None:
    # The default parent-based sampler: a caller that did not sample its trace gets no
    # span from relay (none would be recorded), yet its trace id is on relay's log lines.
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider(sampler=ParentBased(ALWAYS_ON))
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    stream = io.StringIO()
    logger = configure_logging("relay.test-unsampled", fmt="json", stream=stream)
    unsampled = f"00-{TRACE_A}-{PARENT}-00"
    try:
        async with local_relay(
            tracer_provider=tracer_provider, logger=logger, log_format="json", log_executions=True
        ) as local:
            await local.stub.Run(job("unsampled-1", "echo"), metadata=(("traceparent", unsampled),))
            streamed = job("unsampled-2", "echo")
            streamed.trace_context.CopyFrom(TraceContext(traceparent=unsampled))
            batch = JobBatch(jobs=[streamed])
            await collect(local.stub.RunBatches(iter([batch])))
            await local.stub.Run(
                job("sampled-1", "echo"), metadata=(("traceparent", _traceparent(TRACE_B)),)
            )
    finally:
        tracer_provider.shutdown()

    assert _in_trace(exporter.get_finished_spans(), TRACE_A) == {}
    assert set(_in_trace(exporter.get_finished_spans(), TRACE_B)) == {
        "bunnyrelay.v1.JobService/Run",
        "job echo",
    }
    executed = {
        entry["job_id"]: entry["trace_id"]
        for entry in map(json.loads, stream.getvalue().splitlines())
        if entry.get("event") == "job.executed"
    }
    assert executed == {"unsampled-1": TRACE_A, "unsampled-2": TRACE_A, "sampled-1": TRACE_B}
