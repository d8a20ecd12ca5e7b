"""The approval audit trail: one JSON event per transition on the ``aegis.audit`` logger.

Events: requested, notified, notify_failed, approved, denied, token_issued, token_used,
override_refused, expired, budget_exceeded.  Every event carries the approval id; arguments
appear only in their redacted form (``args_summary``); tokens and secrets never appear.
"""

from __future__ import annotations

import logging
from typing import Any

from extauthz.store import PendingApproval

log = logging.getLogger("aegis.audit")


def audit(event: str, approval: PendingApproval | None = None, **fields: Any) -> None:
    """Log one audit event (fields with a None value are left out)."""
    entry: dict[str, Any] = {"event": f"approval.{event}"}
    if approval is not None:
        entry.update(
            approval_id=approval.id,
            agent_id=approval.agent_id,
            tenant=approval.tenant,
            tool=approval.tool,
            rule=approval.rule,
            approvers=approval.approvers,
            state=approval.state,
        )
    entry.update({k: v for k, v in fields.items() if v is not None})
    log.info("approval.%s", event, extra={"aegis": entry})
