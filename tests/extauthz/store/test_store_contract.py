"""The Store contract: every backend (SQLite, Redis) must behave the same (fixture ``store``
in conftest.py runs each test against both)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TypeVar

import pytest

from extauthz.store import CONSUMED, NotificationRef, PendingApproval, PendingLimitReached, Store

T = TypeVar("T")
NOW = 1_800_000_000.0


def approval(i: int = 1, **kw) -> PendingApproval:
    base = dict(
        id=f"apr_{i}",
        agent_id="support-bot",
        tenant="acme",
        chain=("orchestrator",),
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


def race(n: int, call: Callable[[int], T]) -> list[T]:
    """``n`` threads released together, each making one call."""
    barrier = threading.Barrier(n)

    def run(i: int) -> T:
        barrier.wait()
        return call(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


# --- approvals ---------------------------------------------------------------------------------


def test_round_trip_keeps_every_field(store: Store):
    a = approval()
    store.create_or_get_pending(a, NOW)
    assert store.get_approval(a.id) == a
    assert store.get_approval("apr_missing") is None


def test_transitions(store: Store):
    a = store.create_or_get_pending(approval(), NOW)
    assert store.create_or_get_pending(replace(approval(), id="apr_dup"), NOW + 1).id == a.id
    decided, changed = store.decide(a.id, "approved", "alice", "ok", NOW + 10, 600)
    assert changed and decided is not None
    assert (decided.state, decided.decided_by, decided.comment, decided.token_expires_at) == (
        "approved",
        "alice",
        "ok",
        NOW + 610,
    )
    assert store.decide(a.id, "denied", "bob", None, NOW + 11, 600)[1] is False
    assert store.mark_token_issued(a.id, NOW + 12) is True
    assert store.mark_token_issued(a.id, NOW + 13) is False
    assert store.mark_token_issued("apr_missing", NOW) is False
    assert store.consume(a.id, NOW + 20) == CONSUMED
    assert store.consume(a.id, NOW + 21) == "used"
    final = store.get_approval(a.id)
    assert final is not None and final.used_at == NOW + 20 and final.token_issued_at == NOW + 12


def test_denied_and_unknown_cannot_be_consumed(store: Store):
    store.create_or_get_pending(approval(), NOW)
    decided, changed = store.decide("apr_1", "denied", "bob", None, NOW, 600)
    assert changed and decided is not None and decided.token_expires_at is None
    assert store.consume("apr_1", NOW + 1) == "denied"
    assert store.consume("apr_missing", NOW + 1) == "unknown"
    assert store.decide("apr_missing", "approved", "a", None, NOW, 1) == (None, False)
    with pytest.raises(ValueError):
        store.decide("apr_1", "used", "a", None, NOW, 1)


def test_expiry_of_pending_and_unused_tokens(store: Store):
    store.create_or_get_pending(approval(1, expires_at=NOW + 5), NOW)
    store.create_or_get_pending(approval(2), NOW)
    store.create_or_get_pending(approval(3), NOW)
    store.decide("apr_2", "approved", "alice", None, NOW, 10)
    assert store.consume("apr_2", NOW + 11) == "expired"
    assert store.expire_due(NOW + 4) == []
    assert {a.id for a in store.expire_due(NOW + 11)} == {"apr_1", "apr_2"}
    assert store.expire_due(NOW + 12) == []  # each approval expires once
    assert {a.id: a.state for a in store.list_approvals()} == {
        "apr_1": "expired",
        "apr_2": "expired",
        "apr_3": "pending",
    }
    assert [a.id for a in store.list_approvals("pending")] == ["apr_3"]
    assert store.decide("apr_1", "approved", "alice", None, NOW + 12, 10)[1] is False


def test_an_expired_pending_approval_is_replaced(store: Store):
    store.create_or_get_pending(approval(1, expires_at=NOW + 5), NOW)
    again = store.create_or_get_pending(approval(2, fingerprint="fp1"), NOW + 6)
    assert again.id == "apr_2"


def test_pending_budget(store: Store):
    store.create_or_get_pending(approval(1), NOW, max_pending=2)
    store.create_or_get_pending(approval(2), NOW, max_pending=2)
    with pytest.raises(PendingLimitReached):
        store.create_or_get_pending(approval(3), NOW, max_pending=2)
    assert store.create_or_get_pending(approval(1), NOW, max_pending=2).id == "apr_1"  # the same call still polls
    assert store.create_or_get_pending(approval(4, agent_id="other"), NOW, max_pending=2).id == "apr_4"
    store.decide("apr_1", "denied", "bob", None, NOW, 10)  # decided: no longer counts
    assert store.create_or_get_pending(approval(5), NOW, max_pending=2).id == "apr_5"


def test_notification_refs(store: Store):
    store.create_or_get_pending(approval(), NOW)
    store.save_notification_ref(NotificationRef("apr_1", "slack", "C1", "123.4"))
    store.save_notification_ref(NotificationRef("apr_1", "slack", "C1", "123.5"))  # replaced
    store.save_notification_ref(NotificationRef("apr_1", "teams", "", "x"))
    assert sorted(store.notification_refs("apr_1"), key=lambda r: r.target) == [
        NotificationRef("apr_1", "slack", "C1", "123.5"),
        NotificationRef("apr_1", "teams", "", "x"),
    ]
    assert list(store.notification_refs("apr_other")) == []


def test_fifty_concurrent_consumers_one_winner(store: Store):
    store.create_or_get_pending(approval(), NOW)
    store.decide("apr_1", "approved", "alice", None, NOW, 600)
    outcomes = race(50, lambda _: store.consume("apr_1", NOW + 1))
    assert outcomes.count(CONSUMED) == 1 and outcomes.count("used") == 49


def test_concurrent_identical_requests_make_one_approval(store: Store):
    ids = race(20, lambda i: store.create_or_get_pending(approval(100 + i, fingerprint="same"), NOW).id)
    assert len(set(ids)) == 1


def test_ping(store: Store):
    store.ping()


# --- counters ----------------------------------------------------------------------------------


def test_budget_counter_stops_at_the_limit(store: Store):
    assert store.consume_budget("b", 1, 3, NOW + 60, NOW) == (True, 1)
    assert store.consume_budget("b", 2, 3, NOW + 60, NOW) == (True, 3)
    assert store.consume_budget("b", 1, 3, NOW + 60, NOW) == (False, 3)
    assert store.consume_budget("b2", 5, 3, NOW + 60, NOW) == (False, 0)  # never over the limit


def test_budget_counter_under_a_race_admits_exactly_the_limit(store: Store):
    outcomes = race(40, lambda _: store.consume_budget("race", 1, 25, NOW + 60, NOW)[0])
    assert outcomes.count(True) == 25


def test_usage_adds_unconditionally_and_then_blocks(store: Store):
    assert store.add_usage("u", 7, NOW + 60, NOW) == 7
    assert store.add_usage("u", 5, NOW + 60, NOW) == 12
    assert store.consume_budget("u", 0, 10, NOW + 60, NOW) == (False, 12)
    assert store.consume_budget("u", 0, 20, NOW + 60, NOW) == (True, 12)


def test_mark_once(store: Store):
    assert store.mark_once("warn", NOW + 60, NOW) is True
    assert race(10, lambda _: store.mark_once("warn", NOW + 60, NOW)).count(True) == 0
    assert store.mark_once("warn-other", NOW + 60, NOW) is True


def test_token_bucket(store: Store):
    # capacity 3, one token every 2 s
    assert [store.take_token("tb", 3, 0.5, NOW) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert store.take_token("tb", 3, 0.5, NOW) == pytest.approx(2.0)
    assert store.take_token("tb", 3, 0.5, NOW + 1) == pytest.approx(1.0)
    assert store.take_token("tb", 3, 0.5, NOW + 2) == 0.0
    assert store.take_token("tb", 3, 0.5, NOW + 2) > 0
    assert [store.take_token("tb", 3, 0.5, NOW + 100) for _ in range(4)][:3] == [0.0, 0.0, 0.0]  # refilled to capacity


def test_token_bucket_under_a_race_admits_exactly_the_burst(store: Store):
    outcomes = race(30, lambda _: store.take_token("tb-race", 10, 0.001, NOW))
    assert outcomes.count(0.0) == 10
