"""``aegis report`` (terminal and HTML rendered in headless Chromium) and ``aegis logs tail``."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from extauthz.cli import main
from extauthz.operator.html import render_html
from extauthz.operator.report import summarize
from extauthz.operator.tail import Filters, joined_rows

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _decision(
    n: int, outcome: str, *, agent: str = "bot-a", tool: str = "payments.refund", **kw: Any
) -> dict[str, Any]:
    reasons = [{"rule": kw.pop("rule", "r"), "message": kw.pop("message", "m")}] if outcome == "deny" else []
    shadow = (
        [{"rule": "strict", "effect": "deny", "message": "would deny <script>x</script>"}]
        if kw.get("would_deny")
        else []
    )
    return {
        "type": "decision",
        "decision_id": f"id{n}",
        "timestamp": f"2025-01-0{1 + n % 5}T10:00:{n % 60:02d}.000000Z",
        "agent": agent,
        "tool": tool,
        "outcome": outcome,
        "status": {"allow": 200, "deny": 403, "approval_needed": 202}.get(outcome, 200),
        "rule": reasons[0]["rule"] if reasons else "",
        "reason": reasons[0]["message"] if reasons else "",
        "result": {"effect": outcome, "reasons": reasons, "shadow": shadow},
        "masked": ["/input/tool/args/email"] if n % 2 else [],
        "input": {"request": {"method": "POST", "host": "payments.demo", "path": "/v1/refunds"}},
        **kw,
    }


def _event(kind: str, approval_id: str, at: str) -> dict[str, Any]:
    return {"type": "event", "kind": kind, "timestamp": at, "fields": {"approval_id": approval_id}}


ENTRIES = [
    *[_decision(n, "allow") for n in range(6)],
    *[_decision(10 + n, "allow", would_deny=True) for n in range(3)],
    _decision(20, "deny", rule="refund-over-limit", message="refund of 900 exceeds 500"),
    _decision(21, "deny", rule="refund-over-limit", message="refund of 900 exceeds 500", agent="bot-b"),
    _decision(22, "sanitize", tool="crm.get_record"),
    _decision(23, "approval_needed", approval_id="apr_1"),
    _decision(24, "approval_needed", approval_id="apr_2"),
    _event("approval.requested", "apr_1", "2025-01-01T10:00:00Z"),
    _event("approval.approved", "apr_1", "2025-01-01T10:02:00Z"),
    _event("approval.requested", "apr_2", "2025-01-01T11:00:00Z"),
    _event("approval.denied", "apr_2", "2025-01-01T11:00:30Z"),
]


@pytest.fixture
def log_file(tmp_path: Path) -> Path:
    path = tmp_path / "decisions.jsonl"
    lines = [json.dumps({"type": "header", "seq": 0})] + [json.dumps(e) for e in ENTRIES] + ["not json"]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_summary_numbers() -> None:
    report = summarize(ENTRIES)
    assert report.total == 14
    assert report.outcomes == {"allow": 9, "deny": 2, "sanitize": 1, "approval_needed": 2}
    assert report.shadow["would_deny"] == 3
    assert report.would_deny_rules == {"strict": 3}
    assert report.deny_rules == {"refund-over-limit": 2}
    assert report.per_agent["bot-b"] == {"deny": 1}
    assert report.per_tool["crm.get_record"] == {"sanitize": 1}
    assert (report.approvals["requested"], report.approvals["approved"], report.approvals["denied"]) == (2, 1, 1)
    assert report.approval_rate == 0.5 and report.approve_time(0.5) == 120
    assert report.masked_in_log == 6


def test_since_filters_by_timestamp() -> None:
    from extauthz.operator.readers import epoch

    since = epoch("2025-01-05T00:00:00Z")
    assert summarize(ENTRIES, since=since).total == 2  # ids 4 and 24 are on 2025-01-05


def test_redaction_counts_from_the_access_log() -> None:
    access = [{"redactions": "EMAIL:2,SSN:1"}, {"redactions": None}, {"redactions": "EMAIL:1"}]
    assert summarize([], access).redactions == {"EMAIL": 3, "SSN": 1}


def test_terminal_report(log_file: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["report", str(log_file), "--html", str(tmp_path / "r.html")]) == 0
    out = capsys.readouterr().out
    assert "14 decisions" in out and "refund-over-limit" in out and "approval rate 50%" in out
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")


def test_html_is_self_contained_and_escaped() -> None:
    page = render_html(summarize(ENTRIES))
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page)
    assert page.count("<svg") >= 3


def _dump_dom(page: Path, tmp_path: Path) -> str:
    assert CHROMIUM is not None
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}", "--dump-dom", page.as_uri(),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"), reason="chromium not installed (apt-get install chromium)"
)
def test_html_report_renders_in_chromium_with_the_numbers(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(render_html(summarize(ENTRIES)), encoding="utf-8")
    dom = _dump_dom(page, tmp_path)
    shown = dict(re.findall(r'data-metric="([^"]+)">([^<]*)<', dom))
    assert shown["total"] == "14"
    assert (shown["outcome.allow"], shown["outcome.deny"], shown["outcome.approval_needed"]) == ("9", "2", "2")
    assert shown["outcome.sanitize"] == "1"
    assert shown["shadow.would_deny"] == "3"
    assert shown["would_deny_rule.strict"] == "3"
    assert shown["deny_rule.refund-over-limit"] == "2"
    assert shown["agent.bot-b.deny"] == "1" and shown["tool.crm.get_record.sanitize"] == "1"
    assert (shown["approvals.rate"], shown["approvals.p50_s"]) == ("50%", "120")


def test_logs_tail_joins_access_and_decision_logs(
    log_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    access = tmp_path / "access.log"
    lines = [
        {"decision_id": "id20", "response_code": 403, "method": "POST", "authority": "payments.demo", "path": "/v1/refunds",
         "duration_ms": 2, "start_time": "2025-01-01T10:00:20.000Z", "decision": "deny", "redactions": None},
        {"decision_id": "id22", "response_code": 200, "duration_ms": 5, "redactions": "SSN:1", "decision": "sanitize"},
        {"decision_id": "unknown", "response_code": 404, "decision": "-", "agent_id": "-"},
    ]  # fmt: skip
    access.write_text("".join(json.dumps(line) + "\n" for line in lines))
    rows = list(joined_rows(access, [log_file]))
    assert len(rows) == 3 + len([e for e in ENTRIES if e["type"] == "decision"]) - 2
    deny = rows[0]
    assert (deny["agent"], deny["decision"], deny["status"], deny["rule"]) == (
        "bot-a",
        "deny",
        "403",
        "refund-over-limit",
    )
    assert deny["reason"] == "refund of 900 exceeds 500" and deny["ms"] == "2"
    assert rows[1]["redactions"] == "SSN:1" and rows[1]["tool"] == "crm.get_record"
    assert Filters(decision="deny").accept(deny) and not Filters(agent="bot-b").accept(deny)
    assert main(["logs", "tail", "--access", str(access), "--decisions", str(log_file), "--decision", "deny"]) == 0
    out = capsys.readouterr().out
    assert "refund-over-limit" in out and "sanitize" not in out.split("\n", 1)[1]
