"""The run report: quantiles read as Prometheus reads them, panels from a real run's metrics."""

from __future__ import annotations

import pytest

from lab.dnsserver import ZoneServer
from lab.otlpsink import OtlpSink, SinkPoint
from lab.processes import run_bunny
from lab.report import quantile, render
from tests.conftest import RELAY_NAME, StartRelay


def _histogram(bounds: tuple[float, ...], counts: tuple[int, ...]) -> SinkPoint:
    return SinkPoint("bunny", "h", "s", {}, count=sum(counts), bounds=bounds, bucket_counts=counts)


def test_quantiles_interpolate_within_the_bucket_they_fall_in() -> None:
    point = _histogram((0.01, 0.1, 1.0), (0, 10, 10, 0))
    assert quantile(point, 0.5) == pytest.approx(0.1)
    assert quantile(point, 0.75) == pytest.approx(0.55)
    assert quantile(_histogram((0.01,), (0, 3)), 0.99) == pytest.approx(0.01)
    assert quantile(_histogram((0.01,), (0, 0)), 0.5) == 0.0


async def test_the_report_shows_a_runs_lookups_queries_and_jobs_from_its_metrics(
    zone: ZoneServer, sink: OtlpSink, start_relay: StartRelay
) -> None:
    async with start_relay() as relay:
        zone.set_records(RELAY_NAME, "A", ["127.0.0.1"])
        for target, count in ((RELAY_NAME, "2"), ("missing.private.aws.internal", "1")):
            await run_bunny(
                "submit", "--target", f"{target}:{relay.port}", "--nameserver",
                str(zone.address), "--count", count, "--json", env=sink.env("bunny"),
            )  # fmt: skip
        assert await relay.terminate() == 0

    page = render(sink.series(), title="a run")

    assert page.startswith("<!DOCTYPE html>")
    assert f"{zone.address} NOERROR" in page
    assert f"{zone.address} NXDOMAIN" in page
    assert "missing.private.aws.internal failed NXDOMAIN" in page
    assert "echo FAILED NameNotFound" in page
    assert "echo SUCCEEDED" in page
    assert "<script" not in page
