"""In-memory span capture for tests that run bunny or relay inside the test process.

OpenTelemetry allows one global tracer provider per process, so the first call
installs an SDK provider whose spans go to one in-memory exporter, and every
later call returns that exporter. Clear it before use: ``span_exporter().clear()``.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

_exporter: InMemorySpanExporter | None = None


def span_exporter() -> InMemorySpanExporter:
    """The process-wide in-memory exporter, installed on first use."""
    global _exporter
    if _exporter is None:
        exporter = InMemorySpanExporter()
        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            provider = TracerProvider()
            trace.set_tracer_provider(provider)
        # If some other code installed an SDK provider first, capture its spans too.
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        _exporter = exporter
    return _exporter
