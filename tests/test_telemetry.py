"""The OTEL_* environment is honoured, and a typo in it is an error, not a silent fallback."""

import pytest

from bunnyrelay.settings import SettingError
from bunnyrelay.telemetry import setup_telemetry


def _resource_attrs(environ: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    telemetry = setup_telemetry("relay", install_global=False, environ=environ)
    try:
        return dict(telemetry.tracer_provider.resource.attributes)
    finally:
        telemetry.shutdown()


def test_default_service_name_applies_only_when_env_sets_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    assert _resource_attrs({}, monkeypatch)["service.name"] == "relay"
    attrs = _resource_attrs(
        {"OTEL_SERVICE_NAME": "relay-eu", "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=dev"},
        monkeypatch,
    )
    assert attrs["service.name"] == "relay-eu"
    assert attrs["deployment.environment"] == "dev"


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
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
            },
            "grpc or http/protobuf",
        ),
    ],
)
def test_bad_otel_settings_are_rejected_with_the_variable_named(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingError, match=message):
        setup_telemetry("relay", install_global=False, environ=environ)


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_otlp_export_turns_on_with_an_endpoint(protocol: str) -> None:
    environ = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
    }
    telemetry = setup_telemetry("relay", install_global=False, environ=environ)
    try:
        assert telemetry.exporting
    finally:
        telemetry.shutdown()
    quiet = setup_telemetry("relay", install_global=False, environ={})
    assert not quiet.exporting
    quiet.shutdown()
