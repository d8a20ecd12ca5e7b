"""Stage 3 of the policy pipeline: ``PolicySet`` → bundle data (``data.aegis.policy``).

The Rego library (``policies/lib/aegis/decision.rego``) interprets this document.  Rules
are stored per tool (``rules_by_tool``) because rego-cpp evaluates every rule body on
every query: indexing by tool means a decision only pays for the called tool's rules.
"""

from __future__ import annotations

from typing import Any

from extauthz.policy.parser import PolicySet, Rule

DATA_FORMAT = 1


def rule_data(rule: Rule) -> dict[str, Any]:
    """One rule as the Rego library reads it."""
    return {
        "id": rule.id,
        "effect": rule.effect,
        "mode": rule.mode,
        "reason": rule.reason,
        "when": [c.to_data() for c in rule.when],
        "redact": _redact_data(rule),
        "approval": _approval_data(rule),
    }


def _redact_data(rule: Rule) -> dict[str, Any]:
    """The rule's redaction; ``over_limit`` only when it passes (so other bundles keep their version)."""
    data: dict[str, Any] = {"fields": list(rule.redact_fields), "detectors": list(rule.redact_detectors)}
    if rule.redact_over_limit == "pass":
        data["over_limit"] = "pass"
    return data


def _approval_data(rule: Rule) -> dict[str, Any] | None:
    """The rule's approval; ``max_pending_per_agent`` only when set (the Authorizer reads it)."""
    if not rule.approvers:
        return None
    data: dict[str, Any] = {"approvers": rule.approvers, "ttl_s": rule.approval_ttl_s}
    if rule.approval_max_pending is not None:
        data["max_pending_per_agent"] = rule.approval_max_pending
    return data


def _defaults(declared: str, mode: str) -> dict[str, str]:
    """A shadow set lets its calls through: its rules are all shadow rules and its default is
    allow; the declared default is kept so the would-be answer can be reported."""
    effective = "allow" if mode == "shadow" else declared
    return {"default_effect": effective, "declared_default_effect": declared, "mode": mode}


def generate_data(policy: PolicySet) -> dict[str, Any]:
    """The ``data.aegis.policy`` document for a policy set."""
    rules_by_tool: dict[str, list[dict[str, Any]]] = {name: [] for name in policy.tools}
    for rule in policy.rules:
        encoded = rule_data(rule)
        for tool in rule.tools:
            rules_by_tool[tool].append(encoded)
    data: dict[str, Any] = {
        "format": DATA_FORMAT,
        "sets": list(policy.sets),
        "tools": {
            name: {**spec.to_data(), **_defaults(policy.default_effects[name], policy.tool_modes[name])}
            for name, spec in sorted(policy.tools.items())
        },
        "calendars": {name: cal.to_data() for name, cal in sorted(policy.calendars.items())},
        "rules_by_tool": rules_by_tool,
    }
    # Enforced in Python by Check (extauthz/limits), not by the engine; only present when
    # declared, so policies without limits keep their bundle (and policy_version).
    if policy.budgets:
        data["budgets"] = list(policy.budgets)
    if policy.rate_limits:
        data["rate_limits"] = list(policy.rate_limits)
    return data
