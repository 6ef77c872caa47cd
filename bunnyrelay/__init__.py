"""What bunny and relay share: the generated contract, telemetry bootstrap and config parsing.

bunny and relay never import each other; everything both need lives here, one idea a module:

- ``v1/``: the generated contract (``bunnyrelay.v1.JobService``);
- ``settings``: flags backed by ``RELAY_``/``BUNNY_`` environment variables, value parsers;
- ``otelenv``: the standard ``OTEL_*`` variables, checked at start;
- ``telemetry``: tracer and meter providers built from them;
- ``otlpencode/``: the fast OTLP span encoder, plugged into the SDK's exporters;
- ``tally``: a per-job counter the SDK reads when it collects;
- ``semconv``: span, metric and attribute names;
- ``logs``: one named logger per process, trace ids on every line;
- ``healthcheck``: a ``grpc.health.v1`` check as a command, for containers.
"""
