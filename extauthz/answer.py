"""Decisions and errors → the one answer the agent gets (transport-neutral ``Answer``).

The Envoy adapter turns an ``Answer`` into a ``CheckResponse``; the AuthZEN and HTTP APIs
reuse the same values.  This is the edge where typed errors become HTTP statuses.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from extauthz.decision import Decision, Effect
from extauthz.errors import AegisError, IdentityError, LimitExceeded
from extauthz.metadata import (
    HEADER_DECISION_ID,
    MD_AGENT_ID,
    MD_APPROVAL_ID,
    MD_DECISION,
    MD_DECISION_ID,
    MD_POLICY_VERSION,
    MD_REDACT,
    MD_RULE,
    MD_SHADOW,
    MD_TOOL,
)
from extauthz.store import PendingApproval

# How often an agent should poll an approval's status_url.
APPROVAL_POLL_S = 5


@dataclass(frozen=True)
class Answer:
    """What to tell Envoy: allow (status 200) or a local reply, plus metadata for the log."""

    status: int
    decision_id: str
    body: Mapping[str, Any] | None = None
    response_headers: tuple[tuple[str, str], ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def allowed(self) -> bool:
        return self.status == 200


def _metadata(decision_id: str, outcome: str, **extra: str | None) -> dict[str, str]:
    data = {MD_DECISION_ID: decision_id, MD_DECISION: outcome}
    data.update({k: v for k, v in extra.items() if v})
    return data


def answer_for_decision(
    decision: Decision,
    decision_id: str,
    *,
    agent_id: str,
    tool: str | None,
    approval: PendingApproval | None = None,
    status_url: str | None = None,
) -> Answer:
    """The answer for an engine decision."""
    rule = ",".join(decision.rules)
    metadata = _metadata(
        decision_id,
        decision.effect.value,
        **{
            MD_RULE: rule,
            MD_POLICY_VERSION: decision.policy_version,
            MD_AGENT_ID: agent_id,
            MD_TOOL: tool,
            MD_SHADOW: decision.would,
        },
    )
    if decision.effect in (Effect.ALLOW, Effect.SANITIZE):
        if decision.obligations.needs_redaction:
            metadata[MD_REDACT] = decision.obligations.redact_json
        return Answer(200, decision_id, metadata=metadata)
    if decision.effect is Effect.APPROVAL_NEEDED:
        if approval is None or status_url is None:
            raise ValueError("an approval_needed answer needs the pending approval")
        metadata[MD_APPROVAL_ID] = approval.id
        body = {
            "status": "approval_needed",
            "approval_id": approval.id,
            "status_url": status_url,
            "expires_at": _iso(approval.expires_at),
            "reason": decision.reason,
            "rule": rule,
            "decision_id": decision_id,
            "policy_version": decision.policy_version,
        }
        headers = (("location", status_url), ("retry-after", str(APPROVAL_POLL_S)))
        return Answer(202, decision_id, body, headers, metadata)
    body = {
        "error": "denied",
        "reason": decision.reason,
        "rule": rule,
        "decision_id": decision_id,
        "policy_version": decision.policy_version,
    }
    return Answer(403, decision_id, body, metadata=metadata)


def answer_for_error(error: AegisError, decision_id: str, *, policy_version: str = "") -> Answer:
    """The answer for a typed error: one precise status and a JSON body, never internals."""
    body: dict[str, Any] = {"error": error.code, "message": error.message, "decision_id": decision_id}
    headers: tuple[tuple[str, str], ...] = ()
    outcome = "error"
    if isinstance(error, IdentityError):
        body["reason"] = error.reason
        description = error.message.replace('"', "'")
        headers = (("www-authenticate", f'Bearer error="invalid_token", error_description="{description}"'),)
        outcome = "unauthenticated"
    elif isinstance(error, LimitExceeded):
        # Whole seconds, rounded up: retrying at Retry-After must not be refused again.
        retry_after = max(1, math.ceil(error.retry_after_s))
        body.update({"limit": error.limit_id, "retry_after": retry_after})
        headers = (("retry-after", str(retry_after)),)
        outcome = error.code
    elif error.http_status < 500:
        outcome = "bad_request"
    metadata = _metadata(decision_id, outcome, **{MD_RULE: error.code, MD_POLICY_VERSION: policy_version})
    return Answer(error.http_status, decision_id, body, headers, metadata)


def internal_error_answer(decision_id: str) -> Answer:
    """An unexpected failure: deny with a generic reason (fail closed, no internals)."""
    body = {
        "error": "internal_error",
        "message": "Aegis could not decide; the call is denied",
        "decision_id": decision_id,
    }
    return Answer(503, decision_id, body, metadata=_metadata(decision_id, "error", **{MD_RULE: "internal_error"}))


def decision_id_header(answer: Answer) -> tuple[str, str]:
    """Every answer carries the decision id, so agents and operators can quote it."""
    return (HEADER_DECISION_ID, answer.decision_id)


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat().replace("+00:00", "Z")
