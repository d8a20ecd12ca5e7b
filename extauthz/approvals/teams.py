"""Microsoft Teams: an Adaptive Card posted to a Workflows webhook.

Teams cannot call back into Aegis with a verified identity, so the card's buttons are
``Action.OpenUrl`` links to the console, HMAC-signed and expiring (``tokens.SignedLinks``);
the console still requires an approver login before anything is decided.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx

from extauthz.approvals.notify import ApprovalCard, NotifyError
from extauthz.approvals.settings import NotifierSpec
from extauthz.store import NotificationRef

HTTP_TIMEOUT_S = 5.0
CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def adaptive_card(card: ApprovalCard) -> dict[str, Any]:
    """The Workflows webhook message: one Adaptive Card attachment."""
    a = card.approval
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "size": "Medium", "weight": "Bolder", "text": f"Approval needed: {a.tool}"},
        {
            "type": "FactSet",
            "facts": [
                {"title": "Agent", "value": f"{a.agent_id} ({a.tenant})"},
                {"title": "Tool", "value": a.tool},
                {"title": "Rule", "value": a.rule},
                {"title": "Expires", "value": _iso(a.expires_at)},
                {"title": "Approval", "value": a.id},
            ],
        },
        {"type": "TextBlock", "wrap": True, "text": a.reason},
        {"type": "TextBlock", "wrap": True, "fontType": "Monospace", "text": a.args_summary[:2000]},
    ]
    actions = [
        {"type": "Action.OpenUrl", "title": "Approve", "url": card.approve_url},
        {"type": "Action.OpenUrl", "title": "Deny", "url": card.deny_url},
        {"type": "Action.OpenUrl", "title": "Open console", "url": card.console_url},
    ]
    content = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
        "actions": actions,
    }
    return {
        "type": "message",
        "attachments": [{"contentType": CARD_CONTENT_TYPE, "contentUrl": None, "content": content}],
    }


class TeamsNotifier:
    """Posts approval cards to a Teams Workflows webhook (decisions are not pushed back)."""

    def __init__(self, spec: NotifierSpec, client: httpx.Client | None = None) -> None:
        self._url = spec.url
        self._client = client or httpx.Client(timeout=HTTP_TIMEOUT_S)
        self.name = "teams"

    def requested(self, card: ApprovalCard) -> NotificationRef | None:
        try:
            response = self._client.post(self._url, json=adaptive_card(card))
        except httpx.HTTPError as exc:
            raise NotifyError(f"teams_unreachable:{exc.__class__.__name__}") from None
        if response.status_code not in (200, 202):
            raise NotifyError(f"teams_http_{response.status_code}")
        return None

    def decided(self, card: ApprovalCard, ref: NotificationRef | None) -> None:
        return None
