"""Both charts' monitoring: Grafana's dashboards for its sidecar, the alerts as a
PrometheusRule and a ServiceMonitor for the Collector, each off by default, and the
prometheus-operator's two made only where the cluster serves its API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lab.deployfiles import CHART_MONITORING, MONITORING
from tests.deploy.tools import KUBERNETES_VERSIONS, HelmError, kubeconform, notes, template

OPERATOR_API = (
    "monitoring.coreos.com/v1/PrometheusRule",
    "monitoring.coreos.com/v1/ServiceMonitor",
)
ALL_ON = {
    "monitoring.dashboards.enabled": True,
    "monitoring.prometheusRule.enabled": True,
    "monitoring.serviceMonitor.enabled": True,
    "monitoring.serviceMonitor.selector": {"app.kubernetes.io/name": "opentelemetry-collector"},
}
CHARTS = sorted(CHART_MONITORING)
MONITORING_KINDS = {"PrometheusRule", "ServiceMonitor"}


@pytest.mark.parametrize("chart", CHARTS)
def test_nothing_of_it_is_made_by_default(chart: str) -> None:
    rendered = template(chart, api_versions=OPERATOR_API)
    assert not MONITORING_KINDS & set(rendered.kinds())
    assert not [o for o in rendered.objects if o["metadata"]["name"].endswith("-dashboards")]


@pytest.mark.parametrize("chart", CHARTS)
def test_without_the_operators_api_only_the_dashboards_are_made_and_the_notes_say_why(
    chart: str, tmp_path: Path
) -> None:
    rendered = template(chart, set_values=ALL_ON)
    assert not MONITORING_KINDS & set(rendered.kinds())
    rendered.one("ConfigMap", "-dashboards")
    told = notes(chart, set_values=ALL_ON, tmp=tmp_path)
    assert "no PrometheusRule was made" in told
    assert "no ServiceMonitor was made" in told


@pytest.mark.parametrize("chart", CHARTS)
def test_the_dashboards_configmap_carries_the_sidecars_label_and_every_dashboard(
    chart: str,
) -> None:
    configmap = template(chart, set_values=ALL_ON).one("ConfigMap", "-dashboards")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = {
        Path(name).name: json.loads((MONITORING / name).read_text())
        for name in CHART_MONITORING[chart]
        if name.endswith(".json")
    }
    assert {key: json.loads(text) for key, text in configmap["data"].items()} == shipped


@pytest.mark.parametrize("chart", CHARTS)
def test_the_prometheusrule_is_the_rules_file_verbatim(chart: str) -> None:
    rendered = template(chart, set_values=ALL_ON, api_versions=OPERATOR_API)
    rule = rendered.one("PrometheusRule")
    (rules,) = [name for name in CHART_MONITORING[chart] if name.endswith(".rules.yaml")]
    assert rule["spec"] == yaml.safe_load((MONITORING / rules).read_text())
    # Prometheus's own templates are left for Prometheus, not eaten by Helm.
    assert "{{ $labels." in rendered.text


@pytest.mark.parametrize("chart", CHARTS)
def test_the_servicemonitor_scrapes_the_collector_keeping_its_job_labels(chart: str) -> None:
    values = {**ALL_ON, "monitoring.serviceMonitor.namespaces": ["observability"]}
    monitor = template(chart, set_values=values, api_versions=OPERATOR_API).one("ServiceMonitor")
    assert (
        monitor["spec"]["selector"]["matchLabels"] == ALL_ON["monitoring.serviceMonitor.selector"]
    )
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["observability"]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint == {
        "port": "prom-metrics",
        "path": "/metrics",
        "interval": "30s",
        "honorLabels": True,
    }


@pytest.mark.parametrize("chart", CHARTS)
def test_a_servicemonitor_without_a_selector_is_refused_naming_the_value(chart: str) -> None:
    values = {**ALL_ON, "monitoring.serviceMonitor.selector": {}}
    with pytest.raises(HelmError, match=r"monitoring\.serviceMonitor\.selector"):
        template(chart, set_values=values, api_versions=OPERATOR_API)


@pytest.mark.parametrize("chart", CHARTS)
def test_the_dashboards_configmap_is_a_valid_kubernetes_object(chart: str) -> None:
    rendered = template(chart, set_values=ALL_ON)
    result = kubeconform(rendered.text, KUBERNETES_VERSIONS[-1])
    assert result.returncode == 0, result.stdout + result.stderr
