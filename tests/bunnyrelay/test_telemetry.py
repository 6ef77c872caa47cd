"""The providers follow the OTEL_* environment: the service name, and OTLP export when asked."""

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

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


def test_a_bad_otel_variable_stops_the_set_up_before_anything_is_built() -> None:
    with pytest.raises(SettingError, match="OTEL_TRACES_SAMPLER"):
        setup_telemetry("relay", install_global=False, environ={"OTEL_TRACES_SAMPLER": "sometimes"})


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


def _exemplars(environ: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> int:
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    reader = InMemoryMetricReader()
    telemetry = setup_telemetry(
        "relay", install_global=False, environ=environ, metric_readers=[reader]
    )
    try:
        histogram = telemetry.meter_provider.get_meter("t").create_histogram("t.duration")
        tracer = telemetry.tracer_provider.get_tracer("t")
        with tracer.start_as_current_span("job"):
            histogram.record(1.5)
        data = reader.get_metrics_data()
        assert data is not None
        return sum(
            len(point.exemplars)
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            for point in metric.data.data_points
        )
    finally:
        telemetry.shutdown()


def test_exemplars_are_off_unless_the_environment_asks_for_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_METRICS_EXEMPLAR_FILTER", raising=False)
    assert _exemplars({}, monkeypatch) == 0
    assert _exemplars({"OTEL_METRICS_EXEMPLAR_FILTER": "always_on"}, monkeypatch) == 1
