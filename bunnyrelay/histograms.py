"""Histograms for hot paths: a record is a list append; the points join the SDK's export.

The OpenTelemetry SDK's ``Histogram.record`` builds a ``Measurement``, cleans and
hashes its attributes, matches views and takes a lock, every call: about 11 µs
here, twice per job on each side. A :class:`HotHistogram` appends the value to a
list kept per attribute set (named, as in :class:`~bunnyrelay.tally.Tally`, by a
key the caller already has) and folds the lists into bucket counts, sum, min and
max in batches. The Python SDK has no hook to add points to its own collection
(no metric producer, no observable histogram), so the points are added where the
SDK hands a collection to its exporter: :class:`HotHistogramExporter` wraps a
``MetricExporter`` (a public interface) and merges each hot histogram of its
``MeterProvider`` into every batch before passing it on. :class:`HotHistogramReader`
is the SDK's periodic reader around one, which also exports when the SDK's own
instruments had nothing to collect (the SDK then calls no exporter at all).
A reader that is not one of these sees the SDK's instruments only.

What an exporter sees is what the SDK's histogram would send: the same name,
unit, description, attributes, explicit bucket boundaries (the SDK's defaults
unless the instrument gives its own), count, sum, min and max, cumulative or
delta as the wrapped exporter prefers, under the meter's instrumentation scope.
What is not carried: exemplars (bunny and relay turn them off,
:mod:`bunnyrelay.telemetry`) and views (neither process configures any). The
values recorded are durations and counts, never negative, so the SDK's check
for negative values is not repeated.

Threads: records come from the event loop's thread, collections from the
reader's. A record only appends to a list (one C call that holds the GIL); a
fold reads ``n = len(values)`` items and deletes exactly those
(``del values[:n]``, one C call too), so a value appended meanwhile stays for
the next fold. Folds change the aggregates, and run under one lock, taken by
the recording thread only once per :data:`FOLD_AT` values of one attribute set.
A new attribute set stores its attributes before its list, so a fold that finds
the list finds the attributes. The exporter lists its histograms with
``list(dict)``, a C copy too, so a histogram made meanwhile waits for the next
collection. Records of one histogram come from one thread: two threads starting
the same attribute set at once could each make its list, and one list's values
would be lost.
"""

from __future__ import annotations

import threading
import weakref
from bisect import bisect_left
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from time import time_ns
from typing import Any

from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics import Histogram as SdkHistogram
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.util.types import AttributeValue

# The SDK's own defaults for an explicit-bucket histogram whose instrument gives none
# (opentelemetry-sdk 1.45, metrics/_internal/aggregation.py), so that an instrument moved
# here keeps the buckets its dashboards were drawn on.
DEFAULT_BOUNDARIES: tuple[float, ...] = (
    0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0,
    7500.0, 10000.0,
)  # fmt: skip

FOLD_AT = 512
"""Values of one attribute set kept before the recording thread folds them: bounds the
memory between collections (and what a process without an exporter keeps)."""

CARDINALITY_LIMIT = 2000
"""Attribute sets kept apart, the SDK's default; later ones are counted together under
``otel.metric.overflow=true``, one more point, as the SDK counts them."""

Attributes = Mapping[str, AttributeValue]
_OVERFLOW = object()
_OVERFLOW_ATTRIBUTES: Attributes = {"otel.metric.overflow": True}


@dataclass(slots=True)
class _Aggregate:
    """One attribute set's running bucket counts, as one exporter has not yet been told them."""

    start_ns: int
    bucket_counts: list[int]
    count: int = 0
    total: float = 0.0
    low: float = float("inf")
    high: float = float("-inf")


@dataclass(slots=True)
class _Reader:
    """One exporter's view of a histogram: what it has been sent, and since when."""

    temporality: AggregationTemporality
    since_ns: int
    aggregates: dict[Hashable, _Aggregate] = field(default_factory=dict)


class HotHistogram:
    """An explicit-bucket histogram whose attribute sets are named by keys the caller has."""

    __slots__ = (
        "__weakref__",
        "_attributes",
        "_first_ns",
        "_lock",
        "_pending",
        "_readers",
        "boundaries",
        "description",
        "meter",
        "name",
        "unit",
    )

    def __init__(
        self,
        meter: Meter,
        name: str,
        *,
        unit: str,
        description: str,
        boundaries: Sequence[float] = DEFAULT_BOUNDARIES,
    ) -> None:
        bounds = tuple(float(bound) for bound in boundaries)
        if any(later <= earlier for earlier, later in pairwise(bounds)):
            raise ValueError(f"{name}: bucket boundaries must increase: {boundaries!r}")
        self.meter = meter
        self.name = name
        self.unit = unit
        self.description = description
        self.boundaries = bounds
        self._pending: dict[Hashable, list[float]] = {}
        self._attributes: dict[Hashable, Attributes] = {}
        self._first_ns: dict[Hashable, int] = {}
        self._readers: dict[object, _Reader] = {}
        self._lock = threading.Lock()
        _histograms.add(self)
        for exporter in list(_exporters):
            exporter.adopt(self)

    def record(self, key: Hashable, attributes: Attributes, value: float) -> None:
        """Count ``value`` under ``attributes``, which ``key`` must name one-to-one."""
        pending = self._pending.get(key)
        if pending is None:
            pending = self._begin(key, attributes)
        pending.append(value)
        if len(pending) >= FOLD_AT:
            with self._lock:
                self._fold()

    def _begin(self, key: Hashable, attributes: Attributes) -> list[float]:
        if len(self._pending) >= CARDINALITY_LIMIT:
            key, attributes = _OVERFLOW, _OVERFLOW_ATTRIBUTES
            overflow = self._pending.get(key)
            if overflow is not None:
                return overflow
        self._attributes[key] = dict(attributes)
        self._first_ns[key] = time_ns()
        pending: list[float] = []
        self._pending[key] = pending
        return pending

    def _fold(self) -> None:
        """Move every pending value into each reader's aggregates; the lock is held."""
        bounds = self.boundaries
        readers = list(self._readers.values())
        for key, pending in list(self._pending.items()):
            taken = len(pending)
            if not taken:
                continue
            values = pending[:taken]
            del pending[:taken]
            if not readers:
                continue
            counts = [0] * (len(bounds) + 1)
            for value in values:
                counts[bisect_left(bounds, value)] += 1
            total, low, high = sum(values), min(values), max(values)
            for reader in readers:
                aggregate = reader.aggregates.get(key)
                if aggregate is None:
                    start = max(self._first_ns[key], reader.since_ns)
                    aggregate = reader.aggregates[key] = _Aggregate(start, [0] * len(counts))
                aggregate.bucket_counts = [
                    a + b for a, b in zip(aggregate.bucket_counts, counts, strict=True)
                ]
                aggregate.count += taken
                aggregate.total += total
                aggregate.low = min(aggregate.low, low)
                aggregate.high = max(aggregate.high, high)

    def add_reader(self, reader: object, temporality: AggregationTemporality) -> None:
        with self._lock:
            self._readers[reader] = _Reader(temporality, time_ns())

    def remove_reader(self, reader: object) -> None:
        with self._lock:
            self._readers.pop(reader, None)

    def collect(self, reader: object, now_ns: int) -> list[HistogramDataPoint]:
        """The points ``reader`` is owed at ``now_ns``: all so far (cumulative) or those
        since its last collection (delta)."""
        with self._lock:
            self._fold()
            state = self._readers.get(reader)
            if state is None:
                return []
            aggregates = state.aggregates
            if state.temporality is AggregationTemporality.DELTA:
                state.aggregates = {}
                state.since_ns = now_ns
            return [
                HistogramDataPoint(
                    attributes=self._attributes[key],
                    start_time_unix_nano=aggregate.start_ns,
                    time_unix_nano=now_ns,
                    count=aggregate.count,
                    sum=aggregate.total,
                    bucket_counts=tuple(aggregate.bucket_counts),
                    explicit_bounds=self.boundaries,
                    min=aggregate.low,
                    max=aggregate.high,
                )
                for key, aggregate in aggregates.items()
            ]


_histograms: weakref.WeakSet[HotHistogram] = weakref.WeakSet()
_exporters: weakref.WeakSet[HotHistogramExporter] = weakref.WeakSet()


class HotHistogramExporter(MetricExporter):
    """``exporter``, each batch it exports joined by the hot histograms of one meter provider
    (made by :class:`HotHistogramReader`, which tells it the provider)."""

    def __init__(self, exporter: MetricExporter) -> None:
        # PeriodicExportingMetricReader takes its temporality and aggregation from these two
        # attributes of its exporter (opentelemetry-sdk 1.45, metrics/_internal/export/
        # __init__.py); passing the wrapped exporter's on keeps its preferences the reader's.
        preferred_temporality = exporter._preferred_temporality
        super().__init__(
            preferred_temporality=preferred_temporality,
            preferred_aggregation=exporter._preferred_aggregation,
        )
        self.exporter = exporter
        self.temporality = (preferred_temporality or {}).get(
            SdkHistogram, AggregationTemporality.CUMULATIVE
        )
        self._provider: MeterProvider | None = None
        self._resource = Resource.get_empty()
        # Held as the SDK holds its instruments, for as long as the provider: a value
        # recorded just before its owner is dropped is still exported.
        self._adopted: dict[HotHistogram, None] = {}

    def attach(self, provider: MeterProvider, resource: Resource) -> None:
        """Export the hot histograms made from ``provider``'s meters, now and later."""
        self._provider = provider
        self._resource = resource
        _exporters.add(self)
        for histogram in list(_histograms):
            self.adopt(histogram)

    def adopt(self, histogram: HotHistogram) -> None:
        """Export ``histogram`` if its meter is this provider's.

        The SDK's ``MeterProvider.get_meter`` keeps one meter per instrumentation scope
        and returns it again (opentelemetry-sdk 1.45, metrics/_internal/__init__.py), so
        asking for the scope again tells whether the meter came from this provider.
        """
        provider, meter = self._provider, histogram.meter
        if provider is None or histogram in self._adopted:
            return
        if provider.get_meter(meter.name, meter.version, meter.schema_url) is not meter:
            return
        histogram.add_reader(self, self.temporality)
        self._adopted[histogram] = None

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        merged = self.merged(metrics_data, time_ns())
        if not merged.resource_metrics:
            return MetricExportResult.SUCCESS
        return self.exporter.export(merged, timeout_millis=timeout_millis, **kwargs)

    def merged(self, metrics_data: MetricsData, now_ns: int) -> MetricsData:
        """``metrics_data`` with the hot histograms' points at ``now_ns`` added."""
        by_scope: dict[InstrumentationScope, list[Metric]] = {}
        for histogram in list(self._adopted):
            points = histogram.collect(self, now_ns)
            if not points:
                continue
            meter = histogram.meter
            scope = InstrumentationScope(meter.name, meter.version, meter.schema_url)
            by_scope.setdefault(scope, []).append(
                Metric(
                    name=histogram.name,
                    description=histogram.description,
                    unit=histogram.unit,
                    data=Histogram(data_points=points, aggregation_temporality=self.temporality),
                )
            )
        if not by_scope:
            return metrics_data
        resources = list(metrics_data.resource_metrics)
        first = resources[0] if resources else None
        scopes = list(first.scope_metrics) if first is not None else []
        for index, scope_metrics in enumerate(scopes):
            hot = by_scope.pop(scope_metrics.scope, None)
            if hot is not None:
                scopes[index] = ScopeMetrics(
                    scope=scope_metrics.scope,
                    metrics=[*scope_metrics.metrics, *hot],
                    schema_url=scope_metrics.schema_url,
                )
        scopes.extend(
            ScopeMetrics(scope=scope, metrics=metrics, schema_url=scope.schema_url or "")
            for scope, metrics in by_scope.items()
        )
        resource = first.resource if first is not None else self._resource
        schema_url = first.schema_url if first is not None else resource.schema_url
        return MetricsData(
            resource_metrics=[
                ResourceMetrics(resource=resource, scope_metrics=scopes, schema_url=schema_url),
                *resources[1:],
            ]
        )

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.exporter.force_flush(timeout_millis=timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        _exporters.discard(self)
        for histogram in list(self._adopted):
            histogram.remove_reader(self)
        self.exporter.shutdown(timeout_millis=timeout_millis, **kwargs)


class HotHistogramReader(PeriodicExportingMetricReader):
    """The SDK's periodic reader of ``exporter``, the hot histograms of its provider included.

    Made before the provider (the provider takes its readers), then told it::

        reader = HotHistogramReader(OTLPMetricExporter())
        provider = MeterProvider(resource=resource, metric_readers=[reader])
        reader.attach(provider, resource)
    """

    def __init__(
        self,
        exporter: MetricExporter,
        export_interval_millis: float | None = None,
        export_timeout_millis: float | None = None,
    ) -> None:
        self.hot = HotHistogramExporter(exporter)
        self._received = threading.local()
        super().__init__(self.hot, export_interval_millis, export_timeout_millis)

    def attach(self, provider: MeterProvider, resource: Resource) -> None:
        """Export the hot histograms made from ``provider``'s meters, now and later."""
        self.hot.attach(provider, resource)

    # The SDK marks collect final; this one runs it unchanged, then makes up for one case:
    # MetricReader.collect skips _receive_metrics when the SDK's own instruments have
    # nothing (opentelemetry-sdk 1.45, metrics/_internal/export/__init__.py), which
    # would leave the hot histograms' points behind in a process that has only them.
    def collect(self, timeout_millis: float = 10_000) -> None:  # type: ignore[misc]
        self._received.batch = False
        super().collect(timeout_millis=timeout_millis)
        if not self._received.batch:
            self._receive_metrics(MetricsData(resource_metrics=[]), timeout_millis=timeout_millis)

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        self._received.batch = True
        super()._receive_metrics(metrics_data, timeout_millis=timeout_millis, **kwargs)
