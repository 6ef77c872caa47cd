"""Where a job's CPU goes: the pieces of its path, each timed alone, in this process.

The end-to-end cases say how far bunny and relay are from raw gRPC; these probes
say why. Each probe calls one piece many times and reports CPU µs per call
(``time.process_time``, the median of several rounds): an OpenTelemetry span,
its OTLP encoding, a histogram record, a counter add against bunny's
:class:`~bunnyrelay.tally.Tally`, W3C inject and extract, and bunny's and relay's
whole per-job paths with gRPC taken out (a stub that answers at once, a servicer
context that is a plain object), next to what the raw baseline does in their place.

Two groups time the paths of a job the head sampler does not sample (a ratio of 0, and an
unsampled caller on relay's side) with the providers ``setup_telemetry`` builds when spans
are exported: keeping off (``*_KEEP_SLOWER_THAN=0``), then on with the product's threshold.
Their difference is what keeping what went wrong costs a job that went well, without the
noise of whole processes sharing two cores.

The SDK's providers are process-wide, so each telemetry setting runs in a process
of its own::

    python -m lab.bench.costs            # every probe, one JSON object
    python -m lab.bench.costs --quick    # fewer calls: a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from bunnyrelay.keepsettings import KeepSettings

ROUNDS = 5
"""Rounds per probe; the median is reported (a shared machine makes single rounds noisy)."""

_GROUPS = ("sdk", "off", "all", "unsampled", "kept")
_TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
_TRACEPARENT_UNSAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
_SAMPLES_NONE = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0"}
_OTEL_ENV = {
    "off": {"OTEL_TRACES_SAMPLER": "always_off"},
    "all": {"OTEL_TRACES_SAMPLER": "parentbased_always_on"},
    "unsampled": _SAMPLES_NONE,
    "kept": _SAMPLES_NONE,
}
# The groups timed with the exporting providers, and their keeping threshold in seconds.
_KEEPING = {"unsampled": 0.0, "kept": KeepSettings().slower_than_s}
_UNSAMPLED = "unsampled, keeping off"
_KEPT = "unsampled, keeping on"


def _per_call(run: Callable[[int], None], calls: int) -> float:
    rounds = []
    for _ in range(ROUNDS):
        started = time.process_time()
        run(calls)
        rounds.append((time.process_time() - started) / calls * 1e6)
    return round(statistics.median(rounds), 2)


async def _per_call_async(run: Callable[[int], Awaitable[None]], calls: int) -> float:
    rounds = []
    for _ in range(ROUNDS):
        started = time.process_time()
        await run(calls)
        rounds.append((time.process_time() - started) / calls * 1e6)
    return round(statistics.median(rounds), 2)


def _per_span(encode: Callable[[], object], batch: Sequence[object], calls: int) -> float:
    """CPU µs per span of encoding ``batch`` whole, about ``calls`` spans per round."""
    batches = max(1, calls // len(batch))

    def run(n: int) -> None:
        for _ in range(n):
            encode()

    return round(_per_call(run, batches) / len(batch), 2)


def export_batch(tracer: Any, size: int = 512) -> list[Any]:
    """A batch as the BatchSpanProcessor hands it to an exporter (512 spans, its default):
    bunny's job spans, a CLIENT call with its rpc.* attributes and a DNS lookup under it."""
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind

    spans: list[Any] = []
    for job in range(size // 2):
        call = tracer.start_span(
            "bunnyrelay.v1.JobService/Run",
            kind=SpanKind.CLIENT,
            attributes={
                "rpc.system": "grpc",
                "rpc.service": "bunnyrelay.v1.JobService",
                "rpc.method": "Run",
                "server.address": "relay.private.aws.internal",
                "server.port": 50051,
                "bunnyrelay.job.id": uuid.uuid4().hex,
                "bunnyrelay.job.kind": "echo",
            },
        )
        lookup = tracer.start_span(
            "dns.lookup",
            context=trace.set_span_in_context(call),
            attributes={"dns.question.name": "relay.private.aws.internal", "job": job % 7},
        )
        lookup.end()
        call.end()
        # What a span processor is handed when a span ends: its ReadableSpan, not the span.
        spans += [lookup._readable_span(), call._readable_span()]
    return spans


def dropped_reader() -> Any:
    """A reader as bunny and relay export with (:class:`bunnyrelay.histograms.HotHistogramReader`),
    collecting only when asked, to an exporter that drops what it is given."""
    import math

    from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult

    from bunnyrelay.histograms import HotHistogramReader

    class Dropped(MetricExporter):
        def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> Any:
            return MetricExportResult.SUCCESS

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            return True

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
            pass

    return HotHistogramReader(Dropped(), export_interval_millis=math.inf)


def sdk_probes(calls: int) -> dict[str, float]:
    """The OpenTelemetry pieces, each on providers of its own (nothing global)."""
    from opentelemetry import propagate, trace
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON
    from opentelemetry.trace import SpanKind
    from opentelemetry.util.types import AttributeValue

    from bunnyrelay.histograms import HotHistogram
    from bunnyrelay.keeping import KeepingTracerProvider
    from bunnyrelay.keepsettings import KeepSettings
    from bunnyrelay.otlpencode import wire
    from bunnyrelay.tally import Tally

    attributes: dict[str, AttributeValue] = {
        "rpc.system": "grpc",
        "rpc.service": "bunnyrelay.v1.JobService",
        "rpc.method": "Run",
        "rpc.grpc.status_code": 0,
    }
    sampled = TracerProvider(sampler=ALWAYS_ON).get_tracer("costs")
    # As bunny and relay make them when spans are exported (bunnyrelay.keeping.SampledSpan).
    light = KeepingTracerProvider(
        KeepSettings(), resource=Resource.create(), sampler=ALWAYS_ON
    ).get_tracer("costs")
    unsampled = TracerProvider(sampler=ALWAYS_OFF).get_tracer("costs")
    meters = MeterProvider(
        metric_readers=[InMemoryMetricReader()], exemplar_filter=AlwaysOffExemplarFilter()
    )
    meter = meters.get_meter("costs")
    histogram = meter.create_histogram("costs.duration", unit="ms")
    counter = meter.create_counter("costs.jobs")
    tally = Tally(meter, "costs.tallied", unit="{job}", description="probe")
    # On a provider of its own, read as bunny and relay export it: an SDK histogram on the
    # same provider would pay for a second reader.
    hot_meters = MeterProvider(metric_readers=[dropped_reader()])
    hot = HotHistogram(hot_meters.get_meter("costs"), "costs.hot", unit="ms", description="probe")
    method_code = ("Run", 0)
    job_attributes = {"bunnyrelay.job.kind": "echo", "bunnyrelay.job.status": "SUCCEEDED"}
    carrier = {"traceparent": _TRACEPARENT}
    batch = export_batch(sampled)

    def spans(tracer: trace.Tracer) -> Callable[[int], None]:
        def run(n: int) -> None:
            for _ in range(n):
                tracer.start_span("x", kind=SpanKind.CLIENT, attributes=attributes).end()

        return run

    def repeat(call: Callable[[], object]) -> Callable[[int], None]:
        def run(n: int) -> None:
            for _ in range(n):
                call()

        return run

    def inject(n: int) -> None:
        span = sampled.start_span("x")
        context = trace.set_span_in_context(span)
        for _ in range(n):
            propagate.inject({}, context=context)

    results = {
        "span_sampled": _per_call(spans(sampled), calls),
        "span_sampled_light": _per_call(spans(light), calls),
        "span_unsampled": _per_call(spans(unsampled), calls),
        # What each OTLP exporter does to a batch before its transport takes the bytes:
        # gRPC's stub serializes the request message, HTTP's export() serializes it inline;
        # bunnyrelay's gRPC stub takes the encoder's bytes as they are.
        "otlp_grpc_sdk": _per_span(lambda: encode_spans(batch).SerializeToString(), batch, calls),
        "otlp_grpc_bunnyrelay": _per_span(lambda: wire.serialize_spans(batch), batch, calls),
        "otlp_http_sdk": _per_span(
            lambda: encode_spans(batch).SerializePartialToString(), batch, calls
        ),
        "otlp_http_bunnyrelay": _per_span(lambda: wire.serialize_spans(batch), batch, calls),
        "histogram_record": _per_call(repeat(lambda: histogram.record(1.5, attributes)), calls),
        "hot_histogram_record": _per_call(
            repeat(lambda: hot.record(method_code, attributes, 1.5)), calls
        ),
        "counter_add": _per_call(repeat(lambda: counter.add(1, job_attributes)), calls),
        "tally_add": _per_call(repeat(lambda: tally.add("echo", job_attributes)), calls),
        "w3c_inject": _per_call(inject, calls),
        "w3c_extract": _per_call(repeat(lambda: propagate.extract(carrier)), calls),
    }
    meters.shutdown()
    hot_meters.shutdown()
    return results


def exporting_providers(service: str, keep: KeepSettings, exporter: Any) -> tuple[Any, Any]:
    """A tracer and a meter provider as ``setup_telemetry`` builds them when spans are
    exported (the keeping provider, a batch processor, keeping connected to it), the spans
    going to ``exporter`` and the metrics read but not exported; not installed."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from bunnyrelay.keeping import connect_keeping, keeping_tracer_provider
    from bunnyrelay.telemetry import build_resource

    resource = build_resource(service)
    # The sampler is the OTEL_* one, as the SDK's provider reads it.
    provider = keeping_tracer_provider(TracerProvider(resource=resource), resource, keep)
    batch = BatchSpanProcessor(exporter)
    provider.add_span_processor(batch)
    meters = MeterProvider(resource=resource, metric_readers=[dropped_reader()])
    connect_keeping(provider, batch, meters)
    return provider, meters


def _exporting_telemetry(keep: KeepSettings) -> Any:
    """:func:`exporting_providers`, installed, with an exporter that drops what it is given:
    the jobs timed with them are unsampled, and only a kept one would reach it."""
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from bunnyrelay.telemetry import Telemetry

    class Dropped(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider, meters = exporting_providers("costs", keep, Dropped())
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(meters)
    return Telemetry(provider, meters, exporting=True)


async def path_probes(calls: int, group: str) -> dict[str, float]:
    """bunny's and relay's per-job paths without gRPC, under the OTEL_* of this process."""
    from bunnyrelay.telemetry import setup_telemetry

    if group in _KEEPING:
        telemetry = _exporting_telemetry(KeepSettings(_KEEPING[group]))
    else:
        # Metrics are read (not exported) so that every record does its real work; spans go
        # nowhere: their creation is measured here, their export by the otlp_* probes.
        telemetry = setup_telemetry("costs", metric_readers=[dropped_reader()])

    from bunny.relaypool import RelayPool
    from bunny.submitter import SubmitSettings, UnarySubmitter
    from bunny.targets import LiteralAddress
    from bunnyrelay.settings import HostPort
    from bunnyrelay.v1 import jobs_pb2
    from lab.bench import floor
    from relay.checks import parse_request
    from relay.config import RelayConfig
    from relay.server import Relay
    from relay.stores.spec import StoreSpec

    payload = os.urandom(100)
    answer = jobs_pb2.JobResult(
        job_id="x", status=jobs_pb2.JOB_STATUS_SUCCEEDED, output=payload, relay_instance="vm"
    )

    class AnsweringStub:
        async def Run(  # noqa: N802 - the stub's method name
            self, request: object, timeout: float | None = None, metadata: object = None
        ) -> jobs_pb2.JobResult:
            return answer

    class Context:
        """What relay's Run path asks of grpc.aio's servicer context."""

        metadata = (("traceparent", _TRACEPARENT_UNSAMPLED if group in _KEEPING else _TRACEPARENT),)

        def invocation_metadata(self) -> object:
            return self.metadata

        def peer(self) -> str:
            return "ipv4:127.0.0.1:50000"

        def time_remaining(self) -> float:
            return 30.0

        def code(self) -> None:
            return None

    def request() -> jobs_pb2.JobRequest:
        return jobs_pb2.JobRequest(job_id=str(uuid.uuid4()), kind="echo", payload=payload)

    pool = RelayPool(LiteralAddress("127.0.0.1"), "127.0.0.1", 50051)
    await pool.lookup()
    object.__setattr__(pool.endpoints[0], "stub", AnsweringStub())
    runner = UnarySubmitter(pool, SubmitSettings())
    stub = AnsweringStub()

    async def bunny_job(n: int) -> None:
        for _ in range(n):
            await runner.run(request())

    async def raw_client_job(n: int) -> None:
        for _ in range(n):
            await stub.Run(request(), timeout=30.0)

    floor_call = floor.client_job(stub, telemetry, payload)

    async def floor_client_job(n: int) -> None:
        for _ in range(n):
            await floor_call()

    relay = Relay(
        RelayConfig(listen=HostPort("127.0.0.1", 0), store=StoreSpec("memory")),
        logger=_quiet_logger(),
    )
    await relay.store.open()
    handler = relay._telemetry.unary("Run", relay.service.Run)
    context: Any = Context()

    def wire(n: int) -> list[bytes]:
        return [request().SerializeToString() for _ in range(n)]

    async def relay_job(n: int) -> None:
        for data in wire(n):
            await handler(parse_request(data), context)

    floor_servicer = floor.InstrumentedEcho(telemetry)

    async def floor_server_job(n: int) -> None:
        for data in wire(n):
            await floor_servicer.Run(jobs_pb2.JobRequest.FromString(data), context)

    async def raw_server_job(n: int) -> None:
        for data in wire(n):
            parsed = jobs_pb2.JobRequest.FromString(data)
            jobs_pb2.JobResult(
                job_id=parsed.job_id, status=jobs_pb2.JOB_STATUS_SUCCEEDED, output=parsed.payload
            )

    results = {
        "bunny_job": await _per_call_async(bunny_job, calls),
        "floor_client_job": await _per_call_async(floor_client_job, calls),
        "raw_client_job": await _per_call_async(raw_client_job, calls),
        "relay_job": await _per_call_async(relay_job, calls),
        "floor_server_job": await _per_call_async(floor_server_job, calls),
        "raw_server_job": await _per_call_async(raw_server_job, calls),
    }
    await relay.store.close()
    await pool.close()
    return results


def _quiet_logger() -> Any:
    import logging

    logger = logging.getLogger("costs.relay")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return logger


def measure_all(*, quick: bool = False) -> dict[str, dict[str, float]]:
    """Every group, each in a fresh process; ``{group: {probe: CPU µs per call}}``."""
    results: dict[str, dict[str, float]] = {}
    root = Path(__file__).resolve().parents[2]
    for group in _GROUPS:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env.update(_OTEL_ENV.get(group, {}))
        argv = [sys.executable, "-m", "lab.bench.costs", "--group", group]
        done = subprocess.run(
            [*argv, *(["--quick"] if quick else [])],
            capture_output=True,
            text=True,
            env=env,
            cwd=root,
            timeout=600,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"costs --group {group} failed: {done.stderr.strip()[-2000:]}")
        results[group] = json.loads(done.stdout)
    return results


def rows(costs: dict[str, dict[str, float]]) -> list[tuple[str, str, str]]:
    """(what, tracing, CPU µs per call) for the report, bunny's and relay's paths first."""
    sdk, off, every = costs.get("sdk", {}), costs.get("off", {}), costs.get("all", {})
    unsampled, kept = costs.get("unsampled", {}), costs.get("kept", {})

    def path(label: str, key: str, raw: str, floor: str) -> list[tuple[str, str, str]]:
        out = []
        for tracing, group in (
            ("off", off),
            ("100%, not exported", every),
            (_UNSAMPLED, unsampled),
        ):
            if key in group and raw in group:
                extra = f"{group[key] - group[raw]:+.1f} over raw"
                if floor in group:
                    extra += f", {group[key] - group[floor]:+.1f} over the floor"
                out.append((label, tracing, f"{group[key]:.1f} ({extra})"))
        if key in kept and key in unsampled:
            extra = f"{kept[key] - unsampled[key]:+.1f} over keeping off"
            out.append((label, _KEPT, f"{kept[key]:.1f} ({extra})"))
        return out

    table = [
        *path(
            "bunny: one unary job, gRPC taken out",
            "bunny_job",
            "raw_client_job",
            "floor_client_job",
        ),
        *path(
            "relay: one Run call, gRPC taken out", "relay_job", "raw_server_job", "floor_server_job"
        ),
    ]
    names = {
        "span_sampled": "OpenTelemetry span, sampled: start + end",
        "span_sampled_light": "the same, bunny's and relay's light sampled span",
        "span_unsampled": "OpenTelemetry span, not sampled: start + end",
        "otlp_grpc_sdk": "OTLP/gRPC exporter's encoding, per span of a 512-span batch: SDK",
        "otlp_grpc_bunnyrelay": "the same with bunnyrelay.otlpencode",
        "otlp_http_sdk": "OTLP/HTTP exporter's encoding, per span of a 512-span batch: SDK",
        "otlp_http_bunnyrelay": "the same with bunnyrelay.otlpencode",
        "histogram_record": "SDK Histogram.record, 4 attributes",
        "hot_histogram_record": "bunnyrelay.histograms.HotHistogram.record (what replaced it)",
        "counter_add": "SDK Counter.add, 2 attributes",
        "tally_add": "bunnyrelay.tally.Tally.add (what replaced it per job)",
        "w3c_inject": "W3C trace context inject",
        "w3c_extract": "W3C trace context extract",
    }
    table += [(names[k], "-", f"{v:.1f}") for k, v in sdk.items() if k in names]
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.bench.costs")
    parser.add_argument("--group", choices=_GROUPS, help="run one group in this process")
    parser.add_argument("--quick", action="store_true", help="fewer calls per round")
    args = parser.parse_args(argv)
    calls = 300 if args.quick else 4000
    if args.group is None:
        print(json.dumps(measure_all(quick=args.quick)))
    elif args.group == "sdk":
        print(json.dumps(sdk_probes(calls)))
    else:
        print(json.dumps(asyncio.run(path_probes(calls, args.group))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
