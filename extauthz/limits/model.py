"""Budgets and rate limits as the bundle data carries them (``data.budgets`` / ``data.rate_limits``,
written by ``extauthz/policy/generator.py``), turned into frozen values once per policy load."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from extauthz.identity import AgentIdentity

# Costs are counted in integer nano-units of the budget's currency: atomic integer
# increments in every backend, no float drift across thousands of additions.
COST_UNIT = 1_000_000_000
USAGE_KINDS = ("input_tokens", "output_tokens")


@dataclass(frozen=True)
class AgentSelector:
    """Which agents a limit applies to: every given list must match (each is any-of); empty: all."""

    ids: tuple[str, ...] = ()
    tenants: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()  # the agent holds one of these scopes (globs allowed)

    def matches(self, agent: AgentIdentity) -> bool:
        if self.ids and agent.agent_id not in self.ids:
            return False
        if self.tenants and agent.tenant not in self.tenants:
            return False
        return not self.scopes or any(fnmatchcase(s, p) for s in agent.scopes for p in self.scopes)

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> AgentSelector:
        data = data or {}
        return cls(tuple(data.get("ids", ())), tuple(data.get("tenants", ())), tuple(data.get("scopes", ())))


def _subject(per: str, agent: AgentIdentity) -> str:
    """Whose counter: the agent's own, its tenant's, or one shared by every matching agent."""
    if per == "agent":
        return f"agent:{agent.tenant}/{agent.agent_id}"
    if per == "tenant":
        return f"tenant:{agent.tenant}"
    return "all"


@dataclass(frozen=True)
class RateLimit:
    """A token bucket per agent (or tenant) x limit: ``rate`` calls per ``per_seconds``, ``burst`` at once."""

    id: str
    tools: frozenset[str]
    rate: float
    per_seconds: float
    burst: int
    per: str = "agent"
    agents: AgentSelector = field(default_factory=AgentSelector)
    on_store_error: str = "deny"  # deny | allow (only rate limits may fail open)

    @property
    def refill_per_s(self) -> float:
        return self.rate / self.per_seconds

    def key(self, agent: AgentIdentity) -> str:
        return f"rl:{self.id}:{_subject(self.per, agent)}"

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> RateLimit:
        return cls(
            id=data["id"],
            tools=frozenset(data["tools"]),
            rate=float(data["rate"]),
            per_seconds=float(data["per_seconds"]),
            burst=int(data["burst"]),
            per=data.get("per", "agent"),
            agents=AgentSelector.from_data(data.get("agents")),
            on_store_error=data.get("on_store_error", "deny"),
        )


@dataclass(frozen=True)
class Budget:
    """Calls and/or cost per day (in ``timezone``) for the matching agents and tools."""

    id: str
    tools: frozenset[str]
    timezone: str = "UTC"
    per: str = "agent"
    agents: AgentSelector = field(default_factory=AgentSelector)
    requests: int | None = None
    cost: int | None = None  # nano-units
    fixed_cost: int = 0  # nano-units charged per call in Check
    usage_prices: Mapping[str, int] = field(default_factory=dict)  # nano-units per token, read by ext_proc
    warn_at: float | None = None

    def window(self, now: float) -> tuple[str, float]:
        """(the local date naming today's window, when it ends) in the budget's time zone."""
        zone = zoneinfo.ZoneInfo(self.timezone)
        local = dt.datetime.fromtimestamp(now, zone)
        midnight = dt.datetime.combine(local.date() + dt.timedelta(days=1), dt.time(), tzinfo=zone)
        return local.date().isoformat(), midnight.timestamp()

    def key(self, kind: str, agent: AgentIdentity, day: str) -> str:
        return f"bud:{self.id}:{kind}:{_subject(self.per, agent)}:{day}"

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Budget:
        per_day = data.get("per_day", {})
        cost = data.get("cost") or {}
        prices = (cost.get("from_response") or {}).get("usage_prices", {})
        return cls(
            id=data["id"],
            tools=frozenset(data["tools"]),
            timezone=data.get("timezone", "UTC"),
            per=data.get("per", "agent"),
            agents=AgentSelector.from_data(data.get("agents")),
            requests=per_day.get("requests"),
            cost=to_units(per_day["cost"]) if "cost" in per_day else None,
            fixed_cost=to_units(cost.get("fixed", 0)),
            usage_prices={k: to_units(v) for k, v in prices.items()},
            warn_at=data.get("warn_at"),
        )


def to_units(amount: float) -> int:
    """An amount of money in the integer units the store counts."""
    return round(amount * COST_UNIT)


@dataclass(frozen=True)
class PolicyLimits:
    """Every limit of one policy version, indexed by tool."""

    rate_limits: Mapping[str, Sequence[RateLimit]] = field(default_factory=dict)
    budgets: Mapping[str, Sequence[Budget]] = field(default_factory=dict)

    @classmethod
    def from_bundle_data(cls, data: Mapping[str, Any]) -> PolicyLimits:
        rate_limits = [RateLimit.from_data(r) for r in data.get("rate_limits", ())]
        budgets = [Budget.from_data(b) for b in data.get("budgets", ())]
        by_tool_rl: dict[str, list[RateLimit]] = {}
        for r in rate_limits:
            for tool in sorted(r.tools):
                by_tool_rl.setdefault(tool, []).append(r)
        by_tool_b: dict[str, list[Budget]] = {}
        for b in budgets:
            for tool in sorted(b.tools):
                by_tool_b.setdefault(tool, []).append(b)
        return cls(by_tool_rl, by_tool_b)

    def for_call(self, agent: AgentIdentity, tool: str) -> tuple[list[RateLimit], list[Budget]]:
        return (
            [r for r in self.rate_limits.get(tool, ()) if r.agents.matches(agent)],
            [b for b in self.budgets.get(tool, ()) if b.agents.matches(agent)],
        )
