"""Stage 1 and 2 of the policy pipeline: YAML documents → validated ``PolicySet``.

Schema checks (JSON Schema, ``policy.schema.json``) come first, then semantic checks that
a schema cannot express: unknown tools in rules, duplicate ids across files, regexes that
do not compile, calendars with an unknown time zone, operators that do not fit a subject.
Every error names file, line and key.
"""

from __future__ import annotations

import json
import re
import zoneinfo
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import re2

from extauthz.config_fields import parse_duration
from extauthz.errors import PolicyError
from extauthz.policy.limits import parse_limits
from extauthz.policy.source import PolicySource, read_policy_file
from extauthz.tools import ArgSpec, ToolSpec

DEFAULT_APPROVAL_TTL_S = 3600.0
SUBJECTS = ("arg", "header", "agent", "label", "calendar")
OPERATORS = (
    *("eq", "ne", "in", "not_in", "lt", "lte", "gt", "gte", "matches"),
    *("contains", "not_contains", "exists", "is"),  # "is" last: calendars only
)
_SCHEMA_PATH = Path(__file__).with_name("policy.schema.json")
# Errors are reported as PolicyErrors; RE2's own logging to stderr would only be noise.
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False


@dataclass(frozen=True)
class Condition:
    """One ``when`` entry, normalised: subject, operator, literal value or reference."""

    subject: tuple[str, str]  # (kind, key)
    op: str
    value: Any = None
    ref: tuple[str, str] | None = None

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "subject": {"kind": self.subject[0], "key": self.subject[1]},
            "op": self.op,
            "value": self.value,
        }
        if self.ref is not None:
            data["ref"] = {"kind": self.ref[0], "key": self.ref[1]}
        return data


@dataclass(frozen=True)
class Rule:
    """A validated rule; ``tools`` is expanded (globs resolved against the catalogue)."""

    id: str
    policy_set: str
    tools: tuple[str, ...]
    when: tuple[Condition, ...]
    effect: str
    mode: str
    reason: str
    redact_fields: tuple[str, ...] = ()
    redact_detectors: tuple[str, ...] = ()
    # A body over dlp.max_body_bytes: refused with 413 ("block"), or passed on unredacted
    # ("pass") when the rule says so explicitly (redact.over_limit).
    redact_over_limit: str = "block"
    approvers: str | None = None
    approval_ttl_s: float = DEFAULT_APPROVAL_TTL_S
    # Approval budget: live pending approvals one agent may hold under this rule (None: no limit).
    approval_max_pending: int | None = None
    source: str = ""


@dataclass(frozen=True)
class Calendar:
    """Named business-hours windows in a time zone, minus holidays."""

    name: str
    timezone: str
    windows: tuple[tuple[tuple[str, ...], str, str], ...]
    holidays: tuple[str, ...] = ()

    def to_data(self) -> dict[str, Any]:
        return {
            "timezone": self.timezone,
            "windows": [{"days": list(d), "start": s, "end": e} for d, s, e in self.windows],
            "holidays": list(self.holidays),
        }


@dataclass(frozen=True)
class PolicySet:
    """Every YAML file of a policy directory, merged and validated."""

    tools: Mapping[str, ToolSpec]
    default_effects: Mapping[str, str]  # tool → default effect of the set that defines it
    tool_modes: Mapping[str, str]  # tool → mode (enforce | shadow) of the set that defines it
    calendars: Mapping[str, Calendar]
    rules: tuple[Rule, ...]
    sets: tuple[str, ...] = field(default=())
    # Budgets and rate limits as bundle data (extauthz/policy/limits.py; enforced by Check).
    budgets: tuple[dict[str, Any], ...] = ()
    rate_limits: tuple[dict[str, Any], ...] = ()


@cache
def _validator() -> jsonschema.protocols.Validator:
    schema = json.loads(_SCHEMA_PATH.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def policy_files(directory: Path) -> list[Path]:
    """The YAML policy files of a directory, sorted (the order is part of the version)."""
    if not directory.is_dir():
        raise PolicyError(f"{directory}: policy directory does not exist")
    return sorted(p for p in directory.iterdir() if p.suffix in {".yaml", ".yml"} and p.is_file())


def load_policy_dir(directory: Path) -> PolicySet:
    """Read, schema-check and merge every policy file of ``directory``."""
    files = policy_files(directory)
    if not files:
        raise PolicyError(f"{directory}: no policy files (*.yaml)")
    return parse_sources([read_policy_file(p) for p in files])


def parse_sources(sources: Iterable[PolicySource]) -> PolicySet:
    """Merge parsed sources into one PolicySet, failing on the first problem."""
    sources = list(sources)
    for source in sources:
        _schema_check(source)
    tools: dict[str, ToolSpec] = {}
    defaults: dict[str, str] = {}
    modes: dict[str, str] = {}
    calendars: dict[str, Calendar] = {}
    origin: dict[str, str] = {}
    for source in sources:
        doc = source.document
        for name, raw in doc.get("tools", {}).items():
            if name in tools:
                raise source.error(("tools", name), f"tool {name!r} is already defined in {origin[name]}")
            tools[name] = _tool(name, raw)
            defaults[name] = doc.get("default_effect", "deny")
            modes[name] = doc.get("mode", "enforce")
            origin[name] = str(source.path)
        for name, raw in doc.get("calendars", {}).items():
            if name in calendars:
                raise source.error(("calendars", name), f"calendar {name!r} is defined twice")
            calendars[name] = _calendar(source, name, raw)
    _check_routes(sources, tools)
    rules: list[Rule] = []
    seen: dict[str, str] = {}
    for source in sources:
        doc = source.document
        for index, raw in enumerate(doc.get("rules", [])):
            rule = _rule(source, index, raw, doc, tools, calendars)
            if rule.id in seen:
                raise source.error(("rules", index, "id"), f"rule id {rule.id!r} is already used in {seen[rule.id]}")
            seen[rule.id] = str(source.path)
            rules.append(rule)
    budgets, rate_limits = parse_limits(sources, tools)
    return PolicySet(
        tools=tools,
        default_effects=defaults,
        tool_modes=modes,
        calendars=calendars,
        rules=tuple(rules),
        sets=tuple(s.document["policy_set"] for s in sources),
        budgets=budgets,
        rate_limits=rate_limits,
    )


def _schema_check(source: PolicySource) -> None:
    if not isinstance(source.document, dict):
        raise PolicyError(f"{source.path}:1: a policy file must be a mapping with a policy_set key")
    errors = sorted(_validator().iter_errors(source.document), key=lambda e: list(e.absolute_path))
    if errors:
        error = min(errors, key=lambda e: len(e.absolute_path) * -1)  # deepest first: most precise
        location = tuple(error.absolute_path)
        raise source.error(location, _schema_message(error))


def _schema_message(error: jsonschema.ValidationError) -> str:
    if error.validator == "additionalProperties":
        return str(error.message).replace("Additional properties are not allowed", "unknown key")
    if error.validator == "oneOf" and error.path and error.path[-1] in {"eq", "ne"}:
        return "expected a string, number, boolean or {ref: arg.X | header.X | agent.X}"
    return str(error.message)


def _tool(name: str, raw: Mapping[str, Any]) -> ToolSpec:
    match = raw["match"]
    return ToolSpec(
        name=name,
        host=match["host"],
        method=match["method"],
        path=match["path"],
        body=raw.get("body", "json"),
        mcp_tool=match.get("mcp_tool"),
        args={k: ArgSpec(v.get("type"), bool(v.get("required", False))) for k, v in raw.get("args", {}).items()},
    )


def _check_routes(sources: list[PolicySource], tools: Mapping[str, ToolSpec]) -> None:
    seen: dict[tuple[str, str, str, str | None], str] = {}
    where = {name: source for source in sources for name in source.document.get("tools", {})}
    for spec in tools.values():
        key = (spec.host, spec.method, spec.path, spec.mcp_tool)
        if key in seen:
            raise where[spec.name].error(
                ("tools", spec.name, "match"),
                f"tools {seen[key]!r} and {spec.name!r} have the same match ({spec.method} {spec.host}{spec.path})",
            )
        seen[key] = spec.name


def _calendar(source: PolicySource, name: str, raw: Mapping[str, Any]) -> Calendar:
    try:
        zoneinfo.ZoneInfo(raw["timezone"])
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise source.error(("calendars", name, "timezone"), f"unknown time zone {raw['timezone']!r}") from None
    windows = []
    for index, window in enumerate(raw["windows"]):
        if window["start"] >= window["end"]:
            raise source.error(("calendars", name, "windows", index), "start must be before end")
        windows.append((tuple(window["days"]), window["start"], window["end"]))
    return Calendar(name, raw["timezone"], tuple(windows), tuple(raw.get("holidays", [])))


def _rule(
    source: PolicySource,
    index: int,
    raw: Mapping[str, Any],
    doc: Mapping[str, Any],
    tools: Mapping[str, ToolSpec],
    calendars: Mapping[str, Calendar],
) -> Rule:
    where = ("rules", index)
    names: list[str] = []
    for i, pattern in enumerate(raw["tools"]):
        found = [t for t in tools if fnmatchcase(t, pattern)]
        if not found:
            raise source.error((*where, "tools", i), f"no tool in the catalogue matches {pattern!r}")
        names.extend(t for t in found if t not in names)
    conditions = tuple(_condition(source, (*where, "when", i), c, calendars) for i, c in enumerate(raw.get("when", [])))
    effect = raw["effect"]
    redact = raw.get("redact", {})
    approval = raw.get("approval")
    if effect == "sanitize" and not (redact.get("fields") or redact.get("detectors")):
        raise source.error(where, "a sanitize rule needs redact.fields or redact.detectors")
    if effect == "approval_needed" and approval is None:
        raise source.error(where, "an approval_needed rule needs approval.approvers")
    if redact and effect not in {"sanitize"}:
        raise source.error((*where, "redact"), "redact is only meaningful with effect: sanitize")
    ttl = DEFAULT_APPROVAL_TTL_S
    if approval and "expires_in" in approval:
        ttl = parse_duration(approval["expires_in"])
    return Rule(
        id=raw["id"],
        policy_set=doc["policy_set"],
        tools=tuple(names),
        when=conditions,
        effect=effect,
        mode=raw.get("mode", doc.get("mode", "enforce")),
        reason=raw.get("reason") or raw.get("description") or f"rule {raw['id']} ({effect})",
        redact_fields=tuple(redact.get("fields", [])),
        redact_detectors=tuple(redact.get("detectors", [])),
        redact_over_limit=redact.get("over_limit", "block"),
        approvers=approval["approvers"] if approval else None,
        approval_ttl_s=ttl,
        approval_max_pending=approval.get("max_pending_per_agent") if approval else None,
        source=f"{source.path.name}:{source.line_of(where)}",
    )


def _condition(
    source: PolicySource, where: tuple[str | int, ...], raw: Mapping[str, Any], calendars: Mapping[str, Calendar]
) -> Condition:
    subjects = [k for k in SUBJECTS if k in raw]
    ops = [k for k in OPERATORS if k in raw]
    if len(subjects) != 1:
        raise source.error(where, f"a condition names exactly one of {', '.join(SUBJECTS)}")
    kind = subjects[0]
    key = str(raw[kind])
    if kind == "calendar":
        if key not in calendars:
            raise source.error((*where, "calendar"), f"unknown calendar {key!r}")
        if ops not in ([], ["is"]):
            raise source.error(where, "a calendar condition takes only 'is: true|false'")
        return Condition((kind, key), "eq", bool(raw.get("is", True)))
    if len(ops) != 1 or ops == ["is"]:
        raise source.error(where, f"a condition needs exactly one operator of {', '.join(OPERATORS[:-1])}")
    op = ops[0]
    value = raw[op]
    if op == "matches":
        _check_regex(source, (*where, op), value)
    if isinstance(value, dict):  # {ref: agent.tenant}
        ref_kind, _, ref_key = value["ref"].partition(".")
        return Condition((kind, key), op, None, (ref_kind, ref_key))
    return Condition((kind, key), op, list(value) if isinstance(value, list) else value)


def _check_regex(source: PolicySource, where: tuple[str | int, ...], pattern: str) -> None:
    # Policy regexes run in RE2-style engines (RE2 in the native engine and rego-cpp, Go's
    # regexp in OPA), whose matching time is linear in the input: validating with RE2 itself
    # refuses what they lack (backreferences, lookaround, possessive quantifiers, atomic
    # groups, repetition counts over 1000) with the file and line, not at activation.
    if re.search(r"\\[1-9]|\(\?[=!<]", pattern):
        raise source.error(where, "backreferences and lookaround are not RE2 syntax")
    try:
        re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        detail = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise source.error(where, f"invalid regular expression (RE2 syntax): {detail}") from None
