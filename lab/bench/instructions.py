"""Instructions per job, counted by callgrind: bunny against relay in one process, on loopback.

On a shared machine CPU µs per job swing with the load; instructions do not. This runs
a relay (memory store) and bunny's unary or stream submitter in one process, 64 jobs in
flight over real gRPC on loopback, every job sampled (``parentbased_always_on``, unless
``--sampler`` says otherwise), spans going through the keeping provider and a
BatchSpanProcessor as ``setup_telemetry`` builds them with OTLP on, to an exporter that
encodes each batch with :mod:`bunnyrelay.otlpencode` and sends it nowhere. It is run twice
under ``valgrind --tool=callgrind``, with two job counts; the difference of the two totals
over the difference of the counts is what a job costs both sides together, start-up and
warm-up taken out::

    python -m lab.bench.instructions                 # unary and stream, 300 and 1300 jobs
    python -m lab.bench.instructions --modes stream --jobs 200,700
    python -m lab.bench.instructions --run --mode unary --jobs 300   # one run, no valgrind

At 10 % head sampling, keeping off and then on; at a ratio of 0, what an unsampled job
alone costs::

    python -m lab.bench.instructions --sampler parentbased_traceidratio --sampler-arg 0.1 \
        --keep-slower-than 0
    python -m lab.bench.instructions --sampler parentbased_traceidratio --sampler-arg 0.1 \
        --keep-slower-than 3600
    python -m lab.bench.instructions --sampler parentbased_traceidratio --sampler-arg 0 \
        --keep-slower-than 3600

Under callgrind a job takes a hundred times as long: with the product's threshold (1 s)
keeping would keep many jobs as slow, and count exporting them as their cost. Keeping on is
counted with a threshold no job reaches (3600): what it costs a job that went well.

``--sampler-arg`` is ``OTEL_TRACES_SAMPLER_ARG`` and ``--keep-slower-than`` both
``BUNNY_KEEP_SLOWER_THAN`` and ``RELAY_KEEP_SLOWER_THAN`` (one provider serves both sides
here); the runs see no other ``OTEL_*``, ``BUNNY_*`` or ``RELAY_*`` variable. The trace
ids are drawn from a seeded generator, so a ratio sampler picks the same jobs in every run.

``--modes floor`` counts the floor the same way (:mod:`lab.bench.floor`: the raw echo pair
with W3C context and the RPC duration histograms, a CLIENT and a SERVER span when
sampled), on the same providers, so bunny and relay's unary job can be held to it in
instructions as the benchmark holds them to it in jobs/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")
_CONCURRENCY = 64
_SEED = 20261206
# What --keep-slower-than sets; the one-process run reads bunny's.
_KEEP_VARIABLE = "BUNNY_KEEP_SLOWER_THAN"
_KEEP_VARIABLES = (_KEEP_VARIABLE, "RELAY_KEEP_SLOWER_THAN")


async def _run(mode: str, jobs: int) -> None:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from bunny.batch import new_job_id
    from bunny.relaypool import RelayPool
    from bunny.streaming import StreamSubmitter
    from bunny.submitter import JobSubmitter, SubmitSettings, UnarySubmitter
    from bunny.targets import LiteralAddress
    from bunny.tracing import BunnyTelemetry
    from bunnyrelay.keepsettings import KeepSettings, parse_slower_than
    from bunnyrelay.otlpencode import wire
    from bunnyrelay.settings import HostPort
    from bunnyrelay.v1 import jobs_pb2
    from lab.bench.costs import _quiet_logger, exporting_providers
    from relay.config import RelayConfig
    from relay.server import running_server
    from relay.stores.spec import StoreSpec

    class Encoded(SpanExporter):
        """What the OTLP exporter does to a batch before its transport: the bytes, dropped."""

        exported = 0

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            Encoded.exported += len(spans)
            wire.serialize_spans(spans)
            return SpanExportResult.SUCCESS

    threshold = os.environ.get(_KEEP_VARIABLE)
    keep = KeepSettings() if threshold is None else KeepSettings(parse_slower_than(threshold))
    # The SDK's ids come from ``random``: seeded, a ratio sampler samples the same jobs in
    # every run, and the difference of two runs is the cost of the jobs between them.
    random.seed(_SEED)
    provider, meters = exporting_providers("instructions", keep, Encoded())

    if mode == "floor":
        await _floor(jobs, provider, meters)
        provider.force_flush()
        provider.shutdown()
        meters.shutdown()
        print(f"{mode}: {jobs} jobs, {Encoded.exported / jobs:.2f} spans per job", file=sys.stderr)
        return

    config = RelayConfig(listen=HostPort("127.0.0.1", 0), store=StoreSpec("memory"))
    async with running_server(
        config, tracer_provider=provider, meter_provider=meters, logger=_quiet_logger()
    ) as relay:
        pool = RelayPool(LiteralAddress("127.0.0.1"), "127.0.0.1", relay.port)
        telemetry = BunnyTelemetry(tracer_provider=provider, meter_provider=meters)
        kind = StreamSubmitter if mode == "stream" else UnarySubmitter
        # Under callgrind a job takes a hundred times as long: no deadline may cut it short,
        # or its retries would be counted as its cost.
        submitter: JobSubmitter = kind(pool, SubmitSettings(timeout_s=3600.0), telemetry)
        payload = os.urandom(100)
        left = jobs
        failed: list[str] = []

        async def worker() -> None:
            nonlocal left, failed
            while left > 0:
                left -= 1
                request = jobs_pb2.JobRequest(job_id=new_job_id(), kind="echo", payload=payload)
                outcome = await submitter.run(request)
                if not outcome.ok:
                    failed.append(outcome.error.message if outcome.error else outcome.status)

        await asyncio.gather(*(worker() for _ in range(_CONCURRENCY)))
        await submitter.close()
        await pool.close(grace=1.0)
    provider.force_flush()
    provider.shutdown()
    meters.shutdown()
    if failed:
        raise SystemExit(f"{len(failed)} of {jobs} jobs failed, the first: {failed[0]}")
    print(f"{mode}: {jobs} jobs, {Encoded.exported / jobs:.2f} spans per job", file=sys.stderr)


async def _floor(jobs: int, provider: Any, meters: Any) -> None:
    """The floor's server and client (:mod:`lab.bench.floor`), ``jobs`` calls, 64 in flight."""
    import grpc

    from bunnyrelay.telemetry import Telemetry
    from bunnyrelay.v1 import jobs_pb2_grpc
    from lab.bench.floor import InstrumentedEcho, client_job

    telemetry = Telemetry(provider, meters, exporting=True)
    server = grpc.aio.server()
    jobs_pb2_grpc.add_JobServiceServicer_to_server(InstrumentedEcho(telemetry), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            job = client_job(jobs_pb2_grpc.JobServiceStub(channel), telemetry, os.urandom(100))
            left = jobs
            failed: list[str] = []

            async def worker() -> None:
                nonlocal left
                while left > 0:
                    left -= 1
                    error = await job()
                    if error is not None:
                        failed.append(error)

            await asyncio.gather(*(worker() for _ in range(_CONCURRENCY)))
    finally:
        await server.stop(grace=1.0)
    if failed:
        raise SystemExit(f"{len(failed)} of {jobs} calls failed, the first: {failed[0]}")


def count(
    mode: str,
    jobs: int,
    root: Path,
    sampler: str = "parentbased_always_on",
    sampler_arg: str | None = None,
    keep_slower_than: str | None = None,
) -> int:
    """Instructions of one run of ``jobs`` jobs (callgrind's total, every thread), with
    ``OTEL_TRACES_SAMPLER=sampler``, ``OTEL_TRACES_SAMPLER_ARG=sampler_arg`` and both keeping
    thresholds ``keep_slower_than`` when given."""
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-m",
            "lab.bench.instructions",
            "--run",
            "--mode",
            mode,
            "--jobs",
            str(jobs),
        ],
        capture_output=True,
        text=True,
        cwd=root,
        env={**_clean_env(sampler, sampler_arg, keep_slower_than), "PYTHONPATH": str(root)},
        timeout=1800,
        check=False,
    )
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"{mode} x{jobs}: {done.stderr.strip()[-2000:]}")
    return int(found.group(1))


def _clean_env(
    sampler: str, sampler_arg: str | None = None, keep_slower_than: str | None = None
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "BUNNY_", "RELAY_"))}
    env["OTEL_TRACES_SAMPLER"] = sampler
    if sampler_arg is not None:
        env["OTEL_TRACES_SAMPLER_ARG"] = sampler_arg
    if keep_slower_than is not None:
        for name in _KEEP_VARIABLES:
            env[name] = keep_slower_than
    return env


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.bench.instructions")
    parser.add_argument(
        "--modes", default="unary,stream", help="unary, stream, floor, or several (commas)"
    )
    parser.add_argument("--jobs", default="300,1300", help="two job counts, fewer first")
    parser.add_argument(
        "--root",
        default=str(Path(__file__).resolve().parents[2]),
        help="the tree whose bunny and relay are counted (its PYTHONPATH)",
    )
    parser.add_argument(
        "--sampler",
        default="parentbased_always_on",
        help="OTEL_TRACES_SAMPLER of the runs (always_off: what a job costs without spans)",
    )
    parser.add_argument(
        "--sampler-arg",
        default=None,
        help="OTEL_TRACES_SAMPLER_ARG of the runs (e.g. 0.1 with parentbased_traceidratio)",
    )
    parser.add_argument(
        "--keep-slower-than",
        default=None,
        help="BUNNY_KEEP_SLOWER_THAN and RELAY_KEEP_SLOWER_THAN of the runs (0: keeping off; "
        "default: the product's)",
    )
    parser.add_argument("--run", action="store_true", help="one run in this process")
    parser.add_argument("--mode", default="unary", help="with --run: unary, stream or floor")
    args = parser.parse_args(argv)
    if args.run:
        asyncio.run(_run(args.mode, int(args.jobs)))
        return 0
    few, many = (int(n) for n in args.jobs.split(","))
    results: dict[str, Any] = {}
    for mode in args.modes.split(","):
        root = Path(args.root)
        low = count(mode, few, root, args.sampler, args.sampler_arg, args.keep_slower_than)
        high = count(mode, many, root, args.sampler, args.sampler_arg, args.keep_slower_than)
        results[mode] = {"per_job": round((high - low) / (many - few)), few: low, many: high}
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
