"""The policy input document: the one dict both engines evaluate.

Keys (documented in docs/architecture.md)::

    agent:    {id, tenant, scopes, chain, labels}
    tool:     {name, args}
    request:  {method, host, path, query, headers}     # credentials removed
    context:  {purpose, now, calendars: {name: bool}}
    override: null | {...}

Facts that need a clock (calendar membership) are computed here, in Python, so the Rego
stays pure and every engine sees the same facts.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from extauthz.identity import AgentIdentity
from extauthz.metadata import HEADER_OVERRIDE, HEADER_PURPOSE
from extauthz.tools import HttpRequest, ToolCall

# Never handed to the engine (and so never to decision logs): they are credentials.
CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization", HEADER_OVERRIDE})
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@lru_cache(maxsize=64)
def _zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


def in_calendar(calendar: Mapping[str, Any], now: dt.datetime) -> bool:
    """Whether ``now`` (aware) falls in one of the calendar's windows and is not a holiday."""
    local = now.astimezone(_zone(calendar["timezone"]))
    if local.date().isoformat() in calendar.get("holidays", ()):
        return False
    day = _DAYS[local.weekday()]
    clock = local.strftime("%H:%M")
    return any(day in w["days"] and w["start"] <= clock < w["end"] for w in calendar["windows"])


def public_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Request headers without credentials and Envoy's pseudo-headers."""
    return {k: v for k, v in headers.items() if k not in CREDENTIAL_HEADERS and not k.startswith(":")}


def build_input(
    identity: AgentIdentity,
    call: ToolCall,
    request: HttpRequest,
    calendars: Mapping[str, Mapping[str, Any]],
    now: dt.datetime,
    override: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble the policy input for one call."""
    return {
        "agent": identity.to_input(),
        "tool": {"name": call.name, "args": dict(call.args)},
        "request": {
            "method": request.method,
            "host": request.host,
            "path": request.path,
            "query": request.query,
            "headers": public_headers(request.headers),
        },
        "context": {
            "purpose": request.headers.get(HEADER_PURPOSE),
            "now": now.isoformat(),
            "calendars": {name: in_calendar(cal, now) for name, cal in calendars.items()},
        },
        "override": dict(override) if override is not None else None,
    }
