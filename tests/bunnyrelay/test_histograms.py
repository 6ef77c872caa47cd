"""bunnyrelay.histograms: a hot histogram reaches the exporter as the SDK's histogram would."""

from __future__ import annotations

import math
import random
import threading

import pytest
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    InMemoryMetricReader,
)
from opentelemetry.util.types import AttributeValue

from bunnyrelay.histograms import CARDINALITY_LIMIT, FOLD_AT, HotHistogram, HotHistogramReader
from tests.metrics_capture import MetricsCapture

DELTA = AggregationTemporality.DELTA
OK: dict[str, AttributeValue] = {"rpc.method": "Run", "rpc.grpc.status_code": 0}
FAILED: dict[str, AttributeValue] = {"rpc.method": "Run", "rpc.grpc.status_code": 14}


def _sdk_point(values: list[float], boundaries: tuple[float, ...] | None) -> HistogramDataPoint:
    """What the SDK's own histogram exports for ``values``."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    histogram = provider.get_meter("sdk").create_histogram(
        "d", unit="ms", explicit_bucket_boundaries_advisory=boundaries
    )
    for value in values:
        histogram.record(value, OK)
    data = reader.get_metrics_data()
    provider.shutdown()
    assert data is not None
    (point,) = data.resource_metrics[0].scope_metrics[0].metrics[0].data.data_points
    assert isinstance(point, HistogramDataPoint)
    return point


def _same_statistics(hot: HistogramDataPoint, sdk: HistogramDataPoint) -> None:
    assert hot.explicit_bounds == tuple(sdk.explicit_bounds)
    assert tuple(hot.bucket_counts) == tuple(sdk.bucket_counts)
    assert hot.count == sdk.count
    assert hot.sum == pytest.approx(sdk.sum)
    assert (hot.min, hot.max) == (sdk.min, sdk.max)


@pytest.mark.parametrize("boundaries", [None, (0.0, 0.005, 0.01, 0.1, 1, 2.5)])
def test_buckets_sum_min_and_max_are_the_sdks_for_the_same_values(
    boundaries: tuple[float, ...] | None,
) -> None:
    # Values on the boundaries too: a bucket holds its upper bound, as the SDK counts it.
    values = [0.0, 0.005, 0.004, 5.0, 7.2, 10.0, 99.0, 1000.0, 12000.0, 1.0, 2.5, 3.0]
    values += [random.Random(7).uniform(0, 3000) for _ in range(3 * FOLD_AT)]
    capture = MetricsCapture()
    extra = {} if boundaries is None else {"boundaries": boundaries}
    histogram = HotHistogram(
        capture.provider.get_meter("hot"), "d", unit="ms", description="Run time", **extra
    )
    for value in values:
        histogram.record("ok", OK, value)

    (point,) = capture.histogram("d").values()
    _same_statistics(point, _sdk_point(values, boundaries))
    capture.shutdown()


def test_the_metric_carries_its_name_unit_description_scope_and_attribute_sets() -> None:
    capture = MetricsCapture()
    histogram = HotHistogram(
        capture.provider.get_meter("relay", "1.2"), "rpc.server.duration", unit="ms",
        description="Duration of inbound RPCs",
    )  # fmt: skip
    attributes = dict(FAILED)
    histogram.record("ok", OK, 3.0)
    histogram.record("ok", OK, 4.0)
    histogram.record("unavailable", attributes, 9.0)
    attributes["rpc.method"] = "changed after the record"

    data = capture.collect()
    assert data is not None
    (resource,) = data.resource_metrics
    assert resource.resource.attributes["service.name"] == "test"
    (scope,) = resource.scope_metrics
    assert (scope.scope.name, scope.scope.version) == ("relay", "1.2")
    (metric,) = scope.metrics
    assert (metric.name, metric.unit, metric.description) == (
        "rpc.server.duration",
        "ms",
        "Duration of inbound RPCs",
    )
    assert isinstance(metric.data, Histogram)
    counts = {frozenset((p.attributes or {}).items()): p.count for p in metric.data.data_points}
    assert counts == {frozenset(OK.items()): 2, frozenset(FAILED.items()): 1}
    capture.shutdown()


def test_it_joins_the_scope_of_the_sdks_instruments_on_the_same_meter() -> None:
    capture = MetricsCapture()
    meter = capture.provider.get_meter("bunny")
    meter.create_counter("jobs").add(1)
    HotHistogram(meter, "job.duration", unit="s", description="d").record("k", {}, 0.2)

    data = capture.collect()
    assert data is not None
    (scope,) = data.resource_metrics[0].scope_metrics
    assert sorted(metric.name for metric in scope.metrics) == ["job.duration", "jobs"]
    capture.shutdown()


def test_cumulative_collections_keep_growing_and_delta_ones_start_again() -> None:
    cumulative, delta = MetricsCapture(), MetricsCapture(DELTA)
    made = [
        HotHistogram(c.provider.get_meter("m"), "d", unit="ms", description="d")
        for c in (cumulative, delta)
    ]
    for histogram in made:
        histogram.record("ok", OK, 3.0)
        histogram.record("ok", OK, 30.0)
    first_cumulative = cumulative.histogram("d")[frozenset(OK.items())]
    first_delta = delta.histogram("d")[frozenset(OK.items())]
    for histogram in made:
        histogram.record("ok", OK, 700.0)
    second_cumulative = cumulative.histogram("d")[frozenset(OK.items())]
    second_delta = delta.histogram("d")[frozenset(OK.items())]

    assert (first_cumulative.count, first_delta.count) == (2, 2)
    assert (second_cumulative.count, second_cumulative.sum) == (3, 733.0)
    assert (second_cumulative.min, second_cumulative.max) == (3.0, 700.0)
    assert second_cumulative.start_time_unix_nano == first_cumulative.start_time_unix_nano
    assert (second_delta.count, second_delta.sum, second_delta.min) == (1, 700.0, 700.0)
    # A delta point starts where the one before it ended.
    assert second_delta.start_time_unix_nano == first_delta.time_unix_nano
    # Nothing recorded since: a delta collection has no point, a cumulative one still has it.
    assert delta.histogram("d") == {}
    assert cumulative.histogram("d")[frozenset(OK.items())].count == 3
    for capture in (cumulative, delta):
        capture.shutdown()


def test_a_process_whose_only_metrics_are_hot_histograms_still_exports_them() -> None:
    capture = MetricsCapture()
    histogram = HotHistogram(capture.provider.get_meter("m"), "d", unit="ms", description="d")
    assert capture.collect() is None
    histogram.record("ok", OK, 1.0)

    assert capture.histogram("d")[frozenset(OK.items())].count == 1
    capture.shutdown()


def test_a_histogram_is_exported_by_its_own_meter_providers_exporter_only() -> None:
    mine, other = MetricsCapture(), MetricsCapture()
    HotHistogram(mine.provider.get_meter("m"), "d", unit="ms", description="d").record("k", OK, 1)

    assert other.histogram("d") == {}
    assert mine.histogram("d")[frozenset(OK.items())].count == 1
    mine.shutdown()
    other.shutdown()


def test_records_made_during_collections_are_each_counted_once() -> None:
    capture = MetricsCapture(DELTA)
    histogram = HotHistogram(capture.provider.get_meter("m"), "d", unit="ms", description="d")
    recorded = 200 * FOLD_AT
    done = threading.Event()

    def record() -> None:
        for index in range(recorded):
            histogram.record(index % 3, {"shard": index % 3}, float(index % 50))
        done.set()

    recorder = threading.Thread(target=record)
    points: list[HistogramDataPoint] = []
    recorder.start()
    while not done.is_set():
        points.extend(capture.histogram("d").values())
    recorder.join()
    points.extend(capture.histogram("d").values())

    assert len(points) > 3, "the collections did not overlap the records"
    assert sum(point.count for point in points) == recorded
    for point in points:
        assert sum(point.bucket_counts) == point.count
    assert sum(point.sum for point in points) == sum(float(i % 50) for i in range(recorded))
    capture.shutdown()


def test_boundaries_that_do_not_increase_are_refused_with_the_instruments_name() -> None:
    capture = MetricsCapture()
    with pytest.raises(ValueError, match=r"job\.duration: bucket boundaries must increase"):
        HotHistogram(
            capture.provider.get_meter("m"), "job.duration", unit="s", description="d",
            boundaries=(1, 5, 5, 10),
        )  # fmt: skip
    capture.shutdown()


def test_attribute_sets_past_the_limit_are_counted_together_as_overflow() -> None:
    capture = MetricsCapture()
    histogram = HotHistogram(capture.provider.get_meter("m"), "d", unit="ms", description="d")
    for index in range(CARDINALITY_LIMIT + 5):
        histogram.record(index, {"name": f"n{index}"}, 1.0)

    points = capture.histogram("d")
    # As the SDK 1.45 does: the overflow point comes in addition to the limit's sets.
    assert len(points) == CARDINALITY_LIMIT + 1
    assert points[frozenset({("otel.metric.overflow", True)})].count == 5
    capture.shutdown()


@pytest.mark.parametrize(
    ("preference", "expected"),
    [("delta", DELTA), ("cumulative", AggregationTemporality.CUMULATIVE)],
)
def test_the_otlp_exporters_temporality_preference_is_the_hot_histograms_too(
    monkeypatch: pytest.MonkeyPatch, preference: str, expected: AggregationTemporality
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", preference)
    exporter = OTLPMetricExporter(endpoint="http://127.0.0.1:9", insecure=True)
    reader = HotHistogramReader(exporter, export_interval_millis=math.inf)

    assert reader.hot.temporality is expected
    exporter.shutdown()
