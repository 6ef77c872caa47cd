"""The floor: the raw echo pair plus only what the conventions ask of every call.

bunny and relay's performance targets are set against raw grpc.aio, which carries
no telemetry at all. A service that follows this project's standards cannot be that:
every call carries W3C trace context, and each side records the semantic
conventions' ``rpc.client.duration`` / ``rpc.server.duration`` (as bunny and relay
record them: :mod:`bunnyrelay.histograms`), and, when sampled,
a CLIENT and a SERVER span (what gRPC instrumentation makes, and nothing more). This
module is that minimum on the raw echo servicer and client (:mod:`.rawecho`), with
bunny's and relay's own telemetry set-up (:func:`bunnyrelay.telemetry.setup_telemetry`,
the standard ``OTEL_*`` variables). No checks, store, retries, DNS or job spans.

Its ratio against the raw baseline in the same round is the most any instrumented
service can reach on the machine, so the write-up can show how much of bunny and
relay's gap is theirs and how much is the telemetry's. Unary only.

    python -m lab.bench.floor serve --listen 127.0.0.1:0
    python -m lab.bench.floor load --target 127.0.0.1:PORT --duration 10 --json
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import Sequence
from time import perf_counter
from typing import Any

import grpc
from opentelemetry.context import attach, detach
from opentelemetry.trace import SpanKind, set_span_in_context
from opentelemetry.util.types import AttributeValue

from bunny.loadgen import Job, LoadSettings, drive
from bunnyrelay import semconv
from bunnyrelay.histograms import HotHistogram
from bunnyrelay.telemetry import Telemetry, setup_telemetry
from bunnyrelay.v1 import jobs_pb2, jobs_pb2_grpc
from bunnyrelay.w3cheaders import inject_headers
from lab.bench import rawecho
from relay.callcontext import caller_context

_METHOD = "bunnyrelay.v1.JobService/Run"
_ATTRIBUTES: dict[str, AttributeValue] = {
    semconv.RPC_SYSTEM: "grpc",
    semconv.RPC_SERVICE: "bunnyrelay.v1.JobService",
    semconv.RPC_METHOD: "Run",
}
_OK: dict[str, AttributeValue] = {
    **_ATTRIBUTES,
    semconv.RPC_GRPC_STATUS_CODE: grpc.StatusCode.OK.value[0],
}
_OK_KEY = grpc.StatusCode.OK


class InstrumentedEcho(rawecho.EchoServicer):
    """The echo servicer with a SERVER span (when sampled), the caller's context and
    ``rpc.server.duration`` per call."""

    def __init__(self, telemetry: Telemetry) -> None:
        self._tracer = telemetry.tracer_provider.get_tracer("lab.bench.floor")
        meter = telemetry.meter_provider.get_meter("lab.bench.floor")
        self._record = HotHistogram(
            meter, semconv.METRIC_RPC_SERVER_DURATION, unit="ms", description="Duration of RPCs"
        ).record

    async def Run(  # noqa: N802 - the proto's method name
        self,
        request: jobs_pb2.JobRequest,
        context: grpc.aio.ServicerContext[jobs_pb2.JobRequest, jobs_pb2.JobResult],
    ) -> jobs_pb2.JobResult:
        start = perf_counter()
        parent = caller_context(context.invocation_metadata() or ())
        span = self._tracer.start_span(
            _METHOD, context=parent, kind=SpanKind.SERVER, attributes=_ATTRIBUTES
        )
        token = attach(set_span_in_context(span, parent))
        try:
            return await super().Run(request, context)
        finally:
            detach(token)
            span.end()
            self._record(_OK_KEY, _OK, (perf_counter() - start) * 1000)


async def serve(listen: str, telemetry: Telemetry) -> None:
    await rawecho.serve(listen, InstrumentedEcho(telemetry))


def client_job(stub: Any, telemetry: Telemetry, payload: bytes) -> Job:
    """One floor call per job on ``stub``: a CLIENT span (when sampled), its W3C context in
    the metadata, ``rpc.client.duration``. :mod:`.costs` times it with gRPC taken out."""
    tracer = telemetry.tracer_provider.get_tracer("lab.bench.floor")
    meter = telemetry.meter_provider.get_meter("lab.bench.floor")
    record = HotHistogram(
        meter, semconv.METRIC_RPC_CLIENT_DURATION, unit="ms", description="Duration of RPCs"
    ).record

    async def job() -> str | None:
        start = perf_counter()
        span = tracer.start_span(_METHOD, kind=SpanKind.CLIENT, attributes=_ATTRIBUTES)
        carrier: dict[str, str] = {}
        inject_headers(carrier, context=set_span_in_context(span))
        # grpc.aio turns any other sequence into a grpc.aio.Metadata per call.
        metadata = grpc.aio.Metadata(*carrier.items())
        request = jobs_pb2.JobRequest(job_id=str(uuid.uuid4()), kind="echo", payload=payload)
        try:
            result = await stub.Run(request, timeout=30.0, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            return exc.code().name
        finally:
            span.end()
            record(_OK_KEY, _OK, (perf_counter() - start) * 1000)
        return None if result.status == jobs_pb2.JOB_STATUS_SUCCEEDED else "FAILED"

    return job


async def load(
    target: str, settings: LoadSettings, *, payload_bytes: int, telemetry: Telemetry
) -> int:
    payload = os.urandom(payload_bytes)
    async with grpc.aio.insecure_channel(target) as channel:
        job = client_job(jobs_pb2_grpc.JobServiceStub(channel), telemetry, payload)
        result = await drive(job, settings, name="floor client", progress=sys.stderr)
    print(
        json.dumps(
            {
                "target": target,
                "mode": "unary",
                "payload_bytes": payload_bytes,
                **result.as_dict(),
                "grpcio": grpc.__version__,
                "pid": os.getpid(),
            }
        ),
        flush=True,
    )
    return 0 if result.failed == 0 and result.warmup_failed == 0 else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = rawecho.build_parser()
    parser.prog = "python -m lab.bench.floor"
    parser.description = (
        "The raw echo pair plus the per-call telemetry the conventions ask for (unary only)."
    )
    args = parser.parse_args(argv)
    if args.command == "load" and args.stream:
        parser.error("--stream: the floor is measured for unary calls only")
    telemetry = setup_telemetry("bench-floor-" + args.command)
    try:
        if args.command == "serve":
            asyncio.run(serve(args.listen, telemetry))
            return 0
        settings = LoadSettings(
            duration_s=args.duration, concurrency=args.concurrency, warmup_s=args.warmup
        )
        return asyncio.run(
            load(args.target, settings, payload_bytes=args.payload_bytes, telemetry=telemetry)
        )
    finally:
        telemetry.shutdown()


if __name__ == "__main__":
    sys.exit(main())
