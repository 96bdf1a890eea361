"""The alert rules load in Prometheus and pass their promtool unit tests (each alert fires on its trouble only)."""

from __future__ import annotations

import subprocess

import yaml

from consumer.tools.paths import REPO_ROOT
from tests.support.prometheus import defined_metric_names, metric_names, tool

ALERTS = REPO_ROOT / "alerts"
RULES = ALERTS / "ride-consumer.rules.yml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("promtool"), *args], cwd=ALERTS, capture_output=True, text=True, timeout=120)


def test_the_rules_are_valid_prometheus_rules():
    result = promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 6 rules found" in result.stdout


def test_each_alert_fires_on_its_trouble_and_stays_quiet_otherwise():
    result = promtool("test", "rules", "ride-consumer.tests.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rules_read_only_metrics_the_consumer_defines():
    defined = defined_metric_names()
    for rule in yaml.safe_load(RULES.read_text())["groups"][0]["rules"]:
        assert metric_names(rule["expr"]) <= defined, (rule["alert"], metric_names(rule["expr"]) - defined)
