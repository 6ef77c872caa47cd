"""The exporters bunny and relay install send their spans through bunnyrelay.otlpencode.wire
on both OTLP protocols, with the SDK's own handling of everything else (here: compression)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from bunnyrelay.otlpencode import wire
from bunnyrelay.otlpencode.exporters import GrpcSpanExporter
from bunnyrelay.telemetry import setup_telemetry
from lab.otlpsink import OtlpSink


@pytest.fixture
def spy_encoder(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many spans went through bunnyrelay.otlpencode.wire, per export."""
    calls: list[int] = []
    real = wire.serialize_spans

    def counting(spans: Sequence[ReadableSpan]) -> bytes:
        calls.append(len(spans))
        return real(spans)

    monkeypatch.setattr(wire, "serialize_spans", counting)
    return calls


def _make_tree(provider: TracerProvider) -> None:
    tracer = provider.get_tracer("bunny")
    with tracer.start_as_current_span("job", kind=SpanKind.CLIENT) as job:
        job.set_attribute("rpc.system", "grpc")
        with tracer.start_as_current_span("dns", attributes={"dns.question.name": "relay"}):
            pass


@pytest.mark.parametrize("compression", ["", "gzip", "none"])
@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
async def test_spans_reach_the_receiver_as_a_tree_through_the_fast_encoder(
    sink: OtlpSink,
    monkeypatch: pytest.MonkeyPatch,
    spy_encoder: list[int],
    protocol: str,
    compression: str,
) -> None:
    environ = sink.env("bunny", protocol)
    if compression:
        environ["OTEL_EXPORTER_OTLP_COMPRESSION"] = compression
    # The exporters read their OTEL_EXPORTER_OTLP_* settings from os.environ themselves.
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    telemetry = setup_telemetry("bunny", install_global=False, environ=environ)
    try:
        assert telemetry.span_encoder == "bunnyrelay"
        _make_tree(telemetry.tracer_provider)
        # The exporter blocks on its transport; the sink answers on this event loop.
        await asyncio.to_thread(telemetry.tracer_provider.force_flush)
        spans = await sink.wait_for(lambda got: len(got) == 2)
    finally:
        await asyncio.to_thread(telemetry.shutdown)
    by_name = {span.name: span for span in spans}
    assert by_name["dns"].parent_id == by_name["job"].span_id
    assert by_name["dns"].trace_id == by_name["job"].trace_id
    assert by_name["job"].kind == "CLIENT"
    assert by_name["job"].attributes == {"rpc.system": "grpc"}
    assert by_name["dns"].service == "bunny"
    assert sum(spy_encoder) == 2


def test_no_span_exporter_and_no_encoder_without_an_endpoint() -> None:
    telemetry = setup_telemetry("bunny", install_global=False, environ={})
    try:
        assert telemetry.span_encoder is None
        assert not telemetry.exporting
    finally:
        telemetry.shutdown()


async def test_the_grpc_exporter_reconnecting_after_unavailable_still_sends_wires_bytes(
    sink: OtlpSink, spy_encoder: list[int]
) -> None:
    # The receiver is down: the SDK's exporter, told UNAVAILABLE, makes its channel and stub
    # again and retries. The stub it makes then must still send the encoder's bytes as they
    # are (the generated one would refuse bytes).
    await sink.stop()
    exporter = GrpcSpanExporter(endpoint=f"127.0.0.1:{sink.port}", insecure=True, timeout=30)
    reconnected = threading.Event()
    initialize = exporter._initialize_channel_and_stub

    def watched() -> None:
        initialize()
        reconnected.set()

    exporter._initialize_channel_and_stub = watched  # type: ignore[method-assign]
    captured = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(captured))
    _make_tree(provider)
    export = asyncio.create_task(asyncio.to_thread(exporter.export, captured.get_finished_spans()))
    try:
        assert await asyncio.to_thread(reconnected.wait, 30)
        async with OtlpSink(port=sink.port) as back:
            assert await export is SpanExportResult.SUCCESS
            spans = await back.wait_for(lambda got: len(got) == 2)
    finally:
        exporter.shutdown()
        await asyncio.gather(export, return_exceptions=True)
    assert {span.name for span in spans} == {"job", "dns"}
    # The first try, and the one (or, on a slow machine, more) after reconnecting.
    assert len(spy_encoder) >= 2
    assert set(spy_encoder) == {2}
