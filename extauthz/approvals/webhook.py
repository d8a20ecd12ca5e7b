"""Generic webhook: JSON events signed with HMAC-SHA256 over ``{timestamp}.{body}``.

Headers: ``X-Aegis-Timestamp`` (Unix seconds) and ``X-Aegis-Signature: v1=<hex>``.  A
receiver recomputes the HMAC with the shared secret, compares in constant time and
rejects old timestamps (replays).  Events: ``approval.requested`` and ``approval.decided``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from collections.abc import Callable
from typing import Any

import httpx

from extauthz.approvals.notify import ApprovalCard, NotifyError
from extauthz.approvals.settings import NotifierSpec
from extauthz.store import NotificationRef

HTTP_TIMEOUT_S = 5.0
SIGNATURE_HEADER = "x-aegis-signature"
TIMESTAMP_HEADER = "x-aegis-timestamp"


def webhook_signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """``v1=`` + hex HMAC-SHA256 of ``{timestamp}.{body}``."""
    return "v1=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def event_payload(event: str, card: ApprovalCard) -> dict[str, Any]:
    """The JSON event: the approval (arguments redacted) and the console links."""
    a = card.approval
    return {
        "event": f"approval.{event}",
        "approval": {
            "id": a.id,
            "state": a.state,
            "agent_id": a.agent_id,
            "tenant": a.tenant,
            "chain": list(a.chain),
            "tool": a.tool,
            "args": json.loads(a.args_summary),
            "rule": a.rule,
            "reason": a.reason,
            "approvers": a.approvers,
            "policy_version": a.policy_version,
            "created_at": a.created_at,
            "expires_at": a.expires_at,
            "decided_by": a.decided_by,
            "decided_at": a.decided_at,
        },
        "links": {"console": card.console_url, "approve": card.approve_url, "deny": card.deny_url},
    }


class WebhookNotifier:
    """POSTs signed JSON events to one URL."""

    def __init__(
        self, spec: NotifierSpec, client: httpx.Client | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self._url = spec.url
        self._secret_env = spec.secret_env
        self._client = client or httpx.Client(timeout=HTTP_TIMEOUT_S)
        self._clock = clock
        self.name = "webhook"

    def _post(self, event: str, card: ApprovalCard) -> None:
        secret = os.environ.get(self._secret_env, "")
        if not secret:
            raise NotifyError("webhook_secret_missing")
        body = json.dumps(event_payload(event, card), separators=(",", ":"), sort_keys=True).encode()
        timestamp = str(int(self._clock()))
        headers = {
            "content-type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: webhook_signature(secret.encode(), timestamp, body),
        }
        try:
            response = self._client.post(self._url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise NotifyError(f"webhook_unreachable:{exc.__class__.__name__}") from None
        if not 200 <= response.status_code < 300:
            raise NotifyError(f"webhook_http_{response.status_code}")

    def requested(self, card: ApprovalCard) -> NotificationRef | None:
        self._post("requested", card)
        return None

    def decided(self, card: ApprovalCard, ref: NotificationRef | None) -> None:
        self._post("decided", card)
