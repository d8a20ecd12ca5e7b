"""The override step of Check: a human-approved call goes through once, exactly as approved.

``verify`` runs before the engine: the token's signature and expiry, then its bindings —
this agent (id and tenant), this request's fingerprint, an approval still ``approved``.
``consume`` runs after the engine: only when the engine asks for approval under the same
rule does the token count; the approval moves approved → used in one store transaction
(the single winner of a race), and the call is allowed with the engine's other
obligations (redaction) intact.  A deny stays a deny and does not spend the token.

Every refusal is ``OverrideRefused`` with a stable rule id (see ``tokens``); the authorizer
turns it into a 403 decision.
"""

from __future__ import annotations

from dataclasses import replace

from extauthz.approvals.audit import audit
from extauthz.approvals.tokens import (
    OVERRIDE_DENIED,
    OVERRIDE_EXPIRED,
    OVERRIDE_INVALID,
    OVERRIDE_MISMATCH,
    OVERRIDE_REUSED,
    OVERRIDE_RULE_MISMATCH,
    OVERRIDE_WRONG_AGENT,
    OverrideClaims,
    OverrideRefused,
    OverrideTokens,
)
from extauthz.decision import Decision, Effect, Obligations, Reason
from extauthz.identity import AgentIdentity
from extauthz.store import CONSUMED, PendingApproval, Store
from extauthz.telemetry import Metrics

# Approval states that can no longer be used, and the refusal each one gets.
_SPENT = {
    "used": (OVERRIDE_REUSED, "the override token was already used (single use)"),
    "denied": (OVERRIDE_DENIED, "the approval was denied"),
    "expired": (OVERRIDE_EXPIRED, "the approval has expired; ask for a new approval"),
    "pending": (OVERRIDE_INVALID, "the approval has not been decided"),
    "unknown": (OVERRIDE_INVALID, "no such approval"),
}


def refusal_decision(refusal: OverrideRefused, policy_version: str) -> Decision:
    """A refused override as a deny decision (403 with the refusal's rule and message)."""
    return Decision(Effect.DENY, (Reason(refusal.rule, refusal.message),), policy_version)


class OverrideGate:
    """Verifies and consumes override tokens against the store."""

    def __init__(self, tokens: OverrideTokens, store: Store, metrics: Metrics) -> None:
        self._tokens = tokens
        self._store = store
        self._metrics = metrics

    def verify(self, token: str, identity: AgentIdentity, fingerprint: str, now: float) -> OverrideClaims:
        """The token's facts if it may let this call through; OverrideRefused otherwise."""
        claims: OverrideClaims | None = None
        try:
            claims = self._tokens.verify(token.strip(), now)
            if claims.agent_id != identity.agent_id or claims.tenant != identity.tenant:
                raise OverrideRefused(OVERRIDE_WRONG_AGENT, "the override token was issued to another agent")
            if claims.fingerprint != fingerprint:
                raise OverrideRefused(
                    OVERRIDE_MISMATCH, "the request differs from the approved one (method, host, path or arguments)"
                )
            approval = self._store.get_approval(claims.approval_id)
            state = "unknown" if approval is None else approval.state
            if approval is not None and not _bound_to(approval, claims):
                raise OverrideRefused(OVERRIDE_INVALID, "the override token does not match its approval")
            if state != "approved":
                raise OverrideRefused(*_SPENT.get(state, _SPENT["unknown"]))
        except OverrideRefused as refusal:
            self._refused(refusal, identity, claims)
            raise
        return claims

    def consume(self, claims: OverrideClaims, decision: Decision, now: float) -> Decision:
        """Spend the token if the engine asks for this approval; return the decision to enforce."""
        if decision.effect is not Effect.APPROVAL_NEEDED:
            return decision  # deny stays deny; allow needs no token (and keeps it unspent)
        obligation = decision.obligations.approval
        if obligation is None or obligation.rule != claims.rule:
            refusal = OverrideRefused(OVERRIDE_RULE_MISMATCH, "the approval was for another policy rule")
            self._refused(refusal, None, claims)
            raise refusal
        outcome = self._store.consume(claims.approval_id, now)
        if outcome != CONSUMED:
            refusal = OverrideRefused(*_SPENT.get(outcome, _SPENT["unknown"]))
            self._refused(refusal, None, claims)
            raise refusal
        self._metrics.approvals.labels("used").inc()
        approval = self._store.get_approval(claims.approval_id)
        audit("token_used", approval)
        effect = Effect.SANITIZE if decision.obligations.needs_redaction else Effect.ALLOW
        message = f"approved by {approval.decided_by if approval else 'an approver'} (approval {claims.approval_id})"
        return replace(
            decision,
            effect=effect,
            reasons=(Reason(claims.rule, message),),
            obligations=Obligations(
                decision.obligations.redact_fields,
                decision.obligations.redact_detectors,
                redact_over_limit=decision.obligations.redact_over_limit,
            ),
        )

    def _refused(self, refusal: OverrideRefused, identity: AgentIdentity | None, claims: OverrideClaims | None) -> None:
        self._metrics.approvals.labels(refusal.rule).inc()
        audit(
            "override_refused",
            None,
            approval_id=claims.approval_id if claims else None,
            # The presenting agent (who may not be the one the token was issued to).
            agent_id=identity.agent_id if identity else (claims.agent_id if claims else None),
            refusal=refusal.rule,
        )


def _bound_to(approval: PendingApproval, claims: OverrideClaims) -> bool:
    return (
        approval.agent_id == claims.agent_id
        and approval.tenant == claims.tenant
        and approval.fingerprint == claims.fingerprint
        and approval.rule == claims.rule
    )
