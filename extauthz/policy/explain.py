"""Why a decision came out as it did (``aegis policy eval``), built from the bundle data.

The decision itself comes from an engine; the explanation re-walks the called tool's rules
in Python (the same condition semantics as the native engine, ``compile_condition``) and
says, for every rule, whether it matched and otherwise which condition failed and on
what value.  Custom Rego is invisible here: the explanation covers the YAML rules only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from extauthz.decision import Decision, render_reason
from extauthz.engine.native import compile_condition
from extauthz.policy.bundle import Bundle

_PATHS = {
    "arg": ("tool", "args"),
    "header": ("request", "headers"),
    "agent": ("agent",),
    "calendar": ("context", "calendars"),
}
_MISSING = "(missing)"


def subject_value(document: Mapping[str, Any], subject: Mapping[str, str]) -> Any:
    """The value a condition subject reads from the policy input, or ``(missing)``."""
    node: Any = document
    for part in (*_PATHS[subject["kind"]], subject["key"]):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def describe_condition(condition: Mapping[str, Any]) -> str:
    """``arg amount gt 500`` / ``arg tenant_id eq agent.tenant`` / ``calendar business_hours is true``."""
    subject = condition["subject"]
    if subject["kind"] == "calendar":
        return f"calendar {subject['key']} is {json.dumps(condition['value'])}"
    ref = condition.get("ref")
    operand = f"{ref['kind']}.{ref['key']}" if ref else json.dumps(condition["value"])
    return f"{subject['kind']} {subject['key']} {condition['op']} {operand}"


def _shown(value: Any) -> str:
    return value if value == _MISSING else json.dumps(value)


def explain_rule(rule: Mapping[str, Any], document: Mapping[str, Any]) -> tuple[bool, str]:
    """(matched, one line): the first failing condition with the value it saw."""
    mode = " [shadow]" if rule["mode"] == "shadow" else ""
    head = f"{rule['id']} ({rule['effect']}{mode})"
    for condition in rule["when"]:
        if not compile_condition(condition)(document):
            seen = _shown(subject_value(document, condition["subject"]))
            detail = f"{describe_condition(condition)} failed ({condition['subject']['key']} = {seen}"
            if condition.get("ref"):
                detail += f", {condition['ref']['kind']}.{condition['ref']['key']} = "
                detail += _shown(subject_value(document, condition["ref"]))
            return False, f"no match  {head}: {detail})"
    conditions = ", ".join(describe_condition(c) for c in rule["when"]) or "no conditions"
    return True, f"MATCH     {head}: {conditions}"


def explain(bundle: Bundle, document: Mapping[str, Any], decision: Decision) -> list[str]:
    """The decision, its reasons and obligations, then every rule of the called tool."""
    tool = (document.get("tool") or {}).get("name")
    variables = {**(document.get("tool") or {}).get("args", {}), "tool": tool or ""}
    variables.setdefault("purpose", (document.get("context") or {}).get("purpose") or "(none)")
    lines = [f"decision: {decision.effect.value}  (policy_version {decision.policy_version})", "reasons:"]
    lines += [f"  {r.rule}: {render_reason(r.message, variables)}" for r in decision.reasons]
    obligations = decision.obligations
    if obligations.needs_redaction:
        lines.append(
            f"redact: fields [{', '.join(obligations.redact_fields)}], "
            f"detectors [{', '.join(obligations.redact_detectors)}]"
        )
    if obligations.approval is not None:
        approval = obligations.approval
        lines.append(f"approval: by {approval.approvers} within {approval.ttl_s:g}s (rule {approval.rule})")
    lines += [f"shadow: {s.rule} would {s.effect}: {render_reason(s.message, variables)}" for s in decision.shadow]
    tools = bundle.data.get("tools", {})
    if tool not in tools:
        lines.append(f"tool: {tool or '(none)'} is not in the catalogue, so the built-in default-deny applies")
        return lines
    lines.append(f"rules for {tool} (default effect {tools[tool]['default_effect']}):")
    rules = bundle.data["rules_by_tool"].get(tool, [])
    lines += [f"  {explain_rule(rule, document)[1]}" for rule in rules]
    if not rules:
        lines.append("  (no rules)")
    calendars = (document.get("context") or {}).get("calendars") or {}
    if calendars:
        lines.append(
            "calendars: " + ", ".join(f"{k}={'open' if v else 'closed'}" for k, v in sorted(calendars.items()))
        )
    return lines
