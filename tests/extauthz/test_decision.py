"""``Decision``'s derived strings are kept per instance: a cached decision answers many calls,
and a decision rewritten with ``dataclasses.replace`` (rendered reasons, a shadow default)
must not carry the old instance's strings."""

from __future__ import annotations

from dataclasses import replace

from extauthz.decision import Decision, Effect, Reason, ShadowResult, with_shadow_default


def _decision() -> Decision:
    return Decision(Effect.DENY, (Reason("refund-cap", "over {max}"),), "v1")


def test_a_replaced_decision_has_its_own_rules_reason_and_shadow_outcome() -> None:
    first = _decision()
    assert (first.rules, first.reason, first.would) == (("refund-cap",), "over {max}", "")
    rendered = replace(first, reasons=(Reason("refund-cap", "over 500"), Reason("tenant", "other tenant")))
    assert rendered.rules == ("refund-cap", "tenant")
    assert rendered.reason == "over 500; other tenant"
    shadowed = with_shadow_default(first, {"mode": "shadow", "declared_default_effect": "deny"})
    assert shadowed.would == "would_deny:default-deny"
    assert first.would == "" and first.reason == "over {max}"  # the original is untouched


def test_reading_the_derived_strings_does_not_change_equality() -> None:
    read, unread = _decision(), _decision()
    assert read.rules and read.reason is not None and read.would == ""
    assert read == unread and hash(read) == hash(unread)
    assert read != replace(unread, shadow=(ShadowResult("r", "deny", "m"),))
