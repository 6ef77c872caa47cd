"""Reading the PromQL the dashboards and the alerts hold: every expression, and the metric
names each one reads (so that a test can hold them against what a Collector exports)."""

from __future__ import annotations

import json
import re

import yaml

from lab.dashboards import OUTPUT_DIR, queries
from tests.monitoring.conftest import RULE_FILES

# What Grafana replaces before it sends a query; promtool gets a value of the same shape.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__range": "1h",
    "${datasource}": "prometheus",
    "$job": "bunny",
    "$relay": "relay",
}
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
             "unless", "offset", "inf", "nan"}  # fmt: skip


def expressions() -> dict[str, str]:
    """``{where: expression}`` for every dashboard query and every rule, Grafana's variables
    given values."""
    found: dict[str, str] = {}
    for path in sorted(OUTPUT_DIR.glob("*.json")):
        for index, expr in enumerate(queries(json.loads(path.read_text()))):
            found[f"{path.name} query {index + 1}"] = expr
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                found[f"{path.name} {rule.get('alert') or rule.get('record')}"] = rule["expr"]
    for where, expr in found.items():
        # A variable's label_values(METRIC, LABEL) asks Prometheus for what this query groups.
        expr = re.sub(r"^label_values\((\w+),\s*(\w+)\)$", r"group by (\2) (\1)", expr)
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        found[where] = expr
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects: what is left once strings, label matchers, ranges,
    grouping clauses and function names are taken out."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    bare = re.sub(r"\{[^}]*\}", " ", bare)
    bare = re.sub(r"\[[^\]]*\]", " ", bare)
    bare = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare)
    names = re.findall(r"(?<![\w.])([A-Za-z_:][\w:]*)\b(?!\s*\()", bare)
    return {name for name in names if name.lower() not in _KEYWORDS}


def every_metric_name() -> dict[str, set[str]]:
    """``{metric name: where it is read}`` over the dashboards and the alerts."""
    found: dict[str, set[str]] = {}
    for where, expr in expressions().items():
        for name in metric_names(expr):
            found.setdefault(name, set()).add(where)
    return found
