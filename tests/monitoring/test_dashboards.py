"""The Grafana dashboards: fresh, well-formed for Grafana's dashboard models, and every query
one Prometheus parses (tests/e2e/test_collector_metrics.py holds their metric names against
what a real Collector exports)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard

from lab.dashboards import DASHBOARDS, OUTPUT_DIR, expected, main, queries
from tests.monitoring.conftest import promtool
from tests.monitoring.promql import expressions, metric_names

BOARDS = sorted(DASHBOARDS)


def _board(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((OUTPUT_DIR / name).read_text())
    return loaded


def test_the_committed_dashboards_are_what_the_generator_writes() -> None:
    stale = [path.name for path, body in expected().items() if path.read_text() != body]
    assert stale == [], "run `python -m lab.dashboards` and commit the result"
    assert main(["--check"]) == 0


@pytest.mark.parametrize("name", BOARDS)
def test_a_dashboard_reads_back_through_grafanas_models_unchanged(name: str) -> None:
    # The SDK's models are generated from Grafana's dashboard schema: a field they do not
    # know, or one of the wrong shape, does not come back.
    board = _board(name)
    again = json.loads(json.dumps(Dashboard.from_json(board), cls=JSONEncoder))
    assert again == board


@pytest.mark.parametrize("name", BOARDS)
def test_panels_have_their_own_ids_and_fit_the_grid(name: str) -> None:
    board = _board(name)
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    assert all(
        panel["gridPos"]["x"] >= 0 and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        for panel in board["panels"]
    )
    assert board["uid"].startswith("bunnyrelay-")
    assert queries(board), "a dashboard without a query shows nothing"


def test_every_query_and_rule_is_promql_that_prometheus_parses() -> None:
    for where, expr in expressions().items():
        assert "$" not in expr, f"{where}: a Grafana variable left unreplaced: {expr}"
        result = promtool(["--experimental", "promql", "format", expr])
        assert result.returncode == 0, f"{where}: {result.stdout}{result.stderr}"


def test_metric_names_are_read_from_selectors_not_labels_or_functions() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, rpc_method) (rate(a_bucket{job=~"x"}[5m])))'
        " / on(job) group_left sum without (le) (b_total offset 5m) > bool 0"
    )
    assert metric_names(expr) == {"a_bucket", "b_total"}
