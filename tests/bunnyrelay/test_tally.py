"""bunnyrelay.tally: per-job counts reach the exporter as an ordinary monotonic sum."""

from __future__ import annotations

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, Sum

from bunnyrelay.tally import Tally


def _points(reader: InMemoryMetricReader) -> dict[tuple[tuple[str, object], ...], int]:
    data = reader.get_metrics_data()
    assert data is not None
    points: dict[tuple[tuple[str, object], ...], int] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                assert metric.name == "jobs"
                assert metric.unit == "{job}"
                assert isinstance(metric.data, Sum)
                assert metric.data.is_monotonic
                for point in metric.data.data_points:
                    points[tuple(sorted((point.attributes or {}).items()))] = int(point.value)
    return points


def test_counts_are_reported_per_attribute_set_and_keep_growing() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    tally = Tally(provider.get_meter("test"), "jobs", unit="{job}", description="jobs")
    ok = {"job.kind": "echo", "job.status": "SUCCEEDED"}
    failed = {"job.kind": "echo", "job.status": "FAILED"}
    for _ in range(5):
        tally.add(("echo", "ok"), ok)
    tally.add(("echo", "failed"), failed, amount=2)

    assert _points(reader) == {
        (("job.kind", "echo"), ("job.status", "SUCCEEDED")): 5,
        (("job.kind", "echo"), ("job.status", "FAILED")): 2,
    }
    tally.add(("echo", "ok"), ok)
    # Cumulative, as a counter's sum is by default: the second collection includes the first.
    assert _points(reader)[(("job.kind", "echo"), ("job.status", "SUCCEEDED"))] == 6
    assert tally.total(("echo", "ok")) == 6
    provider.shutdown()


def test_the_attributes_are_copied_when_first_seen() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    tally = Tally(provider.get_meter("test"), "jobs", unit="{job}", description="jobs")
    attributes = {"job.kind": "echo"}
    tally.add("echo", attributes)
    attributes["job.kind"] = "changed later"

    assert _points(reader) == {(("job.kind", "echo"),): 1}
    provider.shutdown()
