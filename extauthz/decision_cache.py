"""The decision cache: identical calls skip the tool match and the engine.

An agent repeats itself (the same CRM lookup, the same search), and on the native engine
the tool match, the policy input, the engine and the rendered reasons are a pure function
of a few request fields, the agent's identity and which calendars are open.  ``CallKey``
is exactly those fields; a hit returns the ``ToolCall`` and ``Decision`` computed for the
same key under the same ``ActivePolicy`` (each policy version has its own cache, so a
reload starts empty).

What is *not* cached, because it changes between identical calls: JWT verification and
expiry, header limits, override tokens and method-override headers (calls carrying one are
never cached: the full path verifies or refuses them), rate limits
and budgets, pending approvals, the decision id and the decision log.  Engines that may
read anything, the clock included (Rego via regopy or OPA), have ``headers_read`` None and
get no cache.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from extauthz.decision import Decision
from extauthz.identity import AgentIdentity
from extauthz.metadata import HEADER_OVERRIDE, HEADER_PURPOSE
from extauthz.policy_input import in_calendar
from extauthz.tools import OVERRIDE_HEADERS, HttpRequest, ToolCall

DEFAULT_ENTRIES = 512
# Bodies are part of the key (compared byte for byte, never hashed down): bigger bodies
# are not cached, which bounds the cache at entries times (this + parsed arguments).
MAX_CACHED_BODY_BYTES = 4096

# Calls carrying these always take the full path: an approval's override token is verified
# against the call, and method/URL override headers are refused by the tool match.
_UNCACHED_HEADERS = frozenset({HEADER_OVERRIDE, *OVERRIDE_HEADERS})

CallKey = tuple[Hashable, ...]


@dataclass(frozen=True)
class CachedDecision:
    call: ToolCall
    decision: Decision


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    entries: int = 0


class DecisionCache:
    """A bounded LRU of decisions for one policy version; safe to use from many threads."""

    def __init__(
        self,
        headers_read: frozenset[str],
        calendars: Mapping[str, Mapping[str, Any]],
        max_entries: int = DEFAULT_ENTRIES,
        stats: CacheStats | None = None,
    ) -> None:
        # Headers the decision depends on: those the rules test, the purpose (quoted in
        # reasons) and the content type (how the body parses).
        self._headers = tuple(sorted(headers_read | {HEADER_PURPOSE, "content-type"}))
        self._calendars = calendars
        self._max_entries = max_entries
        self._entries: OrderedDict[CallKey, CachedDecision] = OrderedDict()
        self._lock = threading.Lock()
        self._open_calendars: tuple[int, tuple[bool, ...]] = (-1, ())
        # Shared across policy versions (the service's metrics) so the counters only grow.
        self.stats = stats if stats is not None else CacheStats()
        self.stats.entries = 0

    def key(self, identity: AgentIdentity, request: HttpRequest, now: float) -> CallKey | None:
        """The call's key, or None when the call must not be cached."""
        headers = request.headers
        if len(request.body) > MAX_CACHED_BODY_BYTES or not _UNCACHED_HEADERS.isdisjoint(headers):
            return None
        return (
            identity.agent_id,
            identity.tenant,
            identity.scopes,
            identity.chain,
            tuple(sorted(identity.labels.items())) if identity.labels else (),
            identity.parent_scopes,
            request.method,
            request.host,
            request.path,
            request.query,
            request.body,
            tuple(headers.get(name) for name in self._headers),
            self._calendar_facts(now),
        )

    def get(self, key: CallKey) -> CachedDecision | None:
        with self._lock:
            hit = self._entries.get(key)
            if hit is None:
                self.stats.misses += 1
                return None
            self._entries.move_to_end(key)
            self.stats.hits += 1
            return hit

    def put(self, key: CallKey, call: ToolCall, decision: Decision) -> None:
        with self._lock:
            self._entries[key] = CachedDecision(call, decision)
            if len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
            self.stats.entries = len(self._entries)

    def _calendar_facts(self, now: float) -> tuple[bool, ...]:
        """Which calendars are open: windows are whole minutes (HH:MM) and every time zone's
        offset is whole minutes, so the facts hold for the UTC minute they were computed in."""
        if not self._calendars:
            return ()
        minute = int(now // 60)
        computed_for, facts = self._open_calendars
        if computed_for != minute:
            moment = dt.datetime.fromtimestamp(now, dt.UTC)
            facts = tuple(in_calendar(calendar, moment) for calendar in self._calendars.values())
            self._open_calendars = (minute, facts)
        return facts
