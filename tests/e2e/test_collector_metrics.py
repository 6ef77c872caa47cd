"""bunny's and relay's metrics through a real OpenTelemetry Collector, as Prometheus reads them.

The Collector is the binary of the compose stack's own image (``make service-images``),
run as a process on loopback with the compose configuration's Prometheus exporter
(deploy/compose/otel-collector.yaml). A real relay and the real bunny command export to
it; what its ``/metrics`` page then serves is what Prometheus would scrape, and every
metric name the dashboards and the alerts read must be on it.
"""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from bunny.dns.resolver import Resolver
from bunny.dns.settings import ResolverSettings
from bunny.dns.tracing import DnsTelemetry
from bunnyrelay.telemetry import setup_telemetry
from lab.dnsserver import ZoneServer
from lab.processes import relay_process, run_bunny
from tests.conftest import RELAY_NAME, ZONE
from tests.e2e.engine import ROOT, require_image, run, unique
from tests.fakeclock import FakeClock
from tests.monitoring.promql import every_metric_name

pytestmark = pytest.mark.timeout(300)

COLLECTOR_CONFIG = ROOT / "deploy" / "compose" / "otel-collector.yaml"
COLLECTOR_IMAGE = next(
    line.split()[1]
    for line in (ROOT / "compose.yaml").read_text().splitlines()
    if line.strip().startswith("image:") and "opentelemetry-collector" in line
)
READY_LINE = "Everything is ready"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Collector:
    otlp_endpoint: str
    metrics_url: str

    def env(self, service: str) -> dict[str, str]:
        return {
            "OTEL_SERVICE_NAME": service,
            # Metrics only: this Collector has no traces pipeline.
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": self.otlp_endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_METRIC_EXPORT_INTERVAL": "500",
        }

    def scrape(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            return str(response.read().decode())


def _collector_binary(into: Path) -> Path:
    """The ``otelcol`` binary of the compose stack's Collector image, copied out of it."""
    require_image(COLLECTOR_IMAGE, "service-images")
    name = unique("bunnyrelay-otelcol-copy")
    run(["create", "--name", name, COLLECTOR_IMAGE])
    try:
        entrypoint = yaml.safe_load(
            run(
                ["image", "inspect", "--format", "{{json .Config.Entrypoint}}", COLLECTOR_IMAGE]
            ).stdout
        )
        program = str(entrypoint[0])
        folder = into / "collector"
        folder.mkdir()
        run(["cp", f"{name}:{program}", f"{folder}/"])
    finally:
        run(["rm", "--force", name], check=False)
    return folder / Path(program).name


def _config(otlp_port: int, metrics_port: int) -> dict[str, object]:
    """The compose configuration's metrics path (its OTLP receiver, its processors, its
    Prometheus exporter) on loopback ports of this run's own, and nothing else."""
    shipped = yaml.safe_load(COLLECTOR_CONFIG.read_text())
    pipeline = shipped["service"]["pipelines"]["metrics"]
    prometheus = {**shipped["exporters"]["prometheus"], "endpoint": f"127.0.0.1:{metrics_port}"}
    return {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{otlp_port}"}}}},
        "processors": {name: shipped["processors"][name] for name in pipeline["processors"]},
        "exporters": {"prometheus": prometheus},
        "service": {
            "telemetry": {"metrics": {"level": "none"}},
            "pipelines": {
                "metrics": {
                    "receivers": ["otlp"],
                    "processors": pipeline["processors"],
                    "exporters": ["prometheus"],
                },
            },
        },
    }


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    binary = _collector_binary(tmp_path)
    otlp_port, metrics_port = _free_port(), _free_port()
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(_config(otlp_port, metrics_port)))
    process = subprocess.Popen(
        [binary, f"--config={config}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    ready = threading.Event()
    log: list[str] = []

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            log.append(line)
            if READY_LINE in line:
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(60), "the Collector did not start:\n" + "".join(log[-20:])
        yield Collector(f"http://127.0.0.1:{otlp_port}", f"http://127.0.0.1:{metrics_port}/metrics")
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reader.join(timeout=5)
        if process.stderr is not None:
            process.stderr.close()


def _total(page: str, name: str, *labels: str) -> float:
    """The sum of every sample of ``name`` on a Prometheus text page whose labels include
    each of ``labels`` (``key="value"``)."""
    total = 0.0
    for line in page.splitlines():
        match = re.match(rf"^{name}(\{{[^}}]*\}})?\s+(\S+)", line)
        if match and all(label in (match.group(1) or "") for label in labels):
            total += float(match.group(2))
    return total


def _series(page: str) -> dict[str, list[str]]:
    """``{metric name: [label text of each series]}`` of a Prometheus text page."""
    found: dict[str, list[str]] = {}
    for line in page.splitlines():
        match = re.match(r"^([A-Za-z_:][\w:]*)(\{[^}]*\})?\s", line)
        if match:
            found.setdefault(match.group(1), []).append(match.group(2) or "")
    return found


async def _serve_a_stale_answer(
    collector: Collector, zone: ZoneServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bunny's resolver, in this process, answering stale once the zone goes silent (a fake
    clock moves past the answer's TTL), its metrics exported to the Collector."""
    for name, value in collector.env("bunny").items():
        monkeypatch.setenv(name, value)
    telemetry = setup_telemetry("bunny", install_global=False)
    clock = FakeClock()
    settings = ResolverSettings(
        nameservers=(zone.address,), family="ipv4", timeout=0.3, attempts=1, stale_max=600.0
    )
    resolver = DnsTelemetry(meter_provider=telemetry.meter_provider).wrap(
        Resolver(settings, clock=clock)
    )
    try:
        zone.set_records(f"stale.{ZONE}", "A", ["127.0.0.9"], ttl=0)
        await resolver.resolve(f"stale.{ZONE}")
        zone.go_silent()
        clock.advance(90)
        assert (await resolver.resolve(f"stale.{ZONE}")).source == "stale-cache"
    finally:
        zone.resume()
        await resolver.close()
        telemetry.shutdown()  # flushes the metrics to the Collector


@pytest.fixture
async def exported(
    collector: Collector, zone: ZoneServer, monkeypatch: pytest.MonkeyPatch
) -> dict[str, list[str]]:
    """What the Collector serves once a relay ran jobs from bunny, one lookup failed, one
    answer was served stale, and all of them flushed their metrics."""
    await _serve_a_stale_answer(collector, zone, monkeypatch)
    zone.set_records(RELAY_NAME, "A", ["127.0.0.1"])
    async with relay_process("127.0.0.1:0", env=collector.env("relay")) as relay:
        common = ["--nameserver", str(zone.address), "--json", "--kind", "echo"]
        code, _, err = await run_bunny(
            "submit", "--target", f"{RELAY_NAME}:{relay.port}", "--count", "3", *common,
            env=collector.env("bunny"),
        )  # fmt: skip
        assert code == 0, err
        code, _, err = await run_bunny(
            "submit", "--target", f"missing.{RELAY_NAME.partition('.')[2]}:{relay.port}", *common,
            env=collector.env("bunny"),
        )  # fmt: skip
        assert code != 0

        # relay's metrics come with its next export (its gauges may come in an earlier one
        # than its jobs' histograms), bunny's last ones through the Collector's batching:
        # wait, while relay runs, for every name the queries read and for the failed lookup,
        # up to a bound; the tests then say what is missing.
        wanted = set(every_metric_name())
        page = ""
        deadline = asyncio.get_running_loop().time() + 30
        while asyncio.get_running_loop().time() < deadline:
            page = await asyncio.to_thread(collector.scrape)
            if wanted <= set(_series(page)) and 'rcode="NXDOMAIN"' in page:
                break
            await asyncio.sleep(0.2)
    return _series(page)


async def test_every_metric_the_dashboards_and_alerts_read_is_exported(
    exported: dict[str, list[str]],
) -> None:
    missing = {
        name: sorted(where) for name, where in every_metric_name().items() if name not in exported
    }
    assert missing == {}, f"not on the Collector's page: {missing}; it has {sorted(exported)}"


async def test_the_operator_metrics_carry_the_labels_the_queries_group_by(
    exported: dict[str, list[str]],
) -> None:
    lookups = " ".join(exported["bunnyrelay_dns_lookups_total"])
    assert 'job="bunny"' in lookups
    assert 'bunnyrelay_dns_outcome="answered"' in lookups
    assert 'bunnyrelay_dns_rcode="NXDOMAIN"' in lookups
    assert 'error_type="NameNotFound"' in lookups
    assert "bunnyrelay_dns_nameserver=" in lookups
    ready = exported["bunnyrelay_relay_ready"]
    assert any(
        'job="relay"' in labels and "bunnyrelay_relay_instance=" in labels for labels in ready
    )
    stale = " ".join(exported["bunnyrelay_dns_stale_age_seconds_count"])
    assert f'dns_question_name="stale.{ZONE}"' in stale
    store = " ".join(exported["db_client_operation_duration_seconds_bucket"])
    assert 'db_system_name="sqlite"' in store
    assert 'db_operation_name="reserve"' in store


async def test_batches_of_one_pod_add_up_to_one_series_that_counts_every_job(
    collector: Collector, zone: ZoneServer
) -> None:
    """What the chart and the compose stack run: one ``bunny submit`` process per batch,
    each exporting once as it exits, delta temporality, the pod's name as
    service.instance.id. The Collector's page must count the jobs of every batch in one
    series per pod, as Prometheus' increase() needs; without the adding up it holds only
    the last batch (a new process looks like a counter reset)."""
    zone.set_records(RELAY_NAME, "A", ["127.0.0.1"])
    pod = unique("bunny-pod")
    bunny_env = {
        **collector.env("bunny"),
        "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "delta",
        "OTEL_RESOURCE_ATTRIBUTES": f"service.instance.id={pod},k8s.pod.name={pod}",
    }
    mine = ('job="bunny"', f'instance="{pod}"')
    async with relay_process("127.0.0.1:0", env=collector.env("relay")) as relay:
        batches = (3, 2, 4)
        for done, count in enumerate(batches, start=1):
            code, _, err = await run_bunny(
                "submit", "--target", f"{RELAY_NAME}:{relay.port}", "--count", str(count),
                "--nameserver", str(zone.address), "--json", "--kind", "echo", env=bunny_env,
            )  # fmt: skip
            assert code == 0, err
            expected = sum(batches[:done])

            async def counted(expected: int = expected) -> str:
                while True:
                    page = await asyncio.to_thread(collector.scrape)
                    if _total(page, "bunnyrelay_jobs_total", *mine) >= expected:
                        return page
                    await asyncio.sleep(0.2)

            try:
                page = await asyncio.wait_for(counted(), timeout=30)
            except TimeoutError:
                page = await asyncio.to_thread(collector.scrape)
                seen = _total(page, "bunnyrelay_jobs_total", *mine)
                raise AssertionError(
                    f"after batch {done} the page counts {seen} of {pod}'s {expected} jobs"
                ) from None

    succeeded = (*mine, 'bunnyrelay_job_status="SUCCEEDED"')
    assert _total(page, "bunnyrelay_jobs_total", *succeeded) == sum(batches)
    assert _total(page, "bunnyrelay_job_duration_seconds_count", *mine) == sum(batches)
    # Every lookup bunny made is counted too, a histogram and a counter of its own.
    assert _total(page, "bunnyrelay_dns_lookups_total", *mine) >= len(batches)
    instances = {
        labels
        for labels in _series(page)["bunnyrelay_jobs_total"]
        if 'job="bunny"' in labels and "instance=" in labels
    }
    assert all(f'instance="{pod}"' in labels for labels in instances), instances
