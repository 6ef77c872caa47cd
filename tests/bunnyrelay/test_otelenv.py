"""The OTEL_* variables bunny and relay depend on are checked at start: a bad one stops the
process with a message naming it, and what the specification allows still starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from bunnyrelay.otelenv import (
    OtlpDestination,
    check_batch_span_processor,
    check_propagators,
    check_sampler,
    exemplar_filter,
    metrics_temporality,
    otlp_destination,
)
from bunnyrelay.settings import SettingError
from lab.otlpsink import OtlpSink
from lab.processes import relay_process, run_module

GOOD_ENDPOINTS = [
    ("grpc", "http://otel-collector:4317"),
    ("grpc", "https://otel-collector.observability.svc.cluster.local"),
    ("grpc", "http://[::1]:4317"),
    ("grpc", "otel-collector:4317"),
    ("grpc", "127.0.0.1:4317"),
    ("grpc", "[fd00::7]:4317"),
    ("grpc", "dns:///otel-collector:4317"),
    ("grpc", "unix:///var/run/otel.sock"),
    ("http/protobuf", "http://otel-collector:4318"),
    ("http/protobuf", "https://ingest.example.com/otlp/"),
    ("http/protobuf", "http://127.0.0.1:4318/v1/traces"),
]
BAD_ENDPOINTS = [
    ("grpc", "::garbage::", "nor a gRPC HOST:PORT"),
    ("http/protobuf", "::garbage::", "needs an http:// or https:// URL"),
    ("http/protobuf", "otel-collector:4318", "needs an http:// or https:// URL"),
    ("grpc", "http://", "no host"),
    ("grpc", "http://otel-collector:70000", "port"),
    ("http/protobuf", "http://otel-collector:http", "port"),
    ("grpc", "otel-collector", "nor a gRPC HOST:PORT"),
    ("grpc", "otel-collector:0", "port"),
    ("http/protobuf", "http://otel collector:4318", "white space"),
    ("http/protobuf", "http://otel!collector:4318", "not a host name"),
    ("grpc", "dns:///", "empty"),
]


@pytest.mark.parametrize(("protocol", "endpoint"), GOOD_ENDPOINTS)
def test_endpoints_the_specification_allows_are_taken_as_given(
    protocol: str, endpoint: str
) -> None:
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol}
    assert otlp_destination("TRACES", environ) == OtlpDestination(
        protocol, endpoint, "OTEL_EXPORTER_OTLP_ENDPOINT"
    )


@pytest.mark.parametrize(("protocol", "endpoint", "problem"), BAD_ENDPOINTS)
def test_a_malformed_endpoint_is_rejected_saying_what_is_wrong(
    protocol: str, endpoint: str, problem: str
) -> None:
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol}
    with pytest.raises(SettingError, match="OTEL_EXPORTER_OTLP_ENDPOINT") as raised:
        otlp_destination("METRICS", environ)
    assert problem in str(raised.value)


def test_the_per_signal_endpoint_wins_and_is_the_one_named() -> None:
    environ = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "::garbage::",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://otel-collector:4318/v1/traces",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "no-scheme:4318",
    }
    traces = otlp_destination("TRACES", environ)
    assert traces is not None
    assert traces.variable == "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    with pytest.raises(SettingError, match="OTEL_EXPORTER_OTLP_METRICS_ENDPOINT='no-scheme:4318'"):
        otlp_destination("METRICS", environ)


def test_a_signal_exported_nowhere_has_its_endpoint_left_alone() -> None:
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "::garbage::", "OTEL_TRACES_EXPORTER": "none"}
    assert otlp_destination("TRACES", environ) is None
    assert otlp_destination("METRICS", {}) is None


def test_the_signal_protocol_is_named_when_it_is_wrong() -> None:
    environ = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector:4318",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json",
    }
    with pytest.raises(SettingError, match="OTEL_EXPORTER_OTLP_TRACES_PROTOCOL='http/json'"):
        otlp_destination("TRACES", environ)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER"),
        (
            {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.5"},
            "between 0 and 1",
        ),
        (
            {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "x"},
            "not a number",
        ),
    ],
)
def test_a_sampler_typo_is_an_error_not_a_silent_fallback(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingError, match=message):
        check_sampler(environ)


def test_the_samplers_the_sdk_knows_are_accepted() -> None:
    check_sampler(
        {"OTEL_TRACES_SAMPLER": "ParentBased_TraceIdRatio", "OTEL_TRACES_SAMPLER_ARG": "0.25"}
    )
    check_sampler({"OTEL_TRACES_SAMPLER": "always_off", "OTEL_TRACES_SAMPLER_ARG": "ignored"})
    check_sampler({})


def test_compression_is_what_the_specification_names_in_any_case() -> None:
    base = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector:4317"}
    for value, expected in (("gzip", "gzip"), (" GZIP ", "gzip"), ("none", "none")):
        destination = otlp_destination("TRACES", {**base, "OTEL_EXPORTER_OTLP_COMPRESSION": value})
        assert destination is not None
        assert destination.compression == expected
    unset = otlp_destination("TRACES", base)
    assert unset is not None
    assert unset.compression is None
    with pytest.raises(SettingError, match="OTEL_EXPORTER_OTLP_METRICS_COMPRESSION='zstd'"):
        otlp_destination("METRICS", {**base, "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION": "zstd"})


@pytest.mark.parametrize("value", ["abc", "0", "-1", "inf"])
def test_an_export_timeout_must_be_a_number_above_zero(value: str) -> None:
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_TIMEOUT": value}
    with pytest.raises(SettingError, match=f"OTEL_EXPORTER_OTLP_TIMEOUT={value!r}"):
        otlp_destination("TRACES", environ)


@pytest.mark.parametrize(
    "value",
    ["authorization=Bearer%20abc", "api-key=k1,x-tenant=blue", " a = b , c=d ", "empty="],
)
def test_export_headers_as_the_specification_writes_them_are_accepted(value: str) -> None:
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_HEADERS": value}
    assert otlp_destination("TRACES", environ) is not None


@pytest.mark.parametrize(
    ("value", "pair"),
    [
        ("Authorization: Bearer abc", "'Authorization: Bearer abc'"),
        ("api-key=k1,,x=y", "''"),
        ("bad name=1", "'bad name=1'"),
    ],
)
def test_malformed_export_headers_are_named_not_skipped(value: str, pair: str) -> None:
    environ = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS": value,
    }
    with pytest.raises(SettingError, match="OTEL_EXPORTER_OTLP_TRACES_HEADERS: ") as refused:
        otlp_destination("TRACES", environ)
    assert "name=value pairs separated by commas" in str(refused.value)
    assert pair in str(refused.value)


def test_tls_files_must_exist_and_be_files(tmp_path: Path) -> None:
    pem = tmp_path / "ca.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n")
    base = {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://c:4318"}
    assert otlp_destination("TRACES", {**base, "OTEL_EXPORTER_OTLP_CERTIFICATE": str(pem)})
    missing = str(tmp_path / "nope.pem")
    with pytest.raises(SettingError, match=r"OTEL_EXPORTER_OTLP_CLIENT_KEY=.*: no such file"):
        otlp_destination("METRICS", {**base, "OTEL_EXPORTER_OTLP_CLIENT_KEY": missing})
    with pytest.raises(SettingError, match="is a directory"):
        otlp_destination(
            "TRACES", {**base, "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE": str(tmp_path)}
        )


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"OTEL_BSP_SCHEDULE_DELAY": "5s"}, "OTEL_BSP_SCHEDULE_DELAY='5s'"),
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "0"}, "OTEL_BSP_MAX_QUEUE_SIZE='0'"),
        ({"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "4096"}, "not be more than OTEL_BSP_MAX_QUEUE_SIZE"),
    ],
)
def test_batch_span_processor_settings_are_whole_numbers_that_fit(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingError, match=message):
        check_batch_span_processor(environ)


def test_the_exemplar_filter_is_one_the_sdk_knows() -> None:
    assert exemplar_filter({}) is None
    assert exemplar_filter({"OTEL_METRICS_EXEMPLAR_FILTER": "Always_On"}) == "always_on"
    with pytest.raises(SettingError, match="OTEL_METRICS_EXEMPLAR_FILTER='sometimes'"):
        exemplar_filter({"OTEL_METRICS_EXEMPLAR_FILTER": "sometimes"})


def test_the_metrics_temporality_is_one_the_sdk_knows() -> None:
    """The SDK's exporter takes a misspelt preference for cumulative, with a warning only."""
    variable = "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"
    assert metrics_temporality({}) is None
    assert metrics_temporality({variable: " Delta "}) == "delta"
    assert metrics_temporality({variable: "LOWMEMORY"}) == "lowmemory"
    with pytest.raises(SettingError, match=f"{variable}='deltas'.*cumulative, delta, lowmemory"):
        metrics_temporality({variable: "deltas"})


@pytest.mark.parametrize(
    "value", ["tracecontext,baggage", "tracecontext", " baggage , tracecontext ", "none", "NONE"]
)
def test_installed_propagators_and_none_are_accepted(value: str) -> None:
    check_propagators({"OTEL_PROPAGATORS": value})
    check_propagators({})


@pytest.mark.parametrize(
    ("value", "named"),
    [("nope", "'nope'"), ("tracecontext,b3", "'b3'"), ("tracecontext,", "''"), ("W3C", "'W3C'")],
)
def test_a_propagator_that_is_not_installed_is_named_with_those_that_are(
    value: str, named: str
) -> None:
    with pytest.raises(SettingError) as refused:
        check_propagators({"OTEL_PROPAGATORS": value})
    assert f"OTEL_PROPAGATORS={value!r}: {named} is not an installed propagator" in str(
        refused.value
    )
    assert "baggage, tracecontext, or none" in str(refused.value)


# The real commands, as a user starts them. Each must stop before it serves or sends anything.
GRPC_EXPORT = {
    "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
}
COMMANDS = {
    "relay serve": ("relay", "serve", "--listen", "127.0.0.1:0", "--store", "memory"),
    "bunny submit": ("bunny", "submit", "--target", "127.0.0.1:1", "--timeout", "5"),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "::garbage::"}, "OTEL_EXPORTER_OTLP_ENDPOINT="),
        (
            {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "::garbage::"},
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=",
        ),
        (
            {"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "::garbage::"},
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT=",
        ),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_COMPRESSION": "zstd",
            },
            "OTEL_EXPORTER_OTLP_COMPRESSION=",
        ),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_TIMEOUT": "10s",
            },
            "OTEL_EXPORTER_OTLP_TIMEOUT=",
        ),
        ({"OTEL_METRICS_EXEMPLAR_FILTER": "sometimes"}, "OTEL_METRICS_EXEMPLAR_FILTER="),
        (
            {**GRPC_EXPORT, "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "deltas"},
            "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=",
        ),
        (
            {**GRPC_EXPORT, "OTEL_EXPORTER_OTLP_HEADERS": "Authorization: x"},
            "OTEL_EXPORTER_OTLP_HEADERS: ",
        ),
        (
            {**GRPC_EXPORT, "OTEL_EXPORTER_OTLP_CERTIFICATE": "/nonexistent/ca.pem"},
            "OTEL_EXPORTER_OTLP_CERTIFICATE=",
        ),
        # OpenTelemetry's API raises on this one as it is imported.
        ({"OTEL_PROPAGATORS": "nope"}, "OTEL_PROPAGATORS="),
    ],
    ids=[
        "endpoint",
        "traces-endpoint",
        "metrics-endpoint",
        "compression",
        "timeout",
        "exemplars",
        "temporality",
        "headers",
        "certificate",
        "propagators",
    ],
)
async def test_the_commands_refuse_a_bad_otel_variable_at_start(
    command: str, environ: dict[str, str], named: str
) -> None:
    code, out, err = await run_module(*COMMANDS[command], env=environ, timeout=30)
    assert code == 2, err
    assert f"{COMMANDS[command][0]}: error: {named}" in err
    assert "Traceback" not in err
    assert "listening" not in out


async def test_relay_serves_with_the_compression_the_specification_names_none(
    sink: OtlpSink,
) -> None:
    """The SDK's own gRPC exporter fails to start on OTEL_EXPORTER_OTLP_COMPRESSION=none."""
    none = {"OTEL_EXPORTER_OTLP_COMPRESSION": "none"}
    relay_env = {**sink.env("relay", "grpc"), **none}
    async with relay_process("127.0.0.1:0", args=["--store", "memory"], env=relay_env) as relay:
        code, _, err = await run_module(
            "bunny",
            "submit",
            "--target",
            f"127.0.0.1:{relay.port}",
            env={**sink.env("bunny", "grpc"), **none},
            timeout=60,
        )
        assert code == 0, err
        await sink.wait_for(lambda spans: {"relay", "bunny"} <= {s.service for s in spans})
