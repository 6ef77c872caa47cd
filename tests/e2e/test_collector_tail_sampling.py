"""The compose stack's tail-sampling Collector configuration, run in the real Collector image.

bunny and relay export every span (no sampler set) to the Collector built by
``make service-images``, running deploy/compose/otel-collector-tail-sampling.yaml with
only its addresses changed (this host's loopback, the test's OTLP receiver in Jaeger's
place). Failed and slow jobs keep their traces; of the fast successful ones about a tenth.
"""

from __future__ import annotations

import json
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.dnsserver import ZoneServer
from lab.otlpsink import OtlpSink, SinkSpan
from lab.processes import run_bunny
from tests.conftest import RELAY_NAME, StartRelay
from tests.e2e.engine import ROOT, container, require_image, unique

pytestmark = pytest.mark.timeout(300)

COLLECTOR_IMAGE = "otel/opentelemetry-collector-contrib:0.161.0"
CONFIG = ROOT / "deploy" / "compose" / "otel-collector-tail-sampling.yaml"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _config_for_this_host(grpc_port: int, http_port: int, sink_port: int) -> str:
    config: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    protocols = config["receivers"]["otlp"]["protocols"]
    protocols["grpc"]["endpoint"] = f"127.0.0.1:{grpc_port}"
    protocols["http"]["endpoint"] = f"127.0.0.1:{http_port}"
    config["exporters"]["otlp_grpc/jaeger"]["endpoint"] = f"127.0.0.1:{sink_port}"
    # On the host's network the exporter's Prometheus port and the Collector's own metrics
    # port could be taken: a free loopback port, and not served.
    config["exporters"]["prometheus"]["endpoint"] = f"127.0.0.1:{_free_port()}"
    config["service"]["telemetry"] = {"metrics": {"level": "none"}}
    return yaml.safe_dump(config)


@pytest.fixture
def collector(sink: OtlpSink) -> Iterator[int]:
    """The Collector image with the tail-sampling configuration; its OTLP/gRPC port."""
    require_image(COLLECTOR_IMAGE, "service-images")
    grpc_port, http_port = _free_port(), _free_port()
    folder = Path(tempfile.mkdtemp(prefix="collector-config-"))
    try:
        # Readable by the image's non-root user.
        folder.chmod(0o755)
        path = folder / "config.yaml"
        path.write_text(_config_for_this_host(grpc_port, http_port, sink.port))
        path.chmod(0o644)
        with container(
            unique("bunny-relay-e2e-collector"),
            [
                "--network", "host",
                "--read-only",
                "--cap-drop", "ALL",
                "--volume", f"{path}:/etc/otelcol/config.yaml:ro",
                COLLECTOR_IMAGE,
            ],
        ):  # fmt: skip
            _wait_until_listening(grpc_port)
            yield grpc_port
    finally:
        for each in folder.iterdir():
            each.unlink()
        folder.rmdir()


def _wait_until_listening(port: int, timeout: float = 60.0) -> None:
    """Until the Collector accepts connections (it starts in about a second)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _roots(spans: list[SinkSpan]) -> set[str]:
    return {s.trace_id for s in spans if s.service == "bunny" and s.name == "job.submit"}


async def _jobs(zone: ZoneServer, port: int, collector: int, *args: str) -> list[dict[str, Any]]:
    _, out, err = await run_bunny(
        "submit",
        "--target",
        f"{RELAY_NAME}:{port}",
        "--nameserver",
        str(zone.address),
        "--family",
        "ipv4",
        "--json",
        *args,
        env={
            "OTEL_SERVICE_NAME": "bunny",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        },
    )
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert lines, err
    return lines


async def test_failed_and_slow_jobs_keep_their_traces_and_a_tenth_of_the_rest(
    zone: ZoneServer, sink: OtlpSink, start_relay: StartRelay, collector: int
) -> None:
    to_collector = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector}"}
    failed = await _jobs(zone, 50051, collector, "--count", "20")
    assert {line["status"] for line in failed} == {"FAILED"}
    async with start_relay(env=to_collector) as relay:
        zone.set_records(RELAY_NAME, "A", ["127.0.0.1"], ttl=300)
        fast = await _jobs(zone, relay.port, collector, "--count", "200")
        assert {line["status"] for line in fast} == {"SUCCEEDED"}
        # A new bunny process asks the zone again, and every answer now takes 1.3 s.
        zone.set_delay(1.3)
        (slow,) = await _jobs(zone, relay.port, collector)
        assert slow["status"] == "SUCCEEDED"
        assert await relay.terminate() == 0

    wanted = {line["trace_id"] for line in failed} | {slow["trace_id"]}
    # The Collector decides decision_wait (10 s) after a trace's first span.
    await sink.wait_for(lambda spans: wanted <= _roots(spans), timeout=90)
    kept_fast = _roots(sink.spans) & {line["trace_id"] for line in fast}
    # Binomial(200, 0.1): 20 expected; outside 3-45 has a chance below one in 10^5.
    assert 3 <= len(kept_fast) <= 45, len(kept_fast)
    slow_spans = sink.trace(slow["trace_id"])
    assert any(s.service == "relay" for s in slow_spans), "relay's side of the slow job"
