"""The starter policy (the brief's Table 1) evaluated by the embedded engine."""

from __future__ import annotations

import datetime as dt

import pytest
from helpers import POLICIES, copy_policy_dir

from extauthz.decision import Effect
from extauthz.engine.embedded import EmbeddedEngine
from extauthz.errors import EngineError, PolicyError
from extauthz.policy import build_bundle
from extauthz.policy_input import in_calendar

ENGINE = EmbeddedEngine(build_bundle(POLICIES))
TUESDAY_NOON_NY = dt.datetime(2026, 11, 24, 17, 0, tzinfo=dt.UTC)


def decide(
    tool, args, *, tenant="acme", scopes=("payments.refund", "slack.post_message", "crm.*"), headers=None, open_=True
):
    return ENGINE.evaluate(
        {
            "agent": {"id": "support-bot", "tenant": tenant, "scopes": list(scopes), "chain": [], "labels": {}},
            "tool": {"name": tool, "args": args},
            "request": {"method": "POST", "host": "h", "path": "/", "query": "", "headers": headers or {}},
            "context": {"purpose": None, "now": "", "calendars": {"business_hours": open_}},
            "override": None,
        }
    )


@pytest.mark.parametrize(
    ("amount", "effect", "rule"),
    [
        (20, Effect.ALLOW, "refund-auto-approved"),
        (50, Effect.ALLOW, "refund-auto-approved"),
        (50.01, Effect.APPROVAL_NEEDED, "refund-needs-approval"),
        (120, Effect.APPROVAL_NEEDED, "refund-needs-approval"),
        (500, Effect.APPROVAL_NEEDED, "refund-needs-approval"),
        (500.5, Effect.DENY, "refund-over-limit"),
        (900, Effect.DENY, "refund-over-limit"),
    ],
)
def test_refund_thresholds(amount, effect, rule):
    decision = decide("payments.refund", {"amount": amount})
    assert decision.effect is effect
    assert decision.rules == (rule,)
    assert decision.policy_version == ENGINE.policy_version


def test_refund_approval_obligation():
    decision = decide("payments.refund", {"amount": 120})
    assert decision.obligations.approval is not None
    assert decision.obligations.approval.approvers == "support-leads"
    assert decision.obligations.approval.ttl_s == 3600


def test_refund_amount_of_the_wrong_type_never_allows():
    assert decide("payments.refund", {"amount": "10"}).effect is Effect.DENY


@pytest.mark.parametrize(
    ("channel", "open_", "effect", "rules"),
    [
        ("#support", True, Effect.SANITIZE, ("slack-redact-pii",)),
        ("#billing", True, Effect.SANITIZE, ("slack-redact-pii",)),
        ("#support", False, Effect.DENY, ("slack-outside-business-hours",)),
        ("#random", True, Effect.DENY, ("slack-channel-not-allowed",)),
        ("#random", False, Effect.DENY, ("slack-channel-not-allowed", "slack-outside-business-hours")),
    ],
)
def test_slack_channel_allowlist_and_hours(channel, open_, effect, rules):
    decision = decide("slack.post_message", {"channel": channel, "text": "hi"}, open_=open_)
    assert decision.effect is effect
    assert decision.rules == rules


@pytest.mark.parametrize(
    ("tenant_id", "purpose", "effect", "rules"),
    [
        ("acme", "support", Effect.SANITIZE, ("crm-redact-pii",)),
        ("acme", "investigation", Effect.SANITIZE, ("crm-redact-pii",)),
        ("globex", "support", Effect.DENY, ("crm-cross-tenant",)),
        ("acme", "marketing", Effect.DENY, ("crm-purpose-not-allowed",)),
        ("acme", None, Effect.DENY, ("crm-purpose-missing",)),
    ],
)
def test_crm_tenant_scope_and_purpose(tenant_id, purpose, effect, rules):
    headers = {"x-aegis-purpose": purpose} if purpose else {}
    decision = decide("crm.get_record", {"tenant_id": tenant_id, "record_id": "r1"}, headers=headers)
    assert decision.effect is effect
    assert decision.rules == rules
    # Customer data always leaves without these fields when the call goes ahead.
    assert decision.obligations.redact_fields == ("dob", "full_name", "ssn")


def test_unknown_tool_and_missing_scope():
    unknown = decide("payments.delete_everything", {})
    assert (unknown.effect, unknown.rules) == (Effect.DENY, ("default-deny",))
    no_scope = decide("payments.refund", {"amount": 1}, scopes=("crm.*",))
    assert (no_scope.effect, no_scope.rules) == (Effect.DENY, ("scope-missing",))
    glob = decide("crm.get_record", {"tenant_id": "acme"}, scopes=("crm.*",), headers={"x-aegis-purpose": "support"})
    assert glob.effect is Effect.SANITIZE


def test_no_rule_matched_gives_the_default_effect(tmp_path):
    directory = copy_policy_dir(
        tmp_path / "p",
        "policy_set: t\ndefault_effect: deny\ntools:\n  a.b: {match: {host: h, method: GET, path: /}}\n"
        "rules:\n  - {id: r, tools: [a.b], when: [{arg: x, eq: 1}], effect: allow}\n",
    )
    engine = EmbeddedEngine(build_bundle(directory))
    decision = engine.evaluate(
        {
            "agent": {"scopes": ["*"]},
            "tool": {"name": "a.b", "args": {}},
            "request": {"headers": {}},
            "context": {"calendars": {}},
        }
    )
    assert (decision.effect, decision.rules) == (Effect.DENY, ("default-deny",))


def test_business_hours_calendar():
    calendar = build_bundle(POLICIES).data["calendars"]["business_hours"]
    assert in_calendar(calendar, TUESDAY_NOON_NY)
    assert not in_calendar(calendar, TUESDAY_NOON_NY.replace(hour=23))  # 18:00 in New York
    assert not in_calendar(calendar, dt.datetime(2026, 11, 28, 17, 0, tzinfo=dt.UTC))  # Saturday
    assert not in_calendar(calendar, dt.datetime(2026, 11, 26, 17, 0, tzinfo=dt.UTC))  # Thanksgiving


def test_invalid_rego_is_a_policy_error(tmp_path):
    directory = copy_policy_dir(
        tmp_path / "p", "policy_set: t\ntools: {}\n", rego={"custom.rego": "package aegis.custom\nbroken :=\n"}
    )
    with pytest.raises(PolicyError):
        EmbeddedEngine(build_bundle(directory))


def test_runtime_conflict_is_an_engine_error(tmp_path):
    # A custom module that makes `effect` conflict for one tool: evaluation fails → fail closed.
    conflict = 'package aegis\nimport rego.v1\neffect := "allow" if input.tool.args.explode == true\n'
    directory = copy_policy_dir(
        tmp_path / "p",
        "policy_set: t\ntools:\n  a.b: {match: {host: h, method: GET, path: /}}\n"
        "rules:\n  - {id: r, tools: [a.b], effect: deny}\n",
        rego={"conflict.rego": conflict},
    )
    engine = EmbeddedEngine(build_bundle(directory))
    with pytest.raises(EngineError):
        engine.evaluate(
            {
                "agent": {"scopes": ["*"]},
                "tool": {"name": "a.b", "args": {"explode": True}},
                "request": {"headers": {}},
                "context": {"calendars": {}},
            }
        )
