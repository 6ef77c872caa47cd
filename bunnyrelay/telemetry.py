"""OpenTelemetry bootstrap for both processes, driven by the standard ``OTEL_*`` variables.

Every variable this module depends on is checked first (:mod:`bunnyrelay.otelenv`), so
a typo stops the process at start with a message instead of failing each export later.

- ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES`` name the process (the
  default service name is used only when neither sets ``service.name``).
- ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG`` choose the sampler.
- ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or the ``_TRACES_`` / ``_METRICS_`` variants)
  turns on OTLP export; ``OTEL_EXPORTER_OTLP_PROTOCOL`` picks ``grpc`` or
  ``http/protobuf`` (the specification's default). The exporters read the rest
  of their ``OTEL_EXPORTER_OTLP_*`` settings themselves; spans are encoded by
  :mod:`bunnyrelay.otlpencode` where it was checked against the installed SDK (the same
  request as the SDK's encoder, for less CPU), by the SDK's encoder elsewhere.
- ``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`` is read by the metric exporter
  (``delta`` where each batch of bunny is a process of its own: docs/alerts.md).
- ``OTEL_METRICS_EXEMPLAR_FILTER`` is honoured when set; unset, exemplars are
  off, not the SDK's default ``trace_based``.
- Unsampled jobs that fail, are retried or are slow still export their trace
  (:mod:`bunnyrelay.keeping`) when spans are exported and ``keep`` is on; whenever spans
  are exported and ``keep`` is given (bunny, relay), sampled spans are light ones
  (:class:`bunnyrelay.keeping.SampledSpan`), keeping on or off.
- ``OTEL_PROPAGATORS`` is honoured by the OpenTelemetry API (W3C trace context
  and baggage by default); checked here, so a process must not import
  ``opentelemetry.propagate`` before calling :func:`setup_telemetry`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import (
    AlwaysOffExemplarFilter,
    AlwaysOnExemplarFilter,
    ExemplarFilter,
    MeterProvider,
    TraceBasedExemplarFilter,
)
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from bunnyrelay.histograms import HotHistogramReader
from bunnyrelay.keeping import connect_keeping, keeping_tracer_provider
from bunnyrelay.keepsettings import KeepSettings
from bunnyrelay.otelenv import (
    OtlpDestination,
    check_batch_span_processor,
    check_propagators,
    check_sampler,
    exemplar_filter,
    metrics_temporality,
    otlp_destination,
)
from bunnyrelay.otlpencode import Encoder, encoder, span_exporter


@dataclass
class Telemetry:
    """The providers this process installed; ``shutdown`` flushes what is buffered."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    exporting: bool
    span_encoder: Encoder | None = None
    """Which OTLP span encoder the exporter uses (:mod:`bunnyrelay.otlpencode`); None when
    spans are not exported."""
    _closed: bool = field(default=False, repr=False)

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.tracer_provider.force_flush()
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def _exporter_options(destination: OtlpDestination) -> dict[str, Any]:
    """Constructor arguments for what the exporters would otherwise read from the environment
    less carefully: the compression (the SDK's gRPC exporter fails to start on ``none``)."""
    if destination.compression is None:
        return {}
    if destination.protocol == "grpc":
        from grpc import Compression
    else:
        from opentelemetry.exporter.otlp.proto.http import Compression  # type: ignore[assignment]
    by_name = {
        "gzip": Compression.Gzip,
        "deflate": Compression.Deflate,
        "none": Compression.NoCompression,
    }
    return {"compression": by_name[destination.compression]}


def _metric_reader(destination: OtlpDestination) -> HotHistogramReader:
    """The OTLP metric exporter's periodic reader, the hot paths' histograms included
    (:mod:`bunnyrelay.histograms`)."""
    if destination.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # type: ignore[assignment]
            OTLPMetricExporter,
        )
    return HotHistogramReader(OTLPMetricExporter(**_exporter_options(destination)))


def _exemplar_filter(environ: Mapping[str, str]) -> ExemplarFilter:
    # Unset means off, not the SDK's trace_based: that samples one on every measurement
    # made inside a sampled span, per-call work for data no backend here reads.
    chosen = exemplar_filter(environ)
    if chosen == "always_on":
        return AlwaysOnExemplarFilter()
    if chosen == "trace_based":
        return TraceBasedExemplarFilter()
    return AlwaysOffExemplarFilter()


def build_resource(default_service_name: str) -> Resource:
    resource = Resource.create()
    name = str(resource.attributes.get(SERVICE_NAME, ""))
    if not name or name.startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: default_service_name}))
    return resource


def setup_telemetry(
    default_service_name: str,
    *,
    span_processors: Sequence[SpanProcessor] = (),
    metric_readers: Sequence[MetricReader] = (),
    install_global: bool = True,
    environ: Mapping[str, str] = os.environ,
    keep: KeepSettings | None = None,
) -> Telemetry:
    """Build tracer and meter providers from the environment and (by default) install them.

    ``metric_readers`` read the SDK's instruments; the hot paths' histograms
    (:mod:`bunnyrelay.histograms`) reach the OTLP exporter and any
    :class:`~bunnyrelay.histograms.HotHistogramReader` among them.

    Raises SettingError for a bad ``OTEL_*`` value, before anything is started.
    """
    check_propagators(environ)
    check_sampler(environ)
    traces = otlp_destination("TRACES", environ)
    if traces is not None:
        check_batch_span_processor(environ)
    metrics_to = otlp_destination("METRICS", environ)
    if metrics_to is not None:
        metrics_temporality(environ)
    exemplars = _exemplar_filter(environ)
    resource = build_resource(default_service_name)
    exporting = False
    span_encoder: Encoder | None = None

    tracer_provider = TracerProvider(resource=resource)
    if keep is not None and traces is not None:
        tracer_provider = keeping_tracer_provider(tracer_provider, resource, keep)
    for processor in span_processors:
        tracer_provider.add_span_processor(processor)
    batch: BatchSpanProcessor | None = None
    if traces is not None:
        exporter = span_exporter(traces.protocol, **_exporter_options(traces))
        batch = BatchSpanProcessor(exporter)
        tracer_provider.add_span_processor(batch)
        span_encoder = encoder()
        exporting = True

    readers = list(metric_readers)
    otlp_metrics: HotHistogramReader | None = None
    if metrics_to is not None:
        otlp_metrics = _metric_reader(metrics_to)
        readers.append(otlp_metrics)
        exporting = True
    meter_provider = MeterProvider(
        resource=resource, metric_readers=readers, exemplar_filter=exemplars
    )
    for reader in readers:
        if isinstance(reader, HotHistogramReader):
            reader.attach(meter_provider, resource)

    if batch is not None:
        connect_keeping(tracer_provider, batch, meter_provider)

    if install_global:
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(meter_provider)
    return Telemetry(tracer_provider, meter_provider, exporting, span_encoder)
