"""Generated policy sets for the engine benchmark: N rules spread over ~20 tools.

Every tool looks like a real API route (JSON body, a tenant path parameter, typed
arguments); rules cycle through the condition kinds real policies use: numeric
thresholds, ``in`` / ``not_in``, ``matches``, header and agent references, a calendar.
Effects are mostly ``allow`` with ``deny``, ``sanitize`` and ``approval_needed`` mixed in,
so the engines evaluate every effect and combine them.  Deterministic: the same N gives
the same YAML (and so the same ``policy_version``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
LIBRARY = REPO / "policies" / "lib"
TOOL_COUNT = 20
RULE_COUNTS = (10, 50, 200)
AGENT = "bench-bot"
TENANT = "acme"
PURPOSES = ("support", "investigation", "billing", "audit")
REGIONS = ("eu", "us", "apac", "latam")
Condition = dict[str, Any]


def tool_name(index: int) -> str:
    return f"svc{index:02d}.update"


def tool_host(index: int) -> str:
    return f"svc{index:02d}.bench"


def _tool(index: int) -> dict[str, Any]:
    return {
        "description": f"Update an item of service {index}.",
        "match": {"host": tool_host(index), "method": "POST", "path": "/tenants/{tenant_id}/items"},
        "body": "json",
        "args": {
            "amount": {"type": "number", "required": True},
            "region": {"type": "string"},
            "ticket": {"type": "string"},
            "priority": {"type": "integer"},
            "note": {"type": "string"},
        },
    }


# Condition kinds, chosen by rule number; ``k`` varies thresholds and lists between rules.
_CONDITIONS: tuple[Callable[[int], list[Condition]], ...] = (
    lambda k: [{"arg": "amount", "lte": 100 + 10 * k}],
    lambda k: [{"arg": "region", "in": list(REGIONS[: 1 + k % 3])}, {"arg": "amount", "gt": 5 * k}],
    lambda k: [{"arg": "region", "not_in": list(REGIONS[k % 2 :: 2])}],
    lambda k: [{"arg": "ticket", "matches": f"^T-{k % 9}[0-9]{{3,6}}$"}],
    lambda k: [{"header": "x-aegis-purpose", "in": list(PURPOSES[: 1 + k % 4])}],
    lambda k: [{"arg": "tenant_id", "eq": {"ref": "agent.tenant"}}, {"arg": "priority", "gte": k % 5}],
    lambda k: [{"arg": "tenant_id", "ne": {"ref": "agent.tenant"}}],
    lambda k: [{"calendar": "business_hours", "is": k % 2 == 0}, {"agent": "id", "ne": f"blocked-{k}"}],
    lambda k: [{"header": "x-aegis-purpose", "exists": False}],
    lambda k: [{"arg": "amount", "gt": 1000 + 50 * k}, {"arg": "priority", "lt": 3}],
)
# Effects by the condition kind above (the cross-tenant and missing-purpose rules deny).
_EFFECTS = ("allow", "allow", "allow", "sanitize", "allow", "allow", "deny", "allow", "deny", "approval_needed")


def _rule(number: int) -> dict[str, Any]:
    # Tool ``number % 20`` gets every condition kind in turn as the set grows.
    kind = (number + number // TOOL_COUNT) % len(_CONDITIONS)
    k = number // len(_CONDITIONS)
    effect = _EFFECTS[kind]
    rule: dict[str, Any] = {
        "id": f"r{number:03d}-{effect.replace('_', '-')}",
        "tools": [tool_name(number % TOOL_COUNT)],
        "when": _CONDITIONS[kind](k),
        "effect": effect,
        "reason": f"rule {number} ({effect}) for {{tool}}, amount {{amount}}",
    }
    if effect == "sanitize":
        rule["redact"] = {"fields": ["note"], "detectors": ["EMAIL", "SSN"]}
    if effect == "approval_needed":
        rule["approval"] = {"approvers": "bench-leads", "expires_in": "1h"}
    return rule


def policy_set(rules: int, *, threshold_shift: int = 0) -> dict[str, Any]:
    """The YAML document of a ``rules``-rule set over :data:`TOOL_COUNT` tools.

    ``threshold_shift`` moves one threshold (rule 0's) so reloads get a new version.
    """
    generated = [_rule(n) for n in range(rules)]
    if threshold_shift and generated:
        generated[0]["when"] = [{"arg": "amount", "lte": 100 + threshold_shift}]
    return {
        "policy_set": f"bench{rules}",
        "description": f"Generated benchmark policy: {rules} rules over {TOOL_COUNT} tools.",
        "default_effect": "deny",
        "calendars": {
            "business_hours": {
                "timezone": "Europe/Berlin",
                "windows": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "18:00"}],
                "holidays": ["2026-12-25"],
            }
        },
        "tools": {tool_name(i): _tool(i) for i in range(TOOL_COUNT)},
        "rules": generated,
    }


def write_policy_dir(target: Path, rules: int, *, threshold_shift: int = 0) -> Path:
    """A policy directory: the repo's Rego library and the generated set (``bench.yaml``)."""
    target.mkdir(parents=True, exist_ok=True)
    shutil.copytree(LIBRARY, target / "lib", dirs_exist_ok=True)
    text = yaml.safe_dump(policy_set(rules, threshold_shift=threshold_shift), sort_keys=False)
    (target / "bench.yaml").write_text(text, encoding="utf-8")
    return target


@dataclass(frozen=True)
class Call:
    """One tool call as the agent sends it (host, path, headers, JSON body)."""

    name: str
    host: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    def body_bytes(self) -> bytes:
        return json.dumps(self.body, separators=(",", ":")).encode()


def sample_calls() -> list[Call]:
    """Calls that exercise different tools, conditions and effects (allow, deny, sanitize...)."""
    calls = []
    for i, (amount, region, purpose, tenant) in enumerate(
        [
            (20.0, "eu", "support", TENANT),
            (480.0, "us", "investigation", TENANT),
            (2500.0, "apac", "billing", TENANT),
            (60.0, "latam", "audit", "other"),
            (15.0, "eu", "", TENANT),
            (300.0, "us", "support", TENANT),
            (99.5, "apac", "investigation", TENANT),
            (5000.0, "eu", "support", "other"),
        ]
    ):
        tool = (i * 7) % TOOL_COUNT
        headers = {"content-type": "application/json"}
        if purpose:
            headers["x-aegis-purpose"] = purpose
        body = {"amount": amount, "region": region, "ticket": f"T-{i}{1000 + i}", "priority": i % 5, "note": "ok"}
        calls.append(Call(tool_name(tool), tool_host(tool), f"/tenants/{tenant}/items", headers, body))
    return calls


def allowed_call() -> Call:
    """A call every generated set lets through (allow or sanitize): tool 0, small amount, own tenant."""
    headers = {"content-type": "application/json", "x-aegis-purpose": "support"}
    body = {"amount": 20.0, "region": "eu", "ticket": "T-01000", "priority": 2, "note": "refund for c-1"}
    return Call(tool_name(0), tool_host(0), f"/tenants/{TENANT}/items", headers, body)


def scopes() -> list[str]:
    return [tool_name(i) for i in range(TOOL_COUNT)]
