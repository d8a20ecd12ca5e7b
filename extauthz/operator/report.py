"""``aegis report``: what the decision log says about a period, as numbers and tables.

``summarize`` is pure (entries in, ``Report`` out); ``render_terminal`` prints it with rich.
The HTML page (``html.py``) renders the same ``Report``.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from extauthz.operator.readers import clean, epoch

OUTCOMES = ("allow", "sanitize", "approval_needed", "deny", "unauthenticated", "bad_request", "error")
SHADOW = ("would_deny", "would_sanitize", "would_need_approval")
APPROVAL_DONE = {"approval.approved": "approved", "approval.denied": "denied", "approval.expired": "expired"}


@dataclass
class Report:
    """The numbers of one report."""

    total: int = 0
    first: str = ""
    last: str = ""
    outcomes: Counter[str] = field(default_factory=Counter)
    shadow: Counter[str] = field(default_factory=Counter)
    would_deny_rules: Counter[str] = field(default_factory=Counter)
    would_deny_reasons: Counter[str] = field(default_factory=Counter)
    deny_rules: Counter[str] = field(default_factory=Counter)
    deny_reasons: Counter[str] = field(default_factory=Counter)
    per_agent: dict[str, Counter[str]] = field(default_factory=dict)
    per_tool: dict[str, Counter[str]] = field(default_factory=dict)
    approvals: Counter[str] = field(default_factory=Counter)  # requested, approved, denied, expired
    approve_seconds: list[float] = field(default_factory=list)
    redactions: Counter[str] = field(default_factory=Counter)  # detector → count (Envoy access log)
    masked_in_log: int = 0  # argument values masked in the decision log itself

    @property
    def approval_rate(self) -> float | None:
        decided = self.approvals["approved"] + self.approvals["denied"] + self.approvals["expired"]
        return self.approvals["approved"] / decided if decided else None

    def approve_time(self, q: float) -> float | None:
        """Quantile ``q`` (0.5: median) of the time from request to approval, in seconds."""
        if not self.approve_seconds:
            return None
        if len(self.approve_seconds) == 1:
            return self.approve_seconds[0]
        cuts = statistics.quantiles(self.approve_seconds, n=100, method="inclusive")
        return cuts[min(98, max(0, round(q * 100) - 1))]


def summarize(
    entries: Iterable[dict[str, Any]], access: Iterable[dict[str, Any]] = (), since: float | None = None
) -> Report:
    """Aggregate decision-log entries (and optionally Envoy access-log lines for redactions)."""
    report = Report()
    requested: dict[str, float] = {}
    decided: dict[str, tuple[str, float]] = {}
    for entry in entries:
        ts = epoch(entry.get("timestamp"))
        if since is not None and (ts is None or ts < since):
            continue
        if entry.get("type") == "event":
            _event(entry, ts, requested, decided)
            continue
        _decision(report, entry)
        approval_id = entry.get("approval_id")
        if approval_id and ts is not None:
            requested.setdefault(str(approval_id), ts)
    for approval_id, (state, at) in decided.items():
        report.approvals[state] += 1
        started = requested.get(approval_id)
        if state == "approved" and started is not None and at >= started:
            report.approve_seconds.append(at - started)
    report.approvals["requested"] = len(requested)
    for line in access:
        ts = epoch(line.get("start_time"))
        if since is not None and ts is not None and ts < since:
            continue
        for part in clean(line.get("redactions")).split(","):
            detector, _, count = part.partition(":")
            if detector and count.isdigit():
                report.redactions[detector] += int(count)
    return report


def _event(entry: dict[str, Any], ts: float | None, requested: dict[str, float], decided: dict[str, Any]) -> None:
    fields = entry.get("fields") or {}
    approval_id = fields.get("approval_id")
    if not approval_id or ts is None:
        return
    kind = str(entry.get("kind", ""))
    if kind == "approval.requested":
        requested[str(approval_id)] = min(ts, requested.get(str(approval_id), ts))
    elif kind in APPROVAL_DONE and str(approval_id) not in decided:
        decided[str(approval_id)] = (APPROVAL_DONE[kind], ts)


def _decision(report: Report, entry: dict[str, Any]) -> None:
    report.total += 1
    timestamp = str(entry.get("timestamp", ""))
    report.first = min(report.first, timestamp) if report.first else timestamp
    report.last = max(report.last, timestamp)
    outcome = str(entry.get("outcome") or "error")
    report.outcomes[outcome] += 1
    report.per_agent.setdefault(str(entry.get("agent") or "(unauthenticated)"), Counter())[outcome] += 1
    report.per_tool.setdefault(str(entry.get("tool") or "(no tool)"), Counter())[outcome] += 1
    report.masked_in_log += len(entry.get("masked") or [])
    for key in SHADOW:
        if entry.get(key):
            report.shadow[key] += 1
    result = entry.get("result") or {}
    for shadow in result.get("shadow") or []:
        if shadow.get("effect") == "deny":
            report.would_deny_rules[str(shadow.get("rule"))] += 1
            report.would_deny_reasons[str(shadow.get("message"))] += 1
    if outcome == "deny":
        for reason in result.get("reasons") or []:
            report.deny_rules[str(reason.get("rule"))] += 1
            report.deny_reasons[str(reason.get("message"))] += 1


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}s" if value < 120 else f"{value / 60:.1f}m"


def _split_table(title: str, rows: dict[str, Counter[str]]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("name")
    for outcome in ("allow", "sanitize", "approval_needed", "deny", "other"):
        table.add_column(outcome, justify="right")
    for name, counts in sorted(rows.items(), key=lambda kv: -sum(kv[1].values())):
        other = sum(v for k, v in counts.items() if k not in {"allow", "sanitize", "approval_needed", "deny"})
        table.add_row(name, *(str(counts[o]) for o in ("allow", "sanitize", "approval_needed", "deny")), str(other))
    return table


def _top_table(title: str, counts: Counter[str], limit: int = 10) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("count", justify="right")
    table.add_column("value")
    for value, count in counts.most_common(limit):
        table.add_row(str(count), value)
    return table


def render_terminal(report: Report, console: Console) -> None:
    """The report as rich tables."""
    console.print(f"[bold]{report.total} decisions[/bold] from {report.first or '-'} to {report.last or '-'}")
    split = Table(title="Decisions", title_justify="left")
    split.add_column("outcome")
    split.add_column("count", justify="right")
    split.add_column("share", justify="right")
    for outcome in OUTCOMES:
        count = report.outcomes[outcome]
        share = f"{100 * count / report.total:.1f}%" if report.total else "-"
        split.add_row(outcome, str(count), share)
    for key in SHADOW:
        split.add_row(f"[magenta]shadow {key}[/magenta]", str(report.shadow[key]), "")
    console.print(split)
    console.print(_top_table("Top would-deny rules (shadow)", report.would_deny_rules))
    console.print(_top_table("Top would-deny reasons (shadow)", report.would_deny_reasons))
    console.print(_top_table("Top deny rules", report.deny_rules))
    console.print(_split_table("Per agent", report.per_agent))
    console.print(_split_table("Per tool", report.per_tool))
    rate = report.approval_rate
    approvals = report.approvals
    console.print(
        f"Approvals: {approvals['requested']} requested, {approvals['approved']} approved, "
        f"{approvals['denied']} denied, {approvals['expired']} expired; approval rate "
        f"{'-' if rate is None else f'{100 * rate:.0f}%'}; time to approve p50 {_seconds(report.approve_time(0.5))}, "
        f"p90 {_seconds(report.approve_time(0.9))}"
    )
    if report.redactions:
        console.print(_top_table("PII redactions by detector (ext_proc)", report.redactions))
    console.print(f"Argument values masked in the decision log: {report.masked_in_log}")
