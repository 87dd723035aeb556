"""The Grafana dashboard and the Prometheus alerts in contrib/: valid for promtool, tested on
synthetic series, and made only of metrics the daemon really exports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from daemon_support import DaemonProcess, daemon_table, wait_for, write_config

CONTRIB = Path(__file__).resolve().parent.parent / "contrib"
ALERTS = CONTRIB / "prometheus" / "alerts.yml"
ALERTS_TEST = CONTRIB / "prometheus" / "alerts_test.yml"
DASHBOARD = CONTRIB / "grafana" / "sinagot.json"
METRIC = re.compile(r"\bsinagot_[a-z_]+\b")
# What a family's samples are called, by its type.
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        reason = "no promtool (apt-get install prometheus)"
        if os.environ.get("SINAGOT_REQUIRE_PROMTOOL") == "1":
            pytest.fail(f"SINAGOT_REQUIRE_PROMTOOL=1 but {reason}")
        pytest.skip(reason)
    return subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=120, cwd=ALERTS.parent
    )


def _dashboard_exprs() -> list[str]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"]]
    return exprs


def test_promtool_checks_the_alert_rules_and_their_tests_pass() -> None:
    checked = _promtool("check", "rules", str(ALERTS))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 6 rules found" in checked.stdout
    tested = _promtool("test", "rules", str(ALERTS_TEST))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_a_broken_alert_fails_its_promtool_test(tmp_path: Path) -> None:
    # The tests can fail: an alert made to fire under 4% free instead of 10% breaks one.
    broken = tmp_path / "alerts.yml"
    broken.write_text(ALERTS.read_text().replace("< 0.1\n", "< 0.04\n"))
    suite = tmp_path / "alerts_test.yml"
    suite.write_text(ALERTS_TEST.read_text())
    tested = _promtool("test", "rules", str(suite))
    assert tested.returncode != 0
    assert "SinagotCacheNearFull" in tested.stdout + tested.stderr


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and dashboard["uid"] == "sinagot"
    titles = {panel["title"] for panel in dashboard["panels"]}
    for wanted in (
        "Jobs by state",
        "Poll age",
        "Failure rate",
        "Transfer rates",
        "Cache hit ratio",
    ):
        assert wanted in titles
    # Grafana's variables as Prometheus sees them once substituted, each query as a rule.
    rules = []
    for n, expr in enumerate(_dashboard_exprs()):
        if expr.startswith("label_values("):
            continue
        promql = (
            expr.replace("$__rate_interval", "5m")
            .replace("$__range", "6h")
            .replace("$instance", ".*")
            .replace("$dataset", ".*")
        )
        rules.append({"record": f"sinagot:dashboard_query_{n}", "expr": promql})
    rule_file = tmp_path / "dashboard.rules.json"  # JSON is YAML
    rule_file.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = _promtool("check", "rules", str(rule_file))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def _exported_samples(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split()
            names.update(family + suffix for suffix in SUFFIXES.get(kind, ("",)))
            names.add(family)
    return names


def test_the_dashboard_and_alerts_use_only_metrics_the_daemon_exports(tmp_path: Path) -> None:
    config = write_config(tmp_path, "lab", daemon_table(tmp_path, metrics_address="0"))
    daemon = DaemonProcess(tmp_path, [config]).start()
    try:
        url = wait_for(lambda: daemon.call("status")["metrics_url"], 10, "the metrics URL")
        with urllib.request.urlopen(url, timeout=10) as response:
            exported = _exported_samples(response.read().decode())
    finally:
        daemon.stop()
    used = set(METRIC.findall(ALERTS.read_text()))
    for expr in _dashboard_exprs():
        used.update(METRIC.findall(expr))
    assert {"sinagot_dataset_poll_age_seconds", "sinagot_jobs"} <= used
    assert used - exported == set(), sorted(exported)
