"""Stage 2b of the policy pipeline: ``budgets:`` and ``rate_limits:`` → validated bundle data.

The JSON Schema (``policy.schema.json``) checks shapes; this module the meaning: tool globs
that match nothing, duplicate ids across files, unknown time zones, cost settings without a
cost limit (and the reverse).  Errors name file, line and key like the rest of the language.
Limits are enforced in Python by Check (``extauthz/limits``), never by the engine, so the
data sits beside the rules (``data.budgets`` / ``data.rate_limits``), not in them.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from typing import Any

from extauthz.policy.source import PolicySource


def _tools(
    source: PolicySource, where: tuple[str | int, ...], patterns: list[str], catalogue: Iterable[str]
) -> list[str]:
    names: list[str] = []
    known = list(catalogue)
    for i, pattern in enumerate(patterns):
        found = [t for t in known if fnmatchcase(t, pattern)]
        if not found:
            raise source.error((*where, "tools", i), f"no tool in the catalogue matches {pattern!r}")
        names.extend(t for t in found if t not in names)
    return sorted(names)


def _budget(source: PolicySource, index: int, raw: Mapping[str, Any], catalogue: Iterable[str]) -> dict[str, Any]:
    where: tuple[str | int, ...] = ("budgets", index)
    timezone = raw.get("timezone", "UTC")
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise source.error((*where, "timezone"), f"unknown time zone {timezone!r}") from None
    per_day = dict(raw["per_day"])
    cost = raw.get("cost")
    if "cost" in per_day and not cost:
        raise source.error((*where, "per_day", "cost"), "a cost limit needs cost: {fixed: …} or {from_response: …}")
    if cost and "cost" not in per_day:
        raise source.error((*where, "cost"), "cost is only counted against per_day.cost; set it")
    data: dict[str, Any] = {
        "id": raw["id"],
        "tools": _tools(source, where, list(raw["tools"]), catalogue),
        "per": raw.get("per", "agent"),
        "per_day": per_day,
        "timezone": timezone,
        "source": f"{source.path.name}:{source.line_of(where)}",
    }
    for key in ("agents", "cost", "warn_at"):
        if key in raw:
            data[key] = raw[key]
    return data


def _rate_limit(source: PolicySource, index: int, raw: Mapping[str, Any], catalogue: Iterable[str]) -> dict[str, Any]:
    where: tuple[str | int, ...] = ("rate_limits", index)
    burst = raw.get("burst", max(1, int(raw["rate"])))
    if burst < 1:
        raise source.error((*where, "burst"), "burst must be at least 1")
    data: dict[str, Any] = {
        "id": raw["id"],
        "tools": _tools(source, where, list(raw["tools"]), catalogue),
        "per": raw.get("per", "agent"),
        "rate": raw["rate"],
        "per_seconds": raw["per_seconds"],
        "burst": burst,
        "on_store_error": raw.get("on_store_error", "deny"),
        "source": f"{source.path.name}:{source.line_of(where)}",
    }
    if "agents" in raw:
        data["agents"] = raw["agents"]
    return data


def parse_limits(
    sources: Iterable[PolicySource], catalogue: Iterable[str]
) -> tuple[tuple[dict[str, Any], ...], tuple[dict[str, Any], ...]]:
    """(budgets, rate limits) of every source, as bundle data; PolicyError on the first problem."""
    tools = list(catalogue)
    budgets: list[dict[str, Any]] = []
    rate_limits: list[dict[str, Any]] = []
    seen: dict[tuple[str, str], str] = {}
    for source in sources:
        doc = source.document
        for kind, parse, out in (("budgets", _budget, budgets), ("rate_limits", _rate_limit, rate_limits)):
            for index, raw in enumerate(doc.get(kind, [])):
                item = parse(source, index, raw, tools)
                if (kind, item["id"]) in seen:
                    first = seen[(kind, item["id"])]
                    raise source.error((kind, index, "id"), f"{kind[:-1]} id {item['id']!r} is already used in {first}")
                seen[(kind, item["id"])] = str(source.path)
                out.append(item)
    return tuple(budgets), tuple(rate_limits)
