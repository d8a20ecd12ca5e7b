"""``ApprovalService``: the life of an approval, from the 202 to the override token.

It records pending approvals (with the per-rule budget), announces them through the
dispatcher, applies approver decisions (checking the approver is in the group), hands the
requesting agent its override token, and expires what nobody decided (the sweep thread).
Every transition is an audit event and a metric.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from extauthz.approvals.audit import audit
from extauthz.approvals.notify import ApprovalCard, Dispatcher, Notifier
from extauthz.approvals.override import OverrideGate
from extauthz.approvals.settings import ApprovalsConfig, ApproverGroup
from extauthz.approvals.tokens import OverrideTokens, SignedLinks
from extauthz.decision import Decision, Effect, Reason
from extauthz.errors import AegisError
from extauthz.store import PendingApproval, Store
from extauthz.telemetry import Metrics

log = logging.getLogger("aegis.approvals")


class ApprovalActionError(Exception):
    """An approver action that cannot be applied; ``status``/``code`` for the HTTP answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def iso(ts: float | None) -> str | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


class ApprovalService:
    """Approvals for one service process (thread-safe: state lives in the store)."""

    def __init__(
        self,
        config: ApprovalsConfig,
        store: Store,
        metrics: Metrics,
        *,
        base_url: str,
        tokens: OverrideTokens,
        links: SignedLinks,
        dispatcher: Dispatcher,
        notifiers: Mapping[str, Sequence[Notifier]],
        secret: bytes,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self.metrics = metrics
        self.base_url = base_url.rstrip("/")
        self.tokens = tokens
        self.links = links
        self.dispatcher = dispatcher
        self.overrides = OverrideGate(tokens, store, metrics)
        self._notifiers = notifiers
        self.secret = secret  # console sessions and CSRF tokens (signed links use it too)
        self._clock = clock
        self._stop = threading.Event()
        self._sweeper = threading.Thread(target=self._sweep_loop, name="aegis-approval-sweep", daemon=True)

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the notifier worker and the expiry sweep."""
        self.dispatcher.start()
        self._sweeper.start()

    def stop(self) -> None:
        """Stop the sweep (waiting for one in progress: the store may close next) and the
        notifier worker."""
        self._stop.set()
        if self._sweeper.is_alive():
            self._sweeper.join(timeout=5)
        self.dispatcher.stop()

    def readiness(self) -> dict[str, Any]:
        return {**self.dispatcher.health(), "groups": sorted(self.config.groups)}

    # --- transitions -------------------------------------------------------------------------

    def request(self, candidate: PendingApproval, now: float, max_pending: int | None) -> PendingApproval:
        """Record (or find) the pending approval; announce it only when it is new.

        Raises ``PendingLimitReached`` when the agent is over the rule's approval budget.
        """
        approval = self.store.create_or_get_pending(candidate, now, max_pending=max_pending)
        if approval.id == candidate.id:
            self.metrics.approvals.labels("requested").inc()
            audit(
                "requested",
                approval,
                args=approval.args_summary,
                reason=approval.reason,
                expires_at=iso(approval.expires_at),
            )
            self._announce("requested", approval)
        return approval

    def group(self, approval: PendingApproval) -> ApproverGroup | None:
        return self.config.groups.get(approval.approvers)

    def is_approver(self, approval: PendingApproval, identities: Sequence[str]) -> bool:
        """Whether any of the approver's identities (Slack id, e-mail, console name) is listed."""
        group = self.group(approval)
        return group is not None and any(i and i in group.approvers for i in identities)

    def decide(
        self,
        approval_id: str,
        *,
        approve: bool,
        approver: str,
        identities: Sequence[str],
        comment: str | None,
        via: str,
        operator: bool = False,
    ) -> PendingApproval:
        """Apply an approver's decision.  ``operator`` callers are trusted to act for the group."""
        now = self._clock()
        approval = self.store.get_approval(approval_id)
        if approval is None:
            raise ApprovalActionError(404, "unknown_approval", "no such approval")
        if not operator and not self.is_approver(approval, identities):
            audit("decision_refused", approval, approver=approver, via=via, error="not_an_approver")
            raise ApprovalActionError(403, "not_an_approver", f"you are not an approver of {approval.approvers}")
        comment = (comment or "").strip()[:500] or None
        state = "approved" if approve else "denied"
        updated, changed = self.store.decide(approval_id, state, approver, comment, now, self.config.token_ttl_s)
        if not changed or updated is None:
            current = updated.state if updated is not None else "unknown"
            if current == "pending":  # pending but past its expiry: the sweep has not run yet
                current = "expired"
            raise ApprovalActionError(409, "not_pending", f"the approval is {current}, not pending")
        self.metrics.approvals.labels(state).inc()
        audit(state, updated, approver=approver, via=via, comment_given=comment is not None)
        self._announce("decided", updated)
        return updated

    def status(self, approval: PendingApproval) -> dict[str, Any]:
        """The agent's view (status_url); an approved approval carries the override token."""
        body: dict[str, Any] = {
            "approval_id": approval.id,
            "state": approval.state,
            "tool": approval.tool,
            "reason": approval.reason,
            "rule": approval.rule,
            "policy_version": approval.policy_version,
            "created_at": iso(approval.created_at),
            "expires_at": iso(approval.expires_at),
            "decided_by": approval.decided_by,
            "decided_at": iso(approval.decided_at),
        }
        now = self._clock()
        if approval.state == "approved" and approval.token_expires_at and approval.token_expires_at > now:
            body["override_token"] = self.tokens.issue(
                approval_id=approval.id,
                agent_id=approval.agent_id,
                tenant=approval.tenant,
                fingerprint=approval.fingerprint,
                rule=approval.rule,
                iat=approval.decided_at or now,
                exp=approval.token_expires_at,
            )
            body["override_expires_at"] = iso(approval.token_expires_at)
            body["retry"] = "repeat the same request once with the header x-aegis-override: <override_token>"
            if self.store.mark_token_issued(approval.id, now):
                self.metrics.approvals.labels("token_issued").inc()
                audit("token_issued", approval, token_expires_at=iso(approval.token_expires_at))
        return body

    def sweep(self) -> Sequence[PendingApproval]:
        """Expire what is due; report each one (audit, metric, card update)."""
        expired = self.store.expire_due(self._clock())
        for approval in expired:
            was = approval.state
            approval = self.store.get_approval(approval.id) or approval
            self.metrics.approvals.labels("expired").inc()
            audit("expired", approval, previous_state=was)
            self._announce("decided", approval)
        return expired

    # --- notifications -------------------------------------------------------------------------

    def console_url(self, approval_id: str) -> str:
        return f"{self.base_url}/console/approvals/{approval_id}"

    def card(self, approval: PendingApproval) -> ApprovalCard:
        now = self._clock()
        return ApprovalCard(
            approval,
            console_url=self.console_url(approval.id),
            approve_url=self.links.url(approval.id, "approve", now),
            deny_url=self.links.url(approval.id, "deny", now),
        )

    def _announce(self, event: str, approval: PendingApproval) -> None:
        notifiers = self._notifiers.get(approval.approvers, ())
        if not notifiers:
            return
        card = self.card(approval)
        for notifier in notifiers:
            self.dispatcher.submit(notifier, event, card)

    def _sweep_loop(self) -> None:
        while not self._stop.wait(self.config.sweep_interval_s):
            try:
                self.sweep()
            except AegisError as exc:
                log.warning("approval sweep failed", extra={"aegis": {"error": exc.code}})


APPROVAL_BUDGET_EXCEEDED = "approval-budget-exceeded"


def over_budget(decision: Decision, limit: int) -> Decision:
    """The agent already waits on ``limit`` approvals under this rule: deny instead of queueing."""
    rule = decision.obligations.approval.rule if decision.obligations.approval else "approval"
    message = f"too many pending approvals under {rule} (limit {limit} per agent); wait for a decision"
    return Decision(Effect.DENY, (Reason(APPROVAL_BUDGET_EXCEEDED, message),), decision.policy_version)
