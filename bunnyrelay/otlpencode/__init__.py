"""The fast OTLP span encoder, plugged into the SDK's own exporters where it is known to be exact.

:func:`span_exporter` is the whole interface: the OTLP span exporter for a protocol
(``grpc`` or ``http/protobuf``), the SDK's own, configured by the ``OTEL_EXPORTER_OTLP_*``
variables as usual. Where the installed OpenTelemetry packages are a version this encoder
was checked against (:data:`CHECKED_VERSIONS`), only the exporter's encoding step is
replaced by :mod:`.wire`, which writes the very same request bytes for a fraction of the
CPU (docs/benchmarks.md). On any other version the SDK's exporter is returned untouched
and nothing of :mod:`.wire` or :mod:`.exporters` is imported: those two rely on the SDK's
private functions and span internals, which may change in any release.

Checking a version: install it, run ``pytest tests/bunnyrelay/otlpencode`` (the encoder's
bytes against the official encoder's for any spans the SDK makes, and both exporters
against a real OTLP receiver), then add it here.
"""

from __future__ import annotations

import functools
from importlib import metadata
from typing import Any, Literal

from opentelemetry.sdk.trace.export import SpanExporter

__all__ = ["CHECKED_VERSIONS", "DISTRIBUTIONS", "Encoder", "encoder", "span_exporter"]

CHECKED_VERSIONS = frozenset({"1.45.2"})
"""Releases of the OpenTelemetry Python packages below that the encoder was checked against."""

DISTRIBUTIONS = (
    "opentelemetry-sdk",
    "opentelemetry-proto",
    "opentelemetry-exporter-otlp-proto-common",
    "opentelemetry-exporter-otlp-proto-grpc",
    "opentelemetry-exporter-otlp-proto-http",
)
"""What the encoder depends on: the span objects, the messages, the official encoder it
must equal and the two exporters it plugs into. They are released together, one version."""

Encoder = Literal["bunnyrelay", "sdk"]


def installed_versions() -> dict[str, str | None]:
    """The installed version of each of :data:`DISTRIBUTIONS` (None when missing)."""
    versions: dict[str, str | None] = {}
    for distribution in DISTRIBUTIONS:
        try:
            versions[distribution] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            versions[distribution] = None
    return versions


def unchecked(versions: dict[str, str | None]) -> list[str]:
    """Each of ``versions`` the encoder was not checked against, as ``name version``."""
    return [
        f"{name} {version or '(not installed)'}"
        for name, version in versions.items()
        if version not in CHECKED_VERSIONS
    ]


@functools.cache
def encoder() -> Encoder:
    """Which encoder :func:`span_exporter`'s exporters use in this process (decided once)."""
    return "sdk" if unchecked(installed_versions()) else "bunnyrelay"


def span_exporter(protocol: str, **options: Any) -> SpanExporter:
    """A new OTLP span exporter for ``protocol`` (``grpc`` or ``http/protobuf``); ``options``
    are the SDK exporter's own constructor arguments, e.g. ``compression``."""
    if protocol not in ("grpc", "http/protobuf"):
        raise ValueError(f"no OTLP span exporter for protocol {protocol!r}")
    if encoder() == "bunnyrelay":
        from bunnyrelay.otlpencode.exporters import GrpcSpanExporter, HttpSpanExporter

        if protocol == "grpc":
            return GrpcSpanExporter(**options)
        return HttpSpanExporter(**options)
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[assignment]
            OTLPSpanExporter,
        )
    return OTLPSpanExporter(**options)
