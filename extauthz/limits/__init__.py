"""Budgets and rate limits: declared in policy (``budgets:`` / ``rate_limits:``), enforced in
Python by Check after the engine lets a call through, counted in the shared Store.

    model.py    bundle data → ``PolicyLimits`` (budgets, rate limits, agent selectors)
    enforce.py  the Check step: rate limits, then budgets → 429 ``LimitExceeded`` / 503
    usage.py    ext_proc's side: token usage in OpenAI / Anthropic responses → budget cost
"""

from __future__ import annotations

from extauthz.limits.enforce import LimitEnforcer, UsageCharge, record_usage
from extauthz.limits.model import AgentSelector, Budget, PolicyLimits, RateLimit
from extauthz.limits.usage import usage_tokens

__all__ = [
    "AgentSelector",
    "Budget",
    "LimitEnforcer",
    "PolicyLimits",
    "RateLimit",
    "UsageCharge",
    "record_usage",
    "usage_tokens",
]
