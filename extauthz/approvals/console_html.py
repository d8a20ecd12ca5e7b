"""HTML of the approval console: small server-rendered pages, every value escaped.

No JavaScript: plain forms, so the CSP can forbid scripts entirely.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from html import escape

from extauthz.approvals.service import iso
from extauthz.store import PendingApproval

CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;max-width:60rem;color:#1b1f24}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:.4rem;text-align:left}
pre{background:#f5f5f5;padding:.6rem;white-space:pre-wrap}.state{font-weight:bold}
.notice{background:#fff7d6;padding:.6rem}.error{background:#fde2e1;padding:.6rem}
button{padding:.4rem 1rem;margin-right:.5rem}textarea{width:100%;height:4rem}
"""


def page(title: str, body: str, *, user: str | None = None, csrf: str = "") -> str:
    """The common layout (with a logout form when signed in)."""
    who = ""
    if user:
        who = (
            f'<form method="post" action="/console/logout">signed in as <b id="user">{escape(user)}</b> '
            f'<input type="hidden" name="csrf" value="{escape(csrf)}"><button type="submit">Sign out</button></form>'
        )
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)} · Aegis</title>'
        f"<style>{_STYLE}</style></head><body><header><h1>Aegis approvals</h1>{who}</header>"
        f"<main><h2>{escape(title)}</h2>{body}</main></body></html>"
    )


def login_page(next_path: str, csrf: str, error: str = "") -> str:
    message = f'<p class="error" id="error">{escape(error)}</p>' if error else ""
    form = (
        f'{message}<form method="post" action="/console/login">'
        f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
        f'<input type="hidden" name="next" value="{escape(next_path)}">'
        '<p><label>Approver <input name="name" id="name" autocomplete="username" required></label></p>'
        '<p><label>Token <input name="token" id="token" type="password" autocomplete="current-password" required>'
        '</label></p><p><button type="submit" id="login">Sign in</button></p></form>'
    )
    return page("Sign in", form)


def _args(approval: PendingApproval) -> str:
    try:
        return json.dumps(json.loads(approval.args_summary), indent=2, ensure_ascii=False)
    except ValueError:
        return approval.args_summary


def list_page(pending: Sequence[PendingApproval], recent: Sequence[PendingApproval], user: str, csrf: str) -> str:
    def rows(items: Sequence[PendingApproval], when: str) -> str:
        out = []
        for a in items:
            stamp = a.expires_at if when == "expires" else (a.decided_at or a.expires_at)
            out.append(
                f'<tr class="approval" data-id="{escape(a.id)}"><td><a href="/console/approvals/{escape(a.id)}">'
                f"{escape(a.id)}</a></td><td>{escape(a.tool)}</td><td>{escape(a.agent_id)}</td>"
                f"<td><code>{escape(a.args_summary[:120])}</code></td><td>{escape(a.state)}</td>"
                f"<td>{escape(iso(stamp) or '')}</td></tr>"
            )
        return "".join(out)

    head = "<tr><th>Approval</th><th>Tool</th><th>Agent</th><th>Arguments (redacted)</th><th>State</th><th>{}</th></tr>"
    body = (
        f'<table id="pending">{head.format("Expires")}{rows(pending, "expires")}</table>'
        + ("" if pending else '<p id="none">Nothing is waiting for a decision.</p>')
        + f'<h2>Recent decisions</h2><table id="recent">{head.format("Decided")}{rows(recent, "decided")}</table>'
    )
    return page("Pending approvals", body, user=user, csrf=csrf)


def detail_page(
    approval: PendingApproval, *, user: str, csrf: str, may_decide: bool, preselect: str = "", notice: str = ""
) -> str:
    a = approval
    facts = [
        ("Approval", a.id),
        ("Agent", f"{a.agent_id} (tenant {a.tenant})" + (f" via {' → '.join(a.chain)}" if a.chain else "")),
        ("Tool", a.tool),
        ("Rule", a.rule),
        ("Reason", a.reason),
        ("Approvers", a.approvers),
        ("Policy version", a.policy_version),
        ("Requested", iso(a.created_at) or ""),
        ("Expires", iso(a.expires_at) or ""),
        ("Decided by", a.decided_by or "-"),
        ("Comment", a.comment or "-"),
    ]
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in facts)
    body = f'<p>State: <span class="state" id="state">{escape(a.state)}</span></p>'
    if notice:
        body += f'<p class="notice" id="notice">{escape(notice)}</p>'
    body += f'<table id="facts">{rows}</table><h3>Arguments (redacted)</h3><pre id="args">{escape(_args(a))}</pre>'
    if a.state == "pending" and may_decide:
        if preselect:
            body += (
                f'<p class="notice">You followed a link to <b>{escape(preselect)}</b> this request: confirm below.</p>'
            )
        body += (
            f'<form method="post" action="/console/approvals/{escape(a.id)}" id="decide">'
            f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
            '<p><label>Comment <textarea name="comment" id="comment" maxlength="500"></textarea></label></p>'
            '<button type="submit" name="action" value="approve" id="approve">Approve</button>'
            '<button type="submit" name="action" value="deny" id="deny">Deny</button></form>'
        )
    elif a.state == "pending":
        body += f'<p class="error">You are not an approver of {escape(a.approvers)}.</p>'
    body += '<p><a href="/console/approvals">All approvals</a></p>'
    return page(f"{a.tool} by {a.agent_id}", body, user=user, csrf=csrf)


def message_page(title: str, message: str) -> str:
    return page(title, f'<p class="error" id="error">{escape(message)}</p><p><a href="/console/approvals">Back</a></p>')
