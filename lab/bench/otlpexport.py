"""CPU per exported span: the SDK's OTLP exporters with their own encoder and with
bunnyrelay.otlpencode, on both protocols, in one run.

Each exporter sends the same batches (512 spans, the batch span processor's default, like
the ones bunny makes) to the lab's OTLP receiver, which runs in a process of its own so
that only the sender's CPU is counted: encoding, the transport (gRPC's or ``requests``'),
everything ``export()`` does. The median of several rounds is printed per span, with the
ratio of the two encoders per protocol::

    python -m lab.bench.otlpexport            # 5 rounds of 20 batches
    python -m lab.bench.otlpexport --quick
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter

from lab.bench.costs import export_batch

_RECEIVER = """
import asyncio, sys
from lab.otlpsink import OtlpSink
async def main():
    async with OtlpSink() as sink:
        print(sink.endpoint, sink.http_endpoint, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
asyncio.run(main())
"""


def _exporter(protocol: str, encoder: str, endpoint: str) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

    from bunnyrelay.otlpencode.exporters import GrpcSpanExporter, HttpSpanExporter

    if protocol == "grpc":
        grpc_class = GrpcSpanExporter if encoder == "bunnyrelay" else Grpc
        return grpc_class(endpoint=endpoint, insecure=True)
    http_class = HttpSpanExporter if encoder == "bunnyrelay" else Http
    return http_class(endpoint=f"{endpoint}/v1/traces")


def measure(rounds: int, batches: int) -> dict[str, Any]:
    receiver = subprocess.Popen(
        [sys.executable, "-c", _RECEIVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert receiver.stdout is not None
        grpc_endpoint, http_endpoint = receiver.stdout.readline().split()
        tracer = TracerProvider().get_tracer("bench", "0.1.0")
        spans = export_batch(tracer)
        cases = [(p, e) for p in ("grpc", "http/protobuf") for e in ("sdk", "bunnyrelay")]
        exporters = {
            case: _exporter(case[0], case[1], grpc_endpoint if case[0] == "grpc" else http_endpoint)
            for case in cases
        }
        samples: dict[tuple[str, str], list[float]] = {case: [] for case in cases}
        for _ in range(rounds):
            # Interleaved, so that the machine's drift falls on every case alike.
            for case, exporter in exporters.items():
                started = time.process_time()
                for _ in range(batches):
                    assert exporter.export(spans).name == "SUCCESS"
                samples[case].append((time.process_time() - started) / (batches * len(spans)))
        for exporter in exporters.values():
            exporter.shutdown()
    finally:
        if receiver.stdin is not None:
            receiver.stdin.close()
        receiver.wait(timeout=10)
    per_span = {f"{p} {e}": round(statistics.median(v) * 1e6, 2) for (p, e), v in samples.items()}
    ratios = {
        protocol: round(per_span[f"{protocol} sdk"] / per_span[f"{protocol} bunnyrelay"], 2)
        for protocol in ("grpc", "http/protobuf")
    }
    return {"cpu_us_per_span": per_span, "sdk_over_bunnyrelay": ratios, "spans_per_batch": 512}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.bench.otlpexport")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 4 batches")
    args = parser.parse_args(argv)
    rounds, batches = (2, 4) if args.quick else (5, 20)
    print(json.dumps(measure(rounds, batches)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
