"""The report as one self-contained HTML page: inline CSS and SVG charts, no external assets.

Every number carries ``data-metric="<section>.<name>"`` so tests (and scrapers) can read
the page's DOM.  All text from the log is HTML-escaped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from html import escape

from extauthz.operator.report import OUTCOMES, SHADOW, Report

COLOURS = {
    "allow": "#2e7d32",
    "sanitize": "#0277bd",
    "approval_needed": "#f9a825",
    "deny": "#c62828",
    "unauthenticated": "#6a1b9a",
    "bad_request": "#8d6e63",
    "error": "#424242",
}
_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:1100px}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0}td,th{padding:.25rem .6rem;border-bottom:1px solid #eee;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}.muted{color:#777}
svg text{font-size:12px;font-family:system-ui,sans-serif}
"""


def _num(metric: str, value: int | str) -> str:
    return f'<span data-metric="{escape(metric)}">{escape(str(value))}</span>'


def bar_chart(rows: Sequence[tuple[str, int, str]], metric_prefix: str, width: int = 640) -> str:
    """A horizontal bar chart as inline SVG: (label, value, colour) rows."""
    if not rows:
        return '<p class="muted">none</p>'
    top = max(value for _, value, _ in rows) or 1
    label_w, bar_h, gap = 220, 18, 6
    height = len(rows) * (bar_h + gap)
    parts = [f'<svg role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}">']
    for i, (label, value, colour) in enumerate(rows):
        y = i * (bar_h + gap)
        w = max(1, round((width - label_w - 60) * value / top)) if value else 0
        parts.append(f'<text x="0" y="{y + 13}">{escape(label[:34])}</text>')
        parts.append(f'<rect x="{label_w}" y="{y}" width="{w}" height="{bar_h}" fill="{colour}"/>')
        parts.append(
            f'<text x="{label_w + w + 6}" y="{y + 13}" data-metric="{escape(metric_prefix)}.{escape(label)}">'
            f"{value}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _top(title: str, counts: Counter[str], metric: str, colour: str) -> str:
    rows = [(value, count, colour) for value, count in counts.most_common(10)]
    return f"<h2>{escape(title)}</h2>" + bar_chart(rows, metric)


def _split(title: str, rows: dict[str, Counter[str]], metric: str) -> str:
    head = "".join(f"<th>{o}</th>" for o in ("allow", "sanitize", "approval_needed", "deny", "other"))
    body = []
    for name, counts in sorted(rows.items(), key=lambda kv: -sum(kv[1].values())):
        other = sum(v for k, v in counts.items() if k not in {"allow", "sanitize", "approval_needed", "deny"})
        cells = [counts[o] for o in ("allow", "sanitize", "approval_needed", "deny")] + [other]
        columns = ("allow", "sanitize", "approval_needed", "deny", "other")
        tds = "".join(
            f'<td class="n">{_num(f"{metric}.{name}.{o}", c)}</td>' for o, c in zip(columns, cells, strict=True)
        )
        body.append(f"<tr><td>{escape(name)}</td>{tds}</tr>")
    return f"<h2>{escape(title)}</h2><table><tr><th>name</th>{head}</tr>{''.join(body)}</table>"


def render_html(report: Report, title: str = "Aegis decision report") -> str:
    """The whole page."""
    outcome_rows = [(o, report.outcomes[o], COLOURS[o]) for o in OUTCOMES if report.outcomes[o] or o in COLOURS]
    shadow_rows = [(key, report.shadow[key], "#ad1457") for key in SHADOW]
    rate = report.approval_rate
    p50, p90 = report.approve_time(0.5), report.approve_time(0.9)
    approvals = report.approvals
    approvals_html = (
        "<table>"
        + "".join(
            f'<tr><td>{k}</td><td class="n">{_num(f"approvals.{k}", approvals[k])}</td></tr>'
            for k in ("requested", "approved", "denied", "expired")
        )
        + f'<tr><td>approval rate</td><td class="n">'
        f"{_num('approvals.rate', '-' if rate is None else f'{100 * rate:.0f}%')}</td></tr>"
        f'<tr><td>time to approve p50</td><td class="n">{_num("approvals.p50_s", "-" if p50 is None else round(p50))}'
        f" s</td></tr>"
        f'<tr><td>time to approve p90</td><td class="n">{_num("approvals.p90_s", "-" if p90 is None else round(p90))}'
        f" s</td></tr></table>"
    )
    sections = [
        f"<h1>{escape(title)}</h1>",
        f"<p>{_num('total', report.total)} decisions from {escape(report.first or '-')} "
        f"to {escape(report.last or '-')}.</p>",
        "<h2>Decisions</h2>",
        bar_chart(outcome_rows, "outcome"),
        "<h2>Shadow mode (would have changed the answer)</h2>",
        bar_chart(shadow_rows, "shadow"),
        _top("Top would-deny rules", report.would_deny_rules, "would_deny_rule", "#ad1457"),
        _top("Top would-deny reasons", report.would_deny_reasons, "would_deny_reason", "#ad1457"),
        _top("Top deny rules", report.deny_rules, "deny_rule", COLOURS["deny"]),
        _split("Per agent", report.per_agent, "agent"),
        _split("Per tool", report.per_tool, "tool"),
        "<h2>Approvals</h2>",
        approvals_html,
        _top("PII redactions by detector (ext_proc)", report.redactions, "redactions", "#0277bd"),
        f'<p class="muted">Argument values masked in the decision log: {_num("masked", report.masked_in_log)}</p>',
    ]
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>" + "\n".join(sections) + "</body></html>"
    )
