"""The budget and rate-limit step of Check, and the usage ext_proc adds after the response.

Order inside the step: rate limits first (a throttled call spends no budget), then budgets.
Each counter is one atomic store operation, so replicas sharing a Redis store never admit
more than a limit between them.  A call refused by a later limit has already spent the
earlier ones (the counters are not rolled back: the error is on the safe side).

Store failures: budgets fail closed (``StoreError`` → 503 store_unavailable); a rate limit
fails closed too unless it says ``on_store_error: allow``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from extauthz.errors import LimitExceeded, StoreError
from extauthz.identity import AgentIdentity
from extauthz.limits.model import COST_UNIT, Budget, PolicyLimits
from extauthz.store import Store
from extauthz.telemetry import Metrics

log = logging.getLogger("aegis.limits")
WEBHOOK_TIMEOUT_S = 5.0

# Reasons (the JSON ``error`` of a 429, the metric label).
RATE_LIMITED = "rate_limited"
BUDGET_EXHAUSTED = "budget_exhausted"


@dataclass(frozen=True)
class UsageCharge:
    """A cost budget ext_proc adds response usage to (travels in the MD_USAGE metadata)."""

    budget: str
    key: str
    expires_at: float
    prices: Mapping[str, int]  # nano-units per token, by usage kind
    limit: int
    warn_at: float | None = None

    def to_data(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "key": self.key,
            "expires_at": self.expires_at,
            "prices": dict(self.prices),
            "limit": self.limit,
            "warn_at": self.warn_at,
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> UsageCharge:
        return cls(
            str(data["budget"]),
            str(data["key"]),
            float(data["expires_at"]),
            {str(k): int(v) for k, v in data["prices"].items()},
            int(data["limit"]),
            data.get("warn_at"),
        )


def encode_charges(charges: Sequence[UsageCharge]) -> str:
    return json.dumps([c.to_data() for c in charges], separators=(",", ":"))


def decode_charges(raw: object) -> tuple[UsageCharge, ...]:
    """The charges from the metadata value; malformed metadata reads as none."""
    if not isinstance(raw, str) or not raw:
        return ()
    try:
        return tuple(UsageCharge.from_data(d) for d in json.loads(raw))
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError):
        return ()


Notify = Callable[[Mapping[str, Any]], None]


class BudgetWarner:
    """Once per budget window, when the counter crosses ``warn_at``: log, metric, webhook."""

    def __init__(self, store: Store, metrics: Metrics, notify: Notify | None = None) -> None:
        self._store = store
        self._metrics = metrics
        self._notify = notify

    def check(
        self, budget: str, key: str, value: int, limit: int, warn_at: float | None, expires_at: float, now: float
    ) -> None:
        if warn_at is None or value < warn_at * limit:
            return
        try:
            if not self._store.mark_once(f"warn:{key}", expires_at, now):
                return
        except StoreError:
            return  # a warning is advice: never the reason a call fails
        event = {"event": "budget.warning", "budget": budget, "counter": key, "used": value, "limit": limit}
        log.warning("budget warning", extra={"aegis": event})
        self._metrics.budget_warnings.labels(budget).inc()
        if self._notify is not None:
            self._notify(event)


class LimitEnforcer:
    """Runs the rate limits and budgets that apply to one call."""

    def __init__(self, store: Store, metrics: Metrics, warner: BudgetWarner) -> None:
        self._store = store
        self._metrics = metrics
        self.warner = warner

    def enforce(self, limits: PolicyLimits, agent: AgentIdentity, tool: str, now: float) -> list[UsageCharge]:
        """Count the call; raise LimitExceeded (429) or StoreError (503).  Returns the cost
        budgets ext_proc must add the response's usage to."""
        rate_limits, budgets = limits.for_call(agent, tool)
        # 1. Rate limits: one token from each bucket.
        for limit in rate_limits:
            try:
                wait = self._store.take_token(limit.key(agent), limit.burst, limit.refill_per_s, now)
            except StoreError:
                if limit.on_store_error != "allow":
                    raise
                log.warning("rate limit skipped: store unavailable", extra={"aegis": {"limit": limit.id}})
                self._metrics.limit_refusals.labels(limit.id, "store_error_allowed").inc()
                continue
            if wait > 0:
                self._metrics.limit_refusals.labels(limit.id, RATE_LIMITED).inc()
                raise LimitExceeded(
                    RATE_LIMITED,
                    f"rate limit {limit.id}: {limit.rate:g} calls per {limit.per_seconds:g} s exceeded",
                    limit_id=limit.id,
                    retry_after_s=wait,
                )
        # 2. Budgets: requests and fixed cost counted now, response cost by ext_proc.
        charges: list[UsageCharge] = []
        for budget in budgets:
            day, ends = budget.window(now)
            if budget.requests is not None:
                self._spend(budget, budget.key("requests", agent, day), 1, budget.requests, ends, now, "requests")
            if budget.cost is not None:
                key = budget.key("cost", agent, day)
                self._spend(budget, key, budget.fixed_cost, budget.cost, ends, now, "cost")
                if budget.usage_prices:
                    charges.append(UsageCharge(budget.id, key, ends, budget.usage_prices, budget.cost, budget.warn_at))
        return charges

    def _spend(self, budget: Budget, key: str, amount: int, limit: int, ends: float, now: float, kind: str) -> None:
        allowed, value = self._store.consume_budget(key, amount, limit, ends, now)
        if not allowed:
            self._metrics.limit_refusals.labels(budget.id, BUDGET_EXHAUSTED).inc()
            shown = f"{limit / COST_UNIT:g} cost" if kind == "cost" else f"{limit} requests"
            raise LimitExceeded(
                BUDGET_EXHAUSTED,
                f"budget {budget.id}: {shown} per day used (resets at midnight {budget.timezone})",
                limit_id=budget.id,
                retry_after_s=ends - now,
            )
        self.warner.check(budget.id, key, value, limit, budget.warn_at, ends, now)


def record_usage(
    store: Store, warner: BudgetWarner | None, charges: Sequence[UsageCharge], tokens: Mapping[str, int], now: float
) -> None:
    """Add a response's token usage x prices to its cost budgets (raises StoreError)."""
    for charge in charges:
        amount = sum(tokens.get(kind, 0) * price for kind, price in charge.prices.items())
        if amount <= 0:
            continue
        value = store.add_usage(charge.key, amount, charge.expires_at, now)
        if warner is not None:
            warner.check(charge.budget, charge.key, value, charge.limit, charge.warn_at, charge.expires_at, now)


class UsageRecorder:
    """ext_proc's hook: a response's usage → its cost budgets.  The response has already
    been answered, so a failure is logged and counted, never raised."""

    def __init__(self, store: Store, warner: BudgetWarner | None, metrics: Metrics) -> None:
        self._store = store
        self._warner = warner
        self._metrics = metrics

    def __call__(self, charges: Sequence[UsageCharge], tokens: Mapping[str, int]) -> None:
        try:
            record_usage(self._store, self._warner, charges, tokens, time.time())
        except StoreError as exc:
            self._metrics.usage_errors.inc()
            budgets = [c.budget for c in charges]
            log.warning("usage not recorded", extra={"aegis": {"error": exc.code, "budgets": budgets}})


def webhook_notify(url: str, secret_env: str) -> Notify:
    """Post warnings to the approvals' generic webhook (same HMAC signature), off the hot path."""
    secret = os.environ.get(secret_env, "").encode() if secret_env else b""

    def post(event: Mapping[str, Any]) -> None:
        body = json.dumps(event, separators=(",", ":")).encode()
        timestamp = str(int(time.time()))
        headers = {"content-type": "application/json", "x-aegis-timestamp": timestamp}
        if secret:
            digest = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
            headers["x-aegis-signature"] = f"v1={digest}"

        def send() -> None:
            try:
                httpx.post(url, content=body, headers=headers, timeout=WEBHOOK_TIMEOUT_S)
            except httpx.HTTPError:
                log.warning("budget warning webhook failed", extra={"aegis": {"budget": event.get("budget")}})

        threading.Thread(target=send, name="aegis-budget-warning", daemon=True).start()

    return post


__all__ = [
    "BUDGET_EXHAUSTED",
    "RATE_LIMITED",
    "BudgetWarner",
    "LimitEnforcer",
    "UsageCharge",
    "UsageRecorder",
    "decode_charges",
    "encode_charges",
    "record_usage",
    "webhook_notify",
]
