"""``aegis policy lint``: the parser's errors plus warnings about policies that parse but
probably do not say what their author meant.

Warnings (each names file:line):

- ``unreachable``: a rule that can never take effect — an enforced unconditional deny
  covers all its tools (deny always wins), or its own conditions contradict each other
  (``gt: 500`` and ``lt: 10`` on the same argument, ``in: []``, ``exists: false`` with
  another test of the same value…);
- ``overlap``: two rules with identical conditions on a common tool but different effects
  (the more restrictive always wins, the other is dead);
- ``calendar``: a calendar with no window on any weekday (Mon-Fri);
- ``redacted-in-reason``: a reason template quotes a field that a sanitize rule of the
  same tool redacts (the reason reaches the agent and the logs).
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from extauthz.errors import PolicyError
from extauthz.policy.parser import Condition, PolicySet, Rule, parse_sources, policy_files
from extauthz.policy.source import PolicySource, read_policy_file

_RANK = {"allow": 0, "sanitize": 1, "approval_needed": 2, "deny": 3}
_WEEKDAYS = {"mon", "tue", "wed", "thu", "fri"}
_LOCATED = re.compile(r"^(?P<where>.+?:\d+): (?P<message>.*)$", re.DOTALL)


@dataclass(frozen=True)
class Finding:
    """One lint result: ``file:line: level: message``."""

    where: str
    level: str  # error | warning
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.level}: {self.message}"


def lint_dir(directory: Path) -> list[Finding]:
    """Parse (errors) then lint (warnings) a policy directory."""
    try:
        files = policy_files(directory)
        if not files:
            raise PolicyError(f"{directory}: no policy files (*.yaml)")
        sources = [read_policy_file(p) for p in files]
        policy = parse_sources(sources)
    except PolicyError as exc:
        match = _LOCATED.match(exc.message)
        where, message = (match["where"], match["message"]) if match else (str(directory), exc.message)
        return [Finding(where, "error", message)]
    return lint_policy(policy, sources)


def lint_policy(policy: PolicySet, sources: Iterable[PolicySource]) -> list[Finding]:
    """Every warning for a parsed policy set."""
    lines = _Lines(list(sources))
    findings: list[Finding] = []
    findings += _unconditional_denies(policy.rules, lines)
    findings += _contradictions(policy.rules, lines)
    findings += _overlaps(policy.rules, lines)
    findings += _calendars(policy, lines)
    findings += _redacted_in_reason(policy.rules, lines)
    return sorted(findings, key=lambda f: (f.where.rsplit(":", 1)[0], int(f.where.rsplit(":", 1)[1]), f.message))


class _Lines:
    """file:line of rules (by id) and calendars (by name)."""

    def __init__(self, sources: list[PolicySource]) -> None:
        self.rules: dict[str, str] = {}
        self.calendars: dict[str, str] = {}
        for source in sources:
            doc = source.document
            for index, raw in enumerate(doc.get("rules", [])):
                self.rules[raw["id"]] = f"{source.path}:{source.line_of(('rules', index))}"
            for name in doc.get("calendars", {}):
                self.calendars[name] = f"{source.path}:{source.line_of(('calendars', name))}"


def _unconditional_denies(rules: tuple[Rule, ...], lines: _Lines) -> list[Finding]:
    denies = [r for r in rules if r.effect == "deny" and not r.when and r.mode == "enforce"]
    findings = []
    for rule in rules:
        for deny in denies:
            if deny is not rule and set(rule.tools) <= set(deny.tools) and rule.effect != "deny":
                findings.append(
                    Finding(
                        lines.rules[rule.id],
                        "warning",
                        f"unreachable: rule {rule.id!r} can never take effect: rule {deny.id!r} "
                        f"({lines.rules[deny.id]}) denies every call to {', '.join(rule.tools)} unconditionally",
                    )
                )
                break
    return findings


def contradiction(conditions: Iterable[Condition]) -> str | None:
    """Why a rule's conditions can never all hold, or None."""
    by_subject: dict[tuple[str, str], list[Condition]] = {}
    for c in conditions:
        by_subject.setdefault(c.subject, []).append(c)
    for (kind, key), group in by_subject.items():
        name = f"{kind} {key}"
        literal = [c for c in group if c.ref is None]
        why = _range_conflict(literal) or _value_conflict(literal)
        if why:
            return f"{name}: {why}"
        if any(c.op == "exists" and c.value is False for c in group) and any(c.op != "exists" for c in group):
            return f"{name}: 'exists: false' with another condition that needs the value"
        if {c.value for c in group if c.op == "exists"} == {True, False}:
            return f"{name}: 'exists: true' and 'exists: false'"
    return None


def _range_conflict(conditions: list[Condition]) -> str | None:
    lows = [(c.value, c.op == "gte") for c in conditions if c.op in {"gt", "gte"}]
    highs = [(c.value, c.op == "lte") for c in conditions if c.op in {"lt", "lte"}]
    for low, low_incl in lows:
        for high, high_incl in highs:
            if low > high or (low == high and not (low_incl and high_incl)):
                return f"no number is {'>=' if low_incl else '>'} {low} and {'<=' if high_incl else '<'} {high}"
    return None


def _value_conflict(conditions: list[Condition]) -> str | None:
    for c in conditions:
        if c.op == "in" and c.value == []:
            return "'in: []' never holds"
    equals = [c.value for c in conditions if c.op == "eq"]
    if len({repr(v) for v in equals}) > 1:
        return f"equal to both {equals[0]!r} and {equals[1]!r}"
    for value in equals:
        for c in conditions:
            if c.op == "ne" and c.value == value:
                return f"'eq: {value!r}' and 'ne: {value!r}'"
            if c.op == "in" and value not in c.value:
                return f"'eq: {value!r}' but 'in' does not list it"
            if c.op == "not_in" and value in c.value:
                return f"'eq: {value!r}' but 'not_in' lists it"
    return None


def _contradictions(rules: tuple[Rule, ...], lines: _Lines) -> list[Finding]:
    findings = []
    for rule in rules:
        why = contradiction(rule.when)
        if why:
            findings.append(
                Finding(lines.rules[rule.id], "warning", f"unreachable: rule {rule.id!r} never matches: {why}")
            )
    return findings


def _overlaps(rules: tuple[Rule, ...], lines: _Lines) -> list[Finding]:
    findings = []
    for i, first in enumerate(rules):
        for second in rules[i + 1 :]:
            common = sorted(set(first.tools) & set(second.tools))
            if not common or first.effect == second.effect or first.mode != second.mode:
                continue
            if _conditions_key(first) != _conditions_key(second):
                continue
            weak, strong = sorted((first, second), key=lambda r: _RANK[r.effect])
            findings.append(
                Finding(
                    lines.rules[weak.id],
                    "warning",
                    f"overlap: rules {weak.id!r} ({weak.effect}) and {strong.id!r} ({strong.effect}, "
                    f"{lines.rules[strong.id]}) have identical conditions for {', '.join(common)}: "
                    f"{strong.effect} always wins",
                )
            )
    return findings


def _conditions_key(rule: Rule) -> list[str]:
    return sorted(json.dumps(c.to_data(), sort_keys=True) for c in rule.when)


def _calendars(policy: PolicySet, lines: _Lines) -> list[Finding]:
    findings = []
    for name, calendar in sorted(policy.calendars.items()):
        days = {d for window in calendar.windows for d in window[0]}
        if not days & _WEEKDAYS:
            findings.append(
                Finding(lines.calendars[name], "warning", f"calendar: {name!r} has no window on any weekday (mon-fri)")
            )
    return findings


def template_fields(template: str) -> set[str]:
    """The ``{placeholders}`` of a reason template."""
    try:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name}
    except ValueError:
        return set()


def _redacted_in_reason(rules: tuple[Rule, ...], lines: _Lines) -> list[Finding]:
    redacted: dict[str, dict[str, str]] = {}  # tool → field → rule redacting it
    for rule in rules:
        for tool in rule.tools:
            for name in rule.redact_fields:
                redacted.setdefault(tool, {}).setdefault(name, rule.id)
    findings = []
    for rule in rules:
        quoted = template_fields(rule.reason)
        hits: dict[str, Any] = {
            name: redacted[tool][name] for tool in rule.tools for name in quoted if name in redacted.get(tool, {})
        }
        for name, by in sorted(hits.items()):
            findings.append(
                Finding(
                    lines.rules[rule.id],
                    "warning",
                    f"redacted-in-reason: rule {rule.id!r} quotes {{{name}}} in its reason, a field rule {by!r} "
                    "redacts (reasons reach the agent and the logs)",
                )
            )
    return findings
