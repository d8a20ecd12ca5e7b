"""deploy/prometheus/alerts.yml and deploy/grafana/aegis-dashboard.json agree with the metrics we export."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from extauthz.telemetry import Metrics

REPO = Path(__file__).resolve().parents[3]
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "aegis-dashboard.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None and not os.environ.get("CI"), reason="promtool not installed (apt-get install prometheus)"
)


def _promtool(*args: str, cwd: Path | None = None, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    assert PROMTOOL is not None, "promtool is required in CI (scripts/install-test-deps.sh installs it)"
    return subprocess.run([PROMTOOL, *args], cwd=cwd, input=stdin, capture_output=True, timeout=60, check=False)


def _exported_names() -> set[str]:
    metrics = Metrics()
    names = set()
    for family in metrics.registry.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    names |= {f"{family.name}_total" for family in metrics.registry.collect() if family.type == "counter"}
    names |= {f"{family.name}_bucket" for family in metrics.registry.collect() if family.type == "histogram"}
    return names


def _referenced(expr: str) -> set[str]:
    return {m for m in re.findall(r"\b((?:aegis|envoy)_[a-z_]+)\b", expr)}


@needs_promtool
def test_alert_rules_are_valid_and_unit_tested() -> None:
    checked = _promtool("check", "rules", str(ALERTS))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = _promtool("test", "rules", "alerts_test.yml", cwd=ALERTS.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr


@needs_promtool
def test_prometheus_config_loads_the_alerts(tmp_path: Path) -> None:
    shutil.copy(REPO / "deploy" / "prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copy(ALERTS, tmp_path / "alerts.yml")
    checked = _promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr


@needs_promtool
def test_metrics_exposition_passes_promtool() -> None:
    metrics = Metrics()
    metrics.decisions.labels("allow", "payments.refund", "refund-auto-approved").inc()
    metrics.decision_seconds.observe(0.0004)
    metrics.decision_log_entries.labels("decision").inc()
    checked = _promtool("check", "metrics", stdin=generate_latest(metrics.registry))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_alerts_and_dashboard_use_only_exported_aegis_metrics() -> None:
    exported = _exported_names()
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += re.findall(r"expr: (.+?)\n\s+(?:for|labels):", ALERTS.read_text(), flags=re.S)
    referenced = set().union(*(_referenced(e) for e in exprs))
    aegis = {name for name in referenced if name.startswith("aegis_")}
    assert aegis - exported == set()
    assert {"aegis_decisions_total", "aegis_decision_duration_seconds_bucket", "aegis_redactions_total",
            "aegis_policy_load_failures_total", "aegis_approvals_total", "aegis_decision_log_write_errors_total"} <= aegis  # fmt: skip
    assert {"envoy_http_downstream_rq_xx"} <= referenced


def test_dashboard_is_importable_json() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] == "Aegis"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)) >= 6
