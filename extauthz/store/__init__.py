"""State shared across calls and replicas: approvals, their transitions, where they were
announced, and the counters behind budgets and rate limits (``extauthz/limits``).

``Store`` is the interface; ``sqlite`` is the single-node default and ``redis`` the shared
one for several replicas.  Both pass the same contract suite
(``tests/extauthz/store/test_store_contract.py``).  Every backend error is translated into
``StoreError`` at the backend boundary, so callers fail closed.

Approval states and the only transitions the store performs (each one atomic)::

    pending ──decide──▶ approved ──consume──▶ used
       │  └───decide──▶ denied        └──expire (token unused)──▶ expired
       └──expire────────▶ expired
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class PendingApproval:
    """An approval request: the exact call it is bound to and its state."""

    id: str
    agent_id: str
    tenant: str
    chain: tuple[str, ...]
    tool: str
    args_summary: str  # JSON, redacted before it is stored
    fingerprint: str
    rule: str
    reason: str
    policy_version: str
    approvers: str
    created_at: float
    expires_at: float
    state: str = "pending"  # pending | approved | denied | expired | used
    decided_by: str | None = None
    decided_at: float | None = None
    comment: str | None = None
    token_expires_at: float | None = None  # set on approval: the override token's expiry
    token_issued_at: float | None = None  # first time the agent fetched the override token
    used_at: float | None = None


# The outcome of ``Store.consume``: the one winner gets CONSUMED, everyone else learns why not.
CONSUMED = "consumed"


class PendingLimitReached(Exception):
    """The agent already has ``limit`` live pending approvals for this rule (approval budget)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"{limit} pending approvals")
        self.limit = limit


@dataclass(frozen=True)
class NotificationRef:
    """Where an approval was announced (e.g. a Slack channel and message ts), to update it later."""

    approval_id: str
    target: str
    channel: str
    ref: str


class Store(Protocol):
    """What the decision path needs from shared state."""

    def create_or_get_pending(
        self, approval: PendingApproval, now: float, *, max_pending: int | None = None
    ) -> PendingApproval:
        """Insert ``approval`` unless the same agent already has a live pending approval for the
        same fingerprint; return the stored one either way (no duplicate approval cards).
        With ``max_pending``, raise PendingLimitReached instead of inserting beyond the budget."""
        ...

    def decide(
        self, approval_id: str, state: str, decided_by: str, comment: str | None, now: float, token_ttl_s: float
    ) -> tuple[PendingApproval | None, bool]:
        """pending → approved/denied if still pending and unexpired; (approval, changed)."""
        ...

    def mark_token_issued(self, approval_id: str, now: float) -> bool:
        """Record the first hand-out of the override token; True only the first time."""
        ...

    def consume(self, approval_id: str, now: float) -> str:
        """approved → used, atomically: CONSUMED for exactly one caller, else the current state."""
        ...

    def expire_due(self, now: float) -> Sequence[PendingApproval]:
        """Expire pending approvals past their expiry and approved ones whose token lapsed unused."""
        ...

    def save_notification_ref(self, ref: NotificationRef) -> None: ...

    def notification_refs(self, approval_id: str) -> Sequence[NotificationRef]: ...

    def get_approval(self, approval_id: str) -> PendingApproval | None: ...

    def list_approvals(self, state: str | None = None) -> Sequence[PendingApproval]: ...

    # Counters (budgets and rate limits).  Each is one atomic step in the backend, so N
    # replicas sharing the store never admit more than the limit between them.  ``now`` is
    # the caller's clock (replicas are assumed to agree within the rates' resolution).

    def take_token(self, key: str, capacity: float, refill_per_s: float, now: float) -> float:
        """Token bucket: take one token if there is one.  0.0 when taken, else the seconds
        until a token will be available (nothing is taken)."""
        ...

    def consume_budget(self, key: str, amount: int, limit: int, expires_at: float, now: float) -> tuple[bool, int]:
        """Add ``amount`` to the counter if it is below ``limit`` and stays within it:
        (True, new value), else (False, current value).  The counter vanishes at ``expires_at``."""
        ...

    def add_usage(self, key: str, amount: int, expires_at: float, now: float) -> int:
        """Add ``amount`` unconditionally (cost read from a response); the new value."""
        ...

    def mark_once(self, key: str, expires_at: float, now: float) -> bool:
        """True for the first caller until ``expires_at`` (once-per-window notifications)."""
        ...

    def ping(self) -> None:
        """Raise StoreError if the store is not usable."""
        ...

    def close(self) -> None: ...


__all__ = ["CONSUMED", "NotificationRef", "PendingApproval", "PendingLimitReached", "Store"]
