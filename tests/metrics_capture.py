"""Metrics as the OTLP exporter would receive them, for tests that run bunny or relay in-process.

The hot paths' histograms (:mod:`bunnyrelay.histograms`) join the SDK's metrics
where the SDK hands them to its exporter, so a test reads what an exporter is
given: the same reader bunny and relay export with, its exporter replaced by one
that keeps the last batch, and no timer (the test collects).
"""

from __future__ import annotations

import math
from typing import Any

from opentelemetry.sdk.metrics import Histogram as SdkHistogram
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    MetricExporter,
    MetricExportResult,
    MetricsData,
)
from opentelemetry.sdk.resources import Resource

from bunnyrelay.histograms import HotHistogramReader


class KeptBatches(MetricExporter):
    """An exporter that keeps the batches it is given."""

    def __init__(self, temporality: AggregationTemporality) -> None:
        super().__init__(preferred_temporality={SdkHistogram: temporality})
        self.batches: list[MetricsData] = []

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        self.batches.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


class MetricsCapture:
    """A meter provider whose every :meth:`collect` returns what its exporter was given."""

    def __init__(
        self, temporality: AggregationTemporality = AggregationTemporality.CUMULATIVE
    ) -> None:
        self.exported = KeptBatches(temporality)
        self.reader = HotHistogramReader(self.exported, export_interval_millis=math.inf)
        resource = Resource.create({"service.name": "test"})
        self.provider = MeterProvider(resource=resource, metric_readers=[self.reader])
        self.reader.attach(self.provider, resource)

    def collect(self) -> MetricsData | None:
        """Collect now; the batch exported, or None when there was nothing to export."""
        before = len(self.exported.batches)
        self.reader.collect()
        return self.exported.batches[-1] if len(self.exported.batches) > before else None

    def points(self, name: str) -> list[tuple[dict[str, Any], Any]]:
        """(attributes, point) of metric ``name`` in a collection made now."""
        data = self.collect()
        if data is None:
            return []
        return [
            (dict(point.attributes or {}), point)
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]

    def histogram(self, name: str) -> dict[frozenset[tuple[str, Any]], HistogramDataPoint]:
        """Histogram ``name``'s points by attribute set, collected now."""
        found: dict[frozenset[tuple[str, Any]], HistogramDataPoint] = {}
        for attributes, point in self.points(name):
            assert isinstance(point, HistogramDataPoint)
            found[frozenset(attributes.items())] = point
        return found

    def shutdown(self) -> None:
        self.provider.shutdown()
