"""The signed decision log through a real gateway: rotation, verify, report, logs tail, /readyz, /metrics."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from audit_stack import start_audited_gateway

from extauthz.cli import main

pytestmark = pytest.mark.e2e


@dataclass
class Run:
    root: Path
    public_key: Path
    statuses: list[int] = field(default_factory=list)
    ready: dict[str, Any] = field(default_factory=dict)
    metrics: str = ""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    root = tmp_path_factory.mktemp("audit")
    gw, public = start_audited_gateway(root, max_bytes=6000, checkpoint_every=7)
    result = Run(root, public)
    try:
        for amount in (10, 20, 30, 120, 900, 5, 15, 700):
            response = gw.call("POST", "payments.demo", "/v1/refunds", json={"amount": amount, "customer_id": "c-1"})
            result.statuses.append(response.status_code)
        response = gw.call("POST", "slack.demo", "/api/chat.postMessage", json={"channel": "#random", "text": "hi"})
        result.statuses.append(response.status_code)
        http = f"http://{gw.config.service.http}"
        result.ready = httpx.get(f"{http}/readyz", timeout=5).json()
        result.metrics = httpx.get(f"{http}/metrics", timeout=5).text
        gw.access_log(response.headers["x-aegis-decision-id"])
    finally:
        gw.client.close()
        gw.stack.stop()
    yield result


def _files(run: Run) -> list[Path]:
    return sorted(run.root.glob("decisions*.jsonl"))


def test_readyz_reports_the_decision_log(run: Run) -> None:
    assert run.ready["checks"]["decision_log"]["ok"] is True


def test_the_rotated_log_verifies_and_tampering_is_found(run: Run, capsys: pytest.CaptureFixture[str]) -> None:
    files = _files(run)
    assert len(files) >= 2, "max_bytes should have rotated the log"
    args = ["audit", "verify", *map(str, files), "--key", str(run.public_key)]
    assert main(args) == 0
    assert "OK:" in capsys.readouterr().out
    lines = files[0].read_text().splitlines(keepends=True)
    lines[2] = lines[2].replace('"status":200', '"status":201')
    files[0].write_text("".join(lines))
    assert main(args) == 1
    assert f"{files[0]}:3: modified" in capsys.readouterr().out


def test_report_counts_the_run(run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    html = tmp_path / "report.html"
    assert main(["report", *map(str, _files(run)), "--since", "1d", "--html", str(html)]) == 0
    out = capsys.readouterr().out
    assert "9 decisions" in out
    page = html.read_text()
    assert 'data-metric="outcome.approval_needed">1<' in page and 'data-metric="shadow.would_deny">' in page
    assert 'data-metric="would_deny_rule.refund-strict-limit">6<' in page  # amounts over 10: 20 30 120 900 15 700


def test_logs_tail_joins_the_real_logs(run: Run, capsys: pytest.CaptureFixture[str]) -> None:
    access = run.root / "gw" / "access.log"
    decisions = [arg for f in _files(run) for arg in ("--decisions", str(f))]
    assert main(["logs", "tail", "--access", str(access), *decisions, "--decision", "deny"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert len(rows) == 3  # 900, 700, #random
    assert all("support-bot" in r and "403" in r for r in rows)
    assert any("refund-over-limit" in r for r in rows) and any("slack-channel" in r for r in rows)


@pytest.mark.skipif(shutil.which("promtool") is None and not os.environ.get("CI"), reason="promtool not installed")
def test_the_whole_metrics_page_passes_promtool(run: Run) -> None:
    assert "aegis_decision_log_checkpoints_total" in run.metrics
    checked = subprocess.run(
        ["promtool", "check", "metrics"], input=run.metrics.encode(), capture_output=True, timeout=60, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_decision_lines_carry_the_chain_and_opa_fields(run: Run) -> None:
    entries = [json.loads(line) for f in _files(run) for line in f.read_text().splitlines()]
    decisions = [e for e in entries if e["type"] == "decision"]
    assert len(decisions) == 9
    assert all(e["path"] == "aegis/decision" and e["bundles"]["aegis"]["revision"] for e in decisions)
    assert [e["seq"] for e in entries] == sorted(e["seq"] for e in entries)
