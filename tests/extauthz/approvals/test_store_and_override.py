"""Approval transitions in SQLite and the override gate of Check (single use under races)."""

from __future__ import annotations

import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from extauthz.approvals.override import OverrideGate, refusal_decision
from extauthz.approvals.tokens import OverrideRefused, OverrideTokens
from extauthz.decision import ApprovalObligation, Decision, Effect, Obligations, Reason
from extauthz.identity import AgentIdentity
from extauthz.store import CONSUMED, PendingApproval, PendingLimitReached
from extauthz.store.sqlite import SqliteStore
from extauthz.telemetry import Metrics

NOW = 1_800_000_000.0
AGENT = AgentIdentity("support-bot", "acme", ("payments.refund",))


def approval(i: int = 1, **kw) -> PendingApproval:
    base = dict(
        id=f"apr_{i}",
        agent_id="support-bot",
        tenant="acme",
        chain=(),
        tool="payments.refund",
        args_summary='{"amount": 120}',
        fingerprint=f"fp{i}",
        rule="refund-needs-approval",
        reason="needs approval",
        policy_version="v1",
        approvers="support-leads",
        created_at=NOW,
        expires_at=NOW + 3600,
    )
    return PendingApproval(**{**base, **kw})


@pytest.fixture
def store(tmp_path: Path):
    s = SqliteStore(tmp_path / "aegis.db")
    yield s
    s.close()


def test_transitions(store: SqliteStore):
    a = store.create_or_get_pending(approval(), NOW)
    assert store.create_or_get_pending(replace(approval(), id="apr_dup"), NOW + 1).id == a.id
    decided, changed = store.decide(a.id, "approved", "alice", "ok", NOW + 10, 600)
    assert changed and decided and decided.state == "approved" and decided.token_expires_at == NOW + 610
    assert store.decide(a.id, "denied", "bob", None, NOW + 11, 600)[1] is False
    assert store.mark_token_issued(a.id, NOW + 12) is True
    assert store.mark_token_issued(a.id, NOW + 13) is False
    assert store.consume(a.id, NOW + 20) == CONSUMED
    assert store.consume(a.id, NOW + 21) == "used"
    assert store.get_approval(a.id).used_at == NOW + 20  # type: ignore[union-attr]


def test_expiry_of_pending_and_unused_tokens(store: SqliteStore):
    store.create_or_get_pending(approval(1, expires_at=NOW + 5), NOW)
    store.create_or_get_pending(approval(2), NOW)
    store.decide("apr_2", "approved", "alice", None, NOW, 10)
    assert store.consume("apr_2", NOW + 11) == "expired"
    assert {a.id for a in store.expire_due(NOW + 11)} == {"apr_1", "apr_2"}
    assert {a.state for a in store.list_approvals()} == {"expired"}
    assert store.decide("apr_1", "approved", "alice", None, NOW + 12, 10)[1] is False


def test_budget(store: SqliteStore):
    store.create_or_get_pending(approval(1), NOW, max_pending=2)
    store.create_or_get_pending(approval(2), NOW, max_pending=2)
    with pytest.raises(PendingLimitReached):
        store.create_or_get_pending(approval(3), NOW, max_pending=2)
    assert store.create_or_get_pending(approval(1), NOW, max_pending=2).id == "apr_1"  # the same call still polls
    assert store.create_or_get_pending(approval(4, agent_id="other"), NOW, max_pending=2).id == "apr_4"


def test_twenty_concurrent_consumers_one_winner(store: SqliteStore):
    store.create_or_get_pending(approval(), NOW)
    store.decide("apr_1", "approved", "alice", None, NOW, 600)
    barrier = threading.Barrier(20)

    def consume(_: int) -> str:
        barrier.wait()
        return store.consume("apr_1", NOW + 1)

    with ThreadPoolExecutor(20) as pool:
        outcomes = list(pool.map(consume, range(20)))
    assert outcomes.count(CONSUMED) == 1 and outcomes.count("used") == 19


def test_old_databases_gain_the_new_columns(tmp_path: Path):
    db = sqlite3.connect(tmp_path / "old.db")
    db.executescript(
        "CREATE TABLE approvals (id TEXT PRIMARY KEY, agent_id TEXT NOT NULL, tenant TEXT NOT NULL, chain TEXT NOT NULL,"
        " tool TEXT NOT NULL, args_summary TEXT NOT NULL, fingerprint TEXT NOT NULL, rule TEXT NOT NULL,"
        " reason TEXT NOT NULL, policy_version TEXT NOT NULL, approvers TEXT NOT NULL, created_at REAL NOT NULL,"
        " expires_at REAL NOT NULL, state TEXT NOT NULL, decided_by TEXT, decided_at REAL, comment TEXT);"
    )
    db.close()
    store = SqliteStore(tmp_path / "old.db")
    store.create_or_get_pending(approval(), NOW)
    assert store.get_approval("apr_1").token_expires_at is None  # type: ignore[union-attr]
    store.close()


# --- the override gate -------------------------------------------------------------------------


@pytest.fixture
def gate(store: SqliteStore):
    tokens = OverrideTokens(ed25519.Ed25519PrivateKey.generate())
    return OverrideGate(tokens, store, Metrics()), tokens


def needs_approval(rule: str = "refund-needs-approval", redact: tuple[str, ...] = ()) -> Decision:
    return Decision(
        Effect.APPROVAL_NEEDED,
        (Reason(rule, "needs approval"),),
        "v1",
        Obligations(redact_fields=redact, approval=ApprovalObligation("support-leads", 3600, rule)),
    )


def approved(store: SqliteStore, tokens: OverrideTokens, state: str = "approved") -> str:
    a = store.create_or_get_pending(approval(), NOW)
    store.decide(a.id, "denied" if state == "denied" else "approved", "alice", None, NOW, 600)
    if state in {"used", "expired"}:
        store.consume(a.id, NOW + (1 if state == "used" else 700))
        store.expire_due(NOW + 700)
    return tokens.issue(
        approval_id=a.id,
        agent_id=a.agent_id,
        tenant=a.tenant,
        fingerprint=a.fingerprint,
        rule=a.rule,
        iat=NOW,
        exp=NOW + 600,
    )


def test_gate_allows_once_and_keeps_redaction(gate, store):
    g, tokens = gate
    token = approved(store, tokens)
    claims = g.verify(token, AGENT, "fp1", NOW + 1)
    decision = g.consume(claims, needs_approval(redact=("ssn",)), NOW + 1)
    assert decision.effect is Effect.SANITIZE and decision.obligations.redact_fields == ("ssn",)
    assert decision.obligations.approval is None and decision.rules == ("refund-needs-approval",)
    with pytest.raises(OverrideRefused, match="already used"):
        g.verify(token, AGENT, "fp1", NOW + 2)


@pytest.mark.parametrize(
    ("identity", "fingerprint", "state", "rule"),
    [
        (AgentIdentity("other-bot", "acme", ()), "fp1", "approved", "override-wrong-agent"),
        (AgentIdentity("support-bot", "globex", ()), "fp1", "approved", "override-wrong-agent"),
        (AGENT, "fp-changed", "approved", "override-mismatch"),
        (AGENT, "fp1", "used", "override-reused"),
        (AGENT, "fp1", "denied", "override-denied"),
    ],
)
def test_gate_refusals(gate, store, identity, fingerprint, state, rule):
    g, tokens = gate
    token = approved(store, tokens, state)
    with pytest.raises(OverrideRefused) as refused:
        g.verify(token, identity, fingerprint, NOW + 1)
    assert refused.value.rule == rule
    assert refusal_decision(refused.value, "v1").rules == (rule,)


def test_gate_expired_approval(gate, store):
    g, tokens = gate
    a = store.create_or_get_pending(approval(), NOW)
    store.decide(a.id, "approved", "alice", None, NOW, 600)
    store.expire_due(NOW + 601)
    token = tokens.issue(
        approval_id=a.id, agent_id=a.agent_id, tenant=a.tenant, fingerprint="fp1", rule=a.rule, iat=NOW, exp=NOW + 1200
    )
    with pytest.raises(OverrideRefused) as refused:
        g.verify(token, AGENT, "fp1", NOW + 602)
    assert refused.value.rule == "override-expired"


def test_gate_deny_stays_deny_and_other_rules_do_not_count(gate, store):
    g, tokens = gate
    claims = g.verify(approved(store, tokens), AGENT, "fp1", NOW + 1)
    deny = Decision(Effect.DENY, (Reason("refund-over-limit", "no"),), "v1")
    assert g.consume(claims, deny, NOW + 1) is deny
    with pytest.raises(OverrideRefused) as refused:
        g.consume(claims, needs_approval("another-rule"), NOW + 1)
    assert refused.value.rule == "override-rule-mismatch"
    assert store.get_approval("apr_1").state == "approved"  # type: ignore[union-attr]
