"""``aegis policy diff``: what a policy change does to the test cases' outcomes.

Both versions decide every case; the cases whose outcome (effect and rules) changes are
listed in a table, with the rules the change adds and removes.  A review aid, so it
always exits 0: a changed outcome may be exactly the point of the change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from extauthz.engine import PolicyEngine
from extauthz.policy.bundle import Bundle
from extauthz.policy.testing import TestCase, outcome


@dataclass(frozen=True)
class OutcomeChange:
    """A case decided differently by the new version."""

    case: TestCase
    old: str
    new: str


def changed_outcomes(
    cases: Sequence[TestCase], old: tuple[Bundle, PolicyEngine], new: tuple[Bundle, PolicyEngine]
) -> list[OutcomeChange]:
    """The cases whose ``effect [rules]`` differs between the two versions."""
    changes = []
    for case in cases:
        before = outcome(old[1].evaluate(case.call.policy_input(old[0])))
        after = outcome(new[1].evaluate(case.call.policy_input(new[0])))
        if before != after:
            changes.append(OutcomeChange(case, before, after))
    return changes


def rule_ids(bundle: Bundle) -> set[str]:
    """Every rule id of a bundle."""
    return {r["id"] for rules in bundle.data["rules_by_tool"].values() for r in rules}


def diff_report(old: Bundle, new: Bundle, cases: Sequence[TestCase], changes: Sequence[OutcomeChange]) -> list[str]:
    """Header, rule changes, then the table of changed outcomes."""
    lines = [f"policy_version {old.revision} -> {new.revision}"]
    added, removed = sorted(rule_ids(new) - rule_ids(old)), sorted(rule_ids(old) - rule_ids(new))
    if added:
        lines.append(f"rules added: {', '.join(added)}")
    if removed:
        lines.append(f"rules removed: {', '.join(removed)}")
    lines.append(f"{len(changes)} of {len(cases)} test cases change outcome")
    if changes:
        header = ("case", "old", "new")
        rows = [(c.case.name, c.old, c.new) for c in changes]
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
        lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return lines
