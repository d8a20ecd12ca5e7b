"""Slack: the Block Kit approval card (chat.postMessage / chat.update) and signed interactions.

Outbound: ``SlackNotifier`` posts a card with Approve/Deny buttons (``action_id`` approve /
deny, ``value`` = approval id) with the bot token as ``Authorization: Bearer``, and edits
the same message when the approval is decided or expires.

Inbound: ``verify_slack_request`` checks ``X-Slack-Signature`` (v0 = HMAC-SHA256 of
``v0:{timestamp}:{raw body}`` with the signing secret), a timestamp within 5 minutes, and
compares in constant time; ``parse_interaction`` turns the form-encoded ``payload`` into
one ``SlackAction`` or says precisely what is malformed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import httpx

from extauthz.approvals.notify import ApprovalCard, NotifyError
from extauthz.approvals.settings import NotifierSpec
from extauthz.store import NotificationRef, PendingApproval

SLACK_MAX_SKEW_S = 300
MAX_ARGS_CHARS = 2000
HTTP_TIMEOUT_S = 5.0
_STATE_TITLES = {
    "pending": "Approval needed",
    "approved": "Approved",
    "denied": "Denied",
    "expired": "Expired",
    "used": "Approved (used)",
}


def _escape(text: str) -> str:
    """Slack mrkdwn control characters (``<@U…>`` mentions must not be injected by arguments)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _iso(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def approval_blocks(card: ApprovalCard) -> list[dict[str, Any]]:
    """The Block Kit blocks of an approval card; buttons only while it is pending."""
    a = card.approval
    args = a.args_summary if len(a.args_summary) <= MAX_ARGS_CHARS else a.args_summary[:MAX_ARGS_CHARS] + "…"
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": f"{_STATE_TITLES.get(a.state, a.state)}: {a.tool}"[:150]},
        },
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*Agent*\n{_escape(a.agent_id)} ({_escape(a.tenant)})"},
                {"type": "mrkdwn", "text": f"*Tool*\n{_escape(a.tool)}"},
                {"type": "mrkdwn", "text": f"*Rule*\n{_escape(a.rule)}"},
                {"type": "mrkdwn", "text": f"*Expires*\n{_iso(a.expires_at)}"},
            ],
        },
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*Reason*\n{_escape(a.reason)}"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*Arguments (redacted)*\n```{_escape(args)}```"}},
    ]
    if a.state == "pending":
        blocks.append(
            {
                "type": "actions",
                "block_id": "aegis_approval",
                "elements": [
                    {
                        "type": "button",
                        "action_id": "approve",
                        "style": "primary",
                        "text": {"type": "plain_text", "text": "Approve"},
                        "value": a.id,
                    },
                    {
                        "type": "button",
                        "action_id": "deny",
                        "style": "danger",
                        "text": {"type": "plain_text", "text": "Deny"},
                        "value": a.id,
                    },
                ],
            }
        )
    else:
        by = f" by {_escape(a.decided_by)}" if a.decided_by else ""
        note = f": {_escape(a.comment)}" if a.comment else ""
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*{a.state.capitalize()}*{by}{note}"}})
    blocks.append(
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": f"<{card.console_url}|Open in the Aegis console> · {a.id}"}],
        }
    )
    return blocks


def summary_text(a: PendingApproval) -> str:
    """The notification fallback text (shown in push notifications)."""
    return f"{_STATE_TITLES.get(a.state, a.state)}: {a.tool} by {a.agent_id}"


class SlackNotifier:
    """Posts and updates approval cards through the Slack Web API (or an incoming webhook)."""

    def __init__(self, spec: NotifierSpec, api_url: str, client: httpx.Client | None = None) -> None:
        self._spec = spec
        self._api = api_url.rstrip("/")
        self._client = client or httpx.Client(timeout=HTTP_TIMEOUT_S)
        self.name = f"slack:{spec.channel or 'webhook'}"

    def _call(self, method: str, payload: dict[str, Any]) -> dict[str, Any]:
        token = os.environ.get(self._spec.bot_token_env, "")
        if not token:
            raise NotifyError("slack_token_missing")
        try:
            response = self._client.post(
                f"{self._api}/{method}",
                json=payload,
                headers={"authorization": f"Bearer {token}", "content-type": "application/json; charset=utf-8"},
            )
        except httpx.HTTPError as exc:
            raise NotifyError(f"slack_unreachable:{exc.__class__.__name__}") from None
        if response.status_code != 200:
            raise NotifyError(f"slack_http_{response.status_code}")
        try:
            body = response.json()
        except ValueError:
            raise NotifyError("slack_bad_response") from None
        if not isinstance(body, dict) or body.get("ok") is not True:
            error = str(body.get("error", "unknown")) if isinstance(body, dict) else "unknown"
            raise NotifyError(f"slack_{error[:40]}")
        return body

    def _webhook(self, payload: dict[str, Any]) -> None:
        try:
            response = self._client.post(self._spec.url, json=payload)
        except httpx.HTTPError as exc:
            raise NotifyError(f"slack_unreachable:{exc.__class__.__name__}") from None
        if response.status_code != 200:
            raise NotifyError(f"slack_http_{response.status_code}")

    def requested(self, card: ApprovalCard) -> NotificationRef | None:
        payload = {"text": summary_text(card.approval), "blocks": approval_blocks(card)}
        if self._spec.url and not self._spec.bot_token_env:
            self._webhook(payload)
            return None
        body = self._call("chat.postMessage", {"channel": self._spec.channel, **payload})
        return NotificationRef(card.approval.id, self.name, str(body.get("channel", "")), str(body.get("ts", "")))

    def decided(self, card: ApprovalCard, ref: NotificationRef | None) -> None:
        payload = {"text": summary_text(card.approval), "blocks": approval_blocks(card)}
        if ref is None or not ref.ref:
            return  # nothing to edit (webhook post, or the original post failed)
        self._call("chat.update", {"channel": ref.channel, "ts": ref.ref, **payload})


# --- inbound interactions ------------------------------------------------------------------


class SlackRequestError(Exception):
    """A refused Slack request: ``status`` 401 (signature) or 400 (malformed), ``code`` stable."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class SlackAction:
    """One button press: who (Slack user id), what (approve/deny) and which approval."""

    user_id: str
    action: str
    approval_id: str


def slack_signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """``v0=`` + hex HMAC-SHA256 of ``v0:{timestamp}:{body}`` (Slack's request signing)."""
    return "v0=" + hmac.new(secret, b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()


def verify_slack_request(secret: bytes, timestamp: str | None, signature: str | None, body: bytes, now: float) -> None:
    """Raise SlackRequestError(401) unless the request is signed by Slack within 5 minutes."""
    if not secret:
        raise SlackRequestError(401, "slack_not_configured", "Slack interactions are not configured")
    if not timestamp or not signature:
        raise SlackRequestError(401, "missing_signature", "X-Slack-Request-Timestamp and X-Slack-Signature required")
    if not timestamp.isdigit() or abs(now - int(timestamp)) > SLACK_MAX_SKEW_S:
        raise SlackRequestError(401, "stale_timestamp", "the request timestamp is more than 5 minutes off")
    if not hmac.compare_digest(slack_signature(secret, timestamp, body), signature):
        raise SlackRequestError(401, "bad_signature", "the Slack signature does not verify")


def parse_interaction(body: bytes) -> SlackAction:
    """The button press in a form-encoded ``payload``; SlackRequestError(400) says what is wrong."""
    try:
        form = parse_qs(body.decode("utf-8"), strict_parsing=True, max_num_fields=20)
        raw = form["payload"][0]
        payload = json.loads(raw)
    except (UnicodeDecodeError, ValueError, KeyError, IndexError):
        raise SlackRequestError(400, "malformed_payload", "expected a form field 'payload' holding JSON") from None
    if not isinstance(payload, dict) or payload.get("type") != "block_actions":
        raise SlackRequestError(400, "unsupported_interaction", "only block_actions interactions are handled")
    user, actions = payload.get("user"), payload.get("actions")
    if not isinstance(user, dict) or not isinstance(user.get("id"), str) or not user["id"]:
        raise SlackRequestError(400, "malformed_payload", "the payload has no user.id")
    if not isinstance(actions, list) or len(actions) != 1 or not isinstance(actions[0], dict):
        raise SlackRequestError(400, "malformed_payload", "the payload must carry exactly one action")
    action, value = actions[0].get("action_id"), actions[0].get("value")
    if action not in {"approve", "deny"}:
        raise SlackRequestError(400, "unknown_action", "action_id must be approve or deny")
    if not isinstance(value, str) or not value.startswith("apr_") or len(value) > 64:
        raise SlackRequestError(400, "malformed_payload", "the action value is not an approval id")
    return SlackAction(user["id"], action, value)
