"""bunnyrelay.otlpencode plugs its encoder into both OTLP exporters only where it was checked
against the installed SDK, and steps aside for the SDK's own encoder anywhere else: tested
both ways with real exporters, a real OTLP receiver and a second Python environment holding
another release of the SDK (``make otel-other``)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from bunnyrelay import otlpencode
from bunnyrelay.otlpencode.exporters import GrpcSpanExporter, HttpSpanExporter
from lab.otlpsink import OtlpSink, SinkSpan
from lab.processes import child_env

ROOT = Path(__file__).resolve().parents[3]
SEND_SPANS = Path(__file__).with_name("send_spans.py")
OTHER_PYTHON = ROOT / ".tools" / "otel-other" / "bin" / "python"
PROTOCOLS = ("grpc", "http/protobuf")


def test_the_pinned_sdk_is_one_the_encoder_was_checked_against() -> None:
    versions = otlpencode.installed_versions()
    assert otlpencode.unchecked(versions) == [], (
        "constraints.txt installs OpenTelemetry packages the fast encoder was not checked "
        f"against ({versions}); run tests/bunnyrelay/otlpencode against them and add the "
        "version to bunnyrelay.otlpencode.CHECKED_VERSIONS"
    )
    assert otlpencode.encoder() == "bunnyrelay"


def test_one_package_off_the_checked_version_is_enough_to_fall_back() -> None:
    checked = next(iter(otlpencode.CHECKED_VERSIONS))
    versions: dict[str, str | None] = dict.fromkeys(otlpencode.DISTRIBUTIONS, checked)
    assert otlpencode.unchecked(versions) == []
    versions["opentelemetry-exporter-otlp-proto-http"] = "9.9.9"
    versions["opentelemetry-proto"] = None
    assert otlpencode.unchecked(versions) == [
        "opentelemetry-proto (not installed)",
        "opentelemetry-exporter-otlp-proto-http 9.9.9",
    ]


def test_each_protocol_gets_its_exporter_and_nothing_else() -> None:
    exporters = [otlpencode.span_exporter(protocol) for protocol in PROTOCOLS]
    try:
        assert [type(exporter) for exporter in exporters] == [GrpcSpanExporter, HttpSpanExporter]
    finally:
        for exporter in exporters:
            exporter.shutdown()
    with pytest.raises(ValueError, match="http/json"):
        otlpencode.span_exporter("http/json")


async def _send(
    sink: OtlpSink, python: Path, protocol: str, exporter_from: str
) -> tuple[dict[str, Any], list[ExportTraceServiceRequest], list[SinkSpan]]:
    """Run send_spans.py in ``python``; what it reports and what the sink received from it."""
    requests_before, spans_before = len(sink.requests), len(sink.spans)
    env = child_env({**sink.env("bunny", protocol), "PYTHONPATH": str(ROOT)})
    process = await asyncio.create_subprocess_exec(
        str(python),
        str(SEND_SPANS),
        protocol,
        exporter_from,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=str(ROOT),
    )
    try:
        async with asyncio.timeout(60):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode()
    report: dict[str, Any] = json.loads(out)
    assert report["result"] == "SUCCESS", report
    # The exporters return only after the receiver answered, and it answers after keeping.
    return report, sink.requests[requests_before:], sink.spans[spans_before:]


@pytest.fixture
def other_python() -> Path:
    if not OTHER_PYTHON.exists():
        pytest.fail(f"{OTHER_PYTHON} is missing: `make otel-other` makes it (`make test` does)")
    return OTHER_PYTHON


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_on_the_checked_sdk_the_receiver_gets_what_the_sdks_encoder_sends(
    sink: OtlpSink, protocol: str
) -> None:
    python = Path(sys.executable)
    fast, fast_requests, fast_spans = await _send(sink, python, protocol, "plugin")
    sdk, sdk_requests, sdk_spans = await _send(sink, python, protocol, "sdk")

    assert fast["encoder"] == "bunnyrelay"
    assert fast["exporter"].startswith("bunnyrelay.otlpencode.exporters.")
    assert fast["wire_cache_entries"] > 0  # the fast encoder did the work
    assert not sdk["wire_imported"]
    assert len(fast_spans) == 40
    assert fast_requests == sdk_requests
    assert fast_spans == sdk_spans


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_on_another_sdk_release_the_sdks_own_encoder_is_used(
    sink: OtlpSink, other_python: Path, protocol: str
) -> None:
    plugged, plugged_requests, plugged_spans = await _send(sink, other_python, protocol, "plugin")
    sdk, sdk_requests, sdk_spans = await _send(sink, other_python, protocol, "sdk")
    _, fast_requests, _ = await _send(sink, Path(sys.executable), protocol, "plugin")

    assert otlpencode.unchecked(plugged["versions"]), plugged["versions"]
    assert plugged["encoder"] == "sdk"
    assert plugged["exporter"] == sdk["exporter"]
    assert plugged["exporter"].startswith("opentelemetry.exporter.otlp.proto.")
    assert not plugged["wire_imported"]  # nothing that reads the SDK's internals is loaded
    assert len(plugged_spans) == 40
    assert plugged_requests == sdk_requests
    assert plugged_spans == sdk_spans
    # And a receiver cannot tell it from the fast encoder on the checked release.
    assert plugged_requests == fast_requests
