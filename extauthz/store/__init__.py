"""State shared across calls: pending approvals (and, later, counters and single-use tokens).

``Store`` is the interface; ``sqlite`` is the single-node default.  Every backend error is
translated into ``StoreError`` at the backend boundary, so callers fail closed.
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


class Store(Protocol):
    """What the decision path needs from shared state."""

    def create_or_get_pending(self, approval: PendingApproval, now: float) -> PendingApproval:
        """Insert ``approval`` unless the same agent already has a live pending approval for the
        same fingerprint; return the stored one either way (no duplicate approval cards)."""
        ...

    def get_approval(self, approval_id: str) -> PendingApproval | None: ...

    def list_approvals(self, state: str | None = None) -> Sequence[PendingApproval]: ...

    def ping(self) -> None:
        """Raise StoreError if the store is not usable."""
        ...

    def close(self) -> None: ...


__all__ = ["PendingApproval", "Store"]
