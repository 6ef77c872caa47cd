"""The alerts: valid for Prometheus, each one unit-tested by promtool, each with a runbook."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.monitoring.conftest import ROOT, RULE_FILES, RULE_TESTS, promtool

RUNBOOK = ROOT / "docs" / "alerts.md"
RUNBOOK_URL = "https://github.com/bunny-relay/bunny-relay/blob/main/docs/alerts.md#"


def _alerts() -> list[dict[str, Any]]:
    return [
        rule
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def _cases() -> list[dict[str, Any]]:
    return [
        case
        for path in RULE_TESTS
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test["alert_rule_test"]
    ]


def test_the_rule_files_are_valid_for_prometheus() -> None:
    result = promtool(["check", "rules", *RULE_FILES])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_FILES)


@pytest.mark.parametrize("tests", RULE_TESTS, ids=lambda path: path.name)
def test_promtool_unit_tests_of_the_alerts_pass(tests: Path) -> None:
    result = promtool(["test", "rules", tests.name], cwd=tests.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_seen_firing_by_a_unit_test() -> None:
    firing = {case["alertname"] for case in _cases() if case.get("exp_alerts")}
    assert sorted({alert["alert"] for alert in _alerts()} - firing) == []


def test_every_alert_has_a_runbook_section_that_its_runbook_url_names() -> None:
    sections = {
        heading.lower()
        for heading in re.findall(r"^## (\w+)$", RUNBOOK.read_text(), flags=re.MULTILINE)
    }
    for alert in _alerts():
        name = alert["alert"]
        assert name.lower() in sections, f"docs/alerts.md has no section '## {name}'"
        assert alert["annotations"]["runbook_url"] == RUNBOOK_URL + name.lower()
