"""Policy tests: YAML test cases run against a bundle (``aegis policy test``).

A test file (``policies/tests/*.yaml``)::

    defaults:                       # optional, merged into every case
      agent: {id: support-bot, tenant: acme, scopes: [payments.refund]}
    cases:
      - name: a small refund is allowed
        agent: {id, tenant, scopes, chain}     # chain: delegating parents, nearest first
        tool: payments.refund                  # null: a call no tool matches
        args: {amount: 20}
        headers: {x-aegis-purpose: support}
        time: 2026-11-24T15:00:00Z             # ISO 8601 with a zone; drives calendars
        expect: {effect: allow, rules: [refund-auto-approved]}

Each case becomes the same policy input the gateway builds (``policy_input.build_input``;
calendar membership from ``time`` through ``in_calendar``), so a passing test says what
the gateway will decide.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from extauthz.decision import Decision, Effect
from extauthz.errors import PolicyError
from extauthz.identity import AgentIdentity
from extauthz.policy.bundle import Bundle
from extauthz.policy.source import PolicySource, read_policy_file
from extauthz.policy_input import build_input
from extauthz.tools import HttpRequest, ToolCall

CASE_KEYS = frozenset({"name", "agent", "tool", "args", "headers", "time", "expect"})
AGENT_KEYS = frozenset({"id", "tenant", "scopes", "chain", "labels", "parent_scopes"})
EXPECT_KEYS = frozenset({"effect", "rules"})
EFFECTS = tuple(e.value for e in Effect)


@dataclass(frozen=True)
class CallSpec:
    """A tool call as a test or ``aegis policy eval`` describes it."""

    agent: AgentIdentity
    tool: str | None
    args: Mapping[str, Any] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    time: dt.datetime | None = None

    def policy_input(self, bundle: Bundle) -> dict[str, Any]:
        """The input document the gateway would build for this call under ``bundle``."""
        spec = bundle.data.get("tools", {}).get(self.tool) if self.tool else None
        match = (spec or {}).get("match", {})
        request = HttpRequest(
            method=str(match.get("method", "POST")),
            host=str(match.get("host", "unknown.invalid")),
            path=str(match.get("path", "/")),
            query="",
            headers={k.lower(): v for k, v in self.headers.items()},
        )
        now = self.time or dt.datetime.now(dt.UTC)
        return build_input(self.agent, ToolCall(self.tool, dict(self.args)), request, bundle.data["calendars"], now)


@dataclass(frozen=True)
class TestCase:
    """One named case with its expectation and where it is written."""

    name: str
    location: str  # file:line
    call: CallSpec
    effect: str
    rules: tuple[str, ...] | None = None


@dataclass(frozen=True)
class CaseResult:
    """A case's decisions by engine and what went wrong (empty: passed)."""

    case: TestCase
    decisions: Mapping[str, Decision]
    problems: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.problems


def parse_time(value: Any, where: str) -> dt.datetime:
    """ISO 8601 with a zone (YAML may already have parsed it into a datetime)."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise PolicyError(f"{where}: time: expected ISO 8601 such as 2026-11-24T15:00:00Z, got {value!r}") from None
    if not isinstance(value, dt.datetime) or value.tzinfo is None:
        raise PolicyError(f"{where}: time: expected ISO 8601 with a zone (…Z or …+01:00), got {value!r}")
    return value


def parse_agent(raw: Any, where: str) -> AgentIdentity:
    """``{id, tenant, scopes, chain, labels}`` → AgentIdentity."""
    if not isinstance(raw, dict) or not {"id", "tenant"} <= set(raw):
        raise PolicyError(f"{where}: agent: expected a mapping with id and tenant (and scopes, chain)")
    unknown = sorted(set(raw) - AGENT_KEYS)
    if unknown:
        raise PolicyError(f"{where}: agent: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(AGENT_KEYS))})")
    return AgentIdentity(
        agent_id=str(raw["id"]),
        tenant=str(raw["tenant"]),
        scopes=tuple(str(s) for s in raw.get("scopes", ())),
        chain=tuple(str(s) for s in raw.get("chain", ())),
        labels={str(k): str(v) for k, v in (raw.get("labels") or {}).items()},
        parent_scopes=tuple(str(s) for s in raw["parent_scopes"]) if "parent_scopes" in raw else None,
    )


def load_cases(path: Path) -> list[TestCase]:
    """Every case of a test file, or of every ``*.yaml`` in a directory (sorted)."""
    if not path.exists():
        raise PolicyError(f"{path}: no such test file or directory")
    files = sorted(p for p in path.iterdir() if p.suffix in {".yaml", ".yml"}) if path.is_dir() else [path]
    cases: list[TestCase] = []
    for file in files:
        cases.extend(_file_cases(read_policy_file(file)))
    return cases


def _file_cases(source: PolicySource) -> list[TestCase]:
    doc = source.document
    if not isinstance(doc, dict) or not isinstance(doc.get("cases"), list):
        raise source.error((), "a test file is a mapping with a 'cases' list (and optional 'defaults')")
    unknown = sorted(set(doc) - {"cases", "defaults", "description"})
    if unknown:
        raise source.error((unknown[0],), "unknown key (allowed: cases, defaults, description)")
    defaults = doc.get("defaults") or {}
    if not isinstance(defaults, dict) or set(defaults) - (CASE_KEYS - {"name", "expect"}):
        raise source.error(("defaults",), "defaults may set agent, tool, args, headers and time")
    return [_case(source, index, {**defaults, **raw}) for index, raw in enumerate(doc["cases"])]


def _case(source: PolicySource, index: int, raw: Any) -> TestCase:
    location = ("cases", index)
    where = f"{source.path}:{source.line_of(location)}"
    if not isinstance(raw, dict):
        raise source.error(location, "a case is a mapping")
    unknown = sorted(set(raw) - CASE_KEYS)
    if unknown:
        raise source.error((*location, unknown[0]), f"unknown key (allowed: {', '.join(sorted(CASE_KEYS))})")
    for key in ("name", "agent", "expect"):
        if key not in raw:
            raise source.error(location, f"a case needs {key!r}")
    expect = raw["expect"]
    if not isinstance(expect, dict) or expect.get("effect") not in EFFECTS or set(expect) - EXPECT_KEYS:
        raise source.error((*location, "expect"), f"expect: {{effect: {'|'.join(EFFECTS)}, rules: [rule ids]}}")
    rules = expect.get("rules")
    if rules is not None and not (isinstance(rules, list) and all(isinstance(r, str) for r in rules)):
        raise source.error((*location, "expect", "rules"), "expected a list of rule ids")
    args, headers = raw.get("args") or {}, raw.get("headers") or {}
    if not isinstance(args, dict) or not isinstance(headers, dict):
        raise source.error(location, "args and headers are mappings")
    tool = raw.get("tool")
    return TestCase(
        name=str(raw["name"]),
        location=where,
        call=CallSpec(
            agent=parse_agent(raw["agent"], where),
            tool=None if tool is None else str(tool),
            args=dict(args),
            headers={str(k): str(v) for k, v in headers.items()},
            time=parse_time(raw["time"], where) if "time" in raw else None,
        ),
        effect=expect["effect"],
        rules=tuple(sorted(rules)) if rules is not None else None,
    )


def outcome(decision: Decision) -> str:
    """``effect [rule, …]``: what a test compares, in one line."""
    return f"{decision.effect.value} [{', '.join(decision.rules)}]"


def check_case(case: TestCase, engines: Mapping[str, Any], bundle: Bundle) -> CaseResult:
    """Decide the case with every engine; compare with the expectation and across engines."""
    document = case.call.policy_input(bundle)
    decisions: dict[str, Decision] = {}
    problems: list[str] = []
    for kind, engine in engines.items():
        try:
            decision = decisions[kind] = engine.evaluate(document)
        except Exception as exc:  # any failure is a failed case, reported with the engine's message
            problems.append(f"{kind}: evaluation failed: {getattr(exc, 'message', exc)}")
            continue
        if decision.effect.value != case.effect:
            problems.append(f"{kind}: expected effect {case.effect}, got {outcome(decision)}")
        elif case.rules is not None and tuple(sorted(decision.rules)) != case.rules:
            problems.append(f"{kind}: expected rules [{', '.join(case.rules)}], got {outcome(decision)}")
    distinct = {kind: outcome(d) for kind, d in decisions.items()}
    if len(set(decisions.values())) > 1:
        problems.append("engines disagree: " + "; ".join(f"{k}: {v}" for k, v in distinct.items()))
    return CaseResult(case, decisions, tuple(problems))


def run_cases(cases: Sequence[TestCase], engines: Mapping[str, Any], bundle: Bundle) -> list[CaseResult]:
    """Every case through every engine."""
    return [check_case(case, engines, bundle) for case in cases]


def report(results: Sequence[CaseResult], verbose: bool = False) -> list[str]:
    """``opa test``-style lines: FAIL (always) and PASS (verbose) lines, then the summary."""
    lines: list[str] = []
    for result in results:
        if result.passed:
            if verbose:
                lines.append(f"PASS: {result.case.name} ({result.case.location})")
            continue
        lines.append(f"FAIL: {result.case.name} ({result.case.location})")
        lines.extend(f"    {problem}" for problem in result.problems)
    passed = sum(r.passed for r in results)
    lines.append("-" * 80)
    lines.append(f"{passed} passed, {len(results) - passed} failed")
    return lines
