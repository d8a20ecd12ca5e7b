"""The native engine: the YAML rule language compiled to Python closures — the fast path.

It implements exactly what ``policies/lib/aegis/decision.rego`` computes, for bundles whose
only Rego is that library (custom Rego always goes through a Rego engine).  The library's
hash is pinned below: editing the Rego without updating this module makes ``supports()``
false, so the bundle falls back to regopy rather than diverging silently.  The
conformance suite (tests/extauthz/policy/test_conformance.py) runs every case, and
random policies and inputs, through this engine, regopy and OPA and asserts identical
decisions.

Rego semantics mirrored on purpose: a missing value makes a condition false (never an
error); numbers never equal booleans; ordering operators apply to numbers only; ``matches``
is an unanchored RE2 search.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import re2

from extauthz.decision import Decision, decision_from_result
from extauthz.errors import EngineError
from extauthz.identity import scope_grants
from extauthz.policy.bundle import Bundle

LIBRARY_PATH = "lib/aegis/decision.rego"
# sha256 of the Rego library this module mirrors (update both together).
LIBRARY_SHA256 = "3f9eec4860b366fc9c7f3fe876ca1608c836f26f631073a2f76b3d10bef924a3"

_MISSING = object()
Predicate = Callable[[Mapping[str, Any]], bool]
Getter = Callable[[Mapping[str, Any]], Any]


def library_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def supports(bundle: Bundle) -> bool:
    """True when the bundle's only Rego is the library this engine mirrors."""
    modules = dict(bundle.modules)
    library = modules.pop(LIBRARY_PATH, None)
    return library is not None and not modules and library_digest(library) == LIBRARY_SHA256


def _getter(kind: str, key: str) -> Getter:
    path = {
        "arg": ("tool", "args"),
        "header": ("request", "headers"),
        "agent": ("agent",),
        "label": ("agent", "labels"),
    }.get(kind)
    if path is None:  # calendar
        path = ("context", "calendars")

    def get(document: Mapping[str, Any]) -> Any:
        node: Any = document
        for part in path:
            node = node.get(part, _MISSING) if isinstance(node, dict) else _MISSING
            if node is _MISSING:
                return _MISSING
        return node.get(key, _MISSING) if isinstance(node, dict) else _MISSING

    return get


def rego_equal(a: Any, b: Any) -> bool:
    """Rego equality: like Python's, except booleans never equal numbers."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(rego_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(rego_equal(a[k], b[k]) for k in a)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "lt": lambda v, o: v < o,
    "lte": lambda v, o: v <= o,
    "gt": lambda v, o: v > o,
    "gte": lambda v, o: v >= o,
}


def compile_condition(condition: Mapping[str, Any]) -> Predicate:
    """One ``when`` entry (bundle data form) → a predicate over the policy input."""
    subject = _getter(condition["subject"]["kind"], condition["subject"]["key"])
    op = condition["op"]
    ref = condition.get("ref")
    literal = condition["value"]
    operand: Getter = _getter(ref["kind"], ref["key"]) if ref else (lambda _d: literal)
    if op == "exists":
        expected = condition["value"]
        return lambda d: rego_equal(expected, subject(d) is not _MISSING)
    if op == "matches":
        pattern = re2.compile(condition["value"])
        return lambda d: isinstance(v := subject(d), str) and pattern.search(v) is not None
    if op in _ORDER:
        compare = _ORDER[op]

        def ordered(d: Mapping[str, Any]) -> bool:
            v, o = subject(d), operand(d)
            if not _is_number(v) or o is _MISSING:
                return False
            # Rego orders numbers before every other type.
            return compare(v, o) if _is_number(o) else op in {"lt", "lte"}

        return ordered

    if op in {"contains", "not_contains"}:
        # The operand is always a literal (the schema allows no reference here).
        def membership(d: Mapping[str, Any]) -> bool:
            v = subject(d)
            if not isinstance(v, list):
                return False
            hit = any(rego_equal(x, literal) for x in v)
            return hit if op == "contains" else not hit

        return membership

    def compared(d: Mapping[str, Any]) -> bool:
        v, o = subject(d), operand(d)
        if v is _MISSING or o is _MISSING:
            return False
        if op == "eq":
            return rego_equal(v, o)
        if op == "ne":
            return not rego_equal(v, o)
        if not isinstance(o, list):
            return False
        hit = any(rego_equal(x, v) for x in o)
        return hit if op == "in" else not hit

    if op not in {"eq", "ne", "in", "not_in"}:
        raise EngineError(f"unknown operator {op!r} in bundle data")
    return compared


@dataclass(frozen=True)
class CompiledRule:
    """A rule with its conditions compiled."""

    data: Mapping[str, Any]
    conditions: tuple[Predicate, ...]

    def matches(self, document: Mapping[str, Any]) -> bool:
        return all(condition(document) for condition in self.conditions)


def _scope_grants(scope: Any, tool: str) -> bool:
    return isinstance(scope, str) and scope_grants(scope, tool)


class NativeEngine:
    """The compiled fast path (see module docstring for when it applies)."""

    def __init__(self, bundle: Bundle) -> None:
        if not supports(bundle):
            raise EngineError("the native engine only evaluates bundles whose Rego is the Aegis library")
        self._bundle = bundle
        policy = bundle.data
        self._tools: Mapping[str, Mapping[str, Any]] = policy["tools"]
        self._rules: dict[str, tuple[CompiledRule, ...]] = {
            tool: tuple(CompiledRule(r, tuple(compile_condition(c) for c in r["when"])) for r in rules)
            for tool, rules in policy["rules_by_tool"].items()
        }
        self._headers_read = frozenset(
            operand["key"]
            for rules in policy["rules_by_tool"].values()
            for rule in rules
            for condition in rule["when"]
            for operand in (condition["subject"], condition.get("ref") or {})
            if operand.get("kind") == "header"
        )

    @property
    def policy_version(self) -> str:
        return self._bundle.revision

    @property
    def headers_read(self) -> frozenset[str]:
        # Rules read only args, headers, agent fields, labels and calendars (_getter).
        return self._headers_read

    def evaluate(self, policy_input: Mapping[str, Any]) -> Decision:
        try:
            result = self._decide(policy_input)
        except Exception as exc:
            raise EngineError(f"policy evaluation failed ({exc.__class__.__name__})") from exc
        return decision_from_result(result, self._bundle.revision)

    def _decide(self, document: Mapping[str, Any]) -> dict[str, Any]:
        name = (document.get("tool") or {}).get("name")
        tool = name if isinstance(name, str) else ""
        known = isinstance(name, str) and name in self._tools
        builtin: list[dict[str, str]] = []
        if not known:
            builtin.append(
                {"rule": "default-deny", "message": "unknown tool: no tool in the catalogue matches this call"}
            )
        elif not any(_scope_grants(s, tool) for s in (document.get("agent") or {}).get("scopes") or ()):
            builtin.append({"rule": "scope-missing", "message": f"the token's scopes do not include {tool}"})
        matched = [r.data for r in self._rules.get(tool, ()) if r.matches(document)] if known else []
        enforced = [r for r in matched if r["mode"] == "enforce"]
        effects = {r["effect"] for r in enforced} | ({"deny"} if builtin else set())
        effect = next((e for e in ("deny", "approval_needed", "sanitize", "allow") if e in effects), None)
        if effect is None:
            effect = self._tools[tool]["default_effect"]
        if builtin:
            reasons = builtin
        elif effects:
            reasons = [{"rule": r["id"], "message": r["reason"]} for r in enforced if r["effect"] == effect]
        else:
            message = f"no rule matched; the default for {tool} is {effect}"
            reasons = [{"rule": f"default-{effect}", "message": message}]
        approval = None
        approval_rules = [r for r in enforced if r["effect"] == "approval_needed"]
        if effect == "approval_needed" and approval_rules:
            rule = min(approval_rules, key=lambda r: r["id"])
            approval = {
                "approvers": rule["approval"]["approvers"],
                "ttl_s": rule["approval"]["ttl_s"],
                "rule": rule["id"],
            }
        redact: dict[str, Any] = {
            "fields": sorted({f for r in enforced for f in r["redact"]["fields"]}),
            "detectors": sorted({d for r in enforced for d in r["redact"]["detectors"]}),
        }
        # Over the size limit: pass unredacted only if every rule asking for redaction says so.
        redacting = [r for r in enforced if r["redact"]["fields"] or r["redact"]["detectors"]]
        if redacting and all(r["redact"].get("over_limit") == "pass" for r in redacting):
            redact["over_limit"] = "pass"
        return {
            "effect": effect,
            "reasons": reasons,
            "obligations": {
                "redact": redact,
                "approval": approval,
            },
            "shadow": [
                {"rule": r["id"], "effect": r["effect"], "message": r["reason"]}
                for r in matched
                if r["mode"] == "shadow"
            ],
        }
