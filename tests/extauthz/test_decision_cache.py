"""The decision cache (extauthz/decision_cache.py): identical calls share a decision, and
nothing a decision depends on is left out of the key.  Every test drives a real Authorizer
on the repo's policies (native engine); the last one compares a cached and an uncached
Authorizer over a grid of calls that vary every input the rules read.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import time
import zoneinfo
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import POLICIES, copy_policy_dir, write_config
from prometheus_client import generate_latest

from extauthz.answer import Answer
from extauthz.authorizer import Authorizer, activate
from extauthz.config import load_config
from extauthz.decision import Decision, Effect
from extauthz.decision_cache import MAX_CACHED_BODY_BYTES, DecisionCache
from extauthz.devtokens import mint_token
from extauthz.errors import ConfigError
from extauthz.identity import AgentIdentity, TokenVerifier, keyset_from_config
from extauthz.policy.bundle import build_bundle
from extauthz.server import Service, build_service
from extauthz.tools import HttpRequest, ToolCall

NEW_YORK = zoneinfo.ZoneInfo("America/New_York")
# A Tuesday: 16:59 in New York is inside business hours, 17:00 is not.
OPEN = dt.datetime(2026, 11, 24, 16, 59, 30, tzinfo=NEW_YORK).timestamp()
CLOSED = dt.datetime(2026, 11, 24, 17, 0, 0, tzinfo=NEW_YORK).timestamp()
SCOPES = ["payments.refund", "slack.post_message", "crm.*"]

RATE_LIMITED = """
policy_set: limits
rate_limits:
  - id: refunds-per-agent
    agents: {ids: [rate-bot]}
    tools: [payments.refund]
    rate: 1
    per_seconds: 60
    burst: 2
"""


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    policy_dir = copy_policy_dir(tmp_path / "policy", RATE_LIMITED)
    for name in ("support.yaml", "delegation.yaml"):
        (policy_dir / name).write_text((POLICIES / name).read_text(encoding="utf-8"), encoding="utf-8")
    svc = build_service(load_config(write_config(tmp_path, policy_dir=policy_dir)))
    yield svc
    svc.close()


def authorizer_at(
    service: Service, clock: Clock, *, cached: bool = True, token_clock: Clock | None = None
) -> Authorizer:
    """An Authorizer on the service's policy whose clock the test moves (tokens are minted
    now, so the verifier keeps the real time unless ``token_clock`` is given)."""
    policy = service.authorizer.policy
    assert policy is not None
    if not cached:
        policy = activate(policy.bundle, "native", decision_cache_entries=0)
    config = service.config.identity
    return Authorizer(
        TokenVerifier(config, keyset_from_config(config), clock=token_clock or time.time),
        service.store,
        policy=policy,
        base_url="http://aegis.test",
        max_body_bytes=65536,
        clock=clock,
    )


def request(
    service: Service,
    host: str,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    method: str = "POST",
    agent: str = "support-bot",
    scopes: list[str] = SCOPES,
    headers: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
) -> HttpRequest:
    token = mint_token(service.config.identity, agent=agent, tenant="acme", scopes=scopes, ttl_s=600, labels=labels)
    all_headers = {"authorization": f"Bearer {token}", "content-type": "application/json", **(headers or {})}
    raw = json.dumps(body).encode() if body is not None else b""
    return HttpRequest(method, host, path, "", all_headers, raw)


def refund(service: Service, amount: float, **kw: Any) -> HttpRequest:
    return request(service, "payments.demo", "/v1/refunds", {"amount": amount, "currency": "USD"}, **kw)


def crm_read(service: Service, purpose: str, **kw: Any) -> HttpRequest:
    headers = {"x-aegis-purpose": purpose, **kw.pop("headers", {})}
    return request(service, "crm.demo", "/tenants/acme/records/r1", method="GET", headers=headers, **kw)


def slack_post(service: Service, channel: str, **kw: Any) -> HttpRequest:
    return request(service, "slack.demo", "/api/chat.postMessage", {"channel": channel, "text": "hi"}, **kw)


def outcome(answer: Answer) -> tuple[int, str, str, str]:
    """An answer without its per-call parts (decision id, approval id)."""
    body = answer.body or {}
    return (answer.status, answer.metadata.get("decision", ""), answer.metadata.get("rule", ""), body.get("reason", ""))


def stats(service: Service) -> tuple[int, int]:
    policy = service.authorizer.policy
    assert policy is not None and policy.decisions is not None
    return policy.decisions.stats.hits, policy.decisions.stats.misses


def test_an_identical_call_reuses_the_decision_but_gets_its_own_id(service: Service) -> None:
    authorizer = service.authorizer
    call = refund(service, 20)
    first, second = authorizer.check(call), authorizer.check(call)
    assert outcome(first) == outcome(second) == (200, "allow", "refund-auto-approved", "")
    assert first.decision_id != second.decision_id
    assert stats(service) == (1, 1)


def test_a_different_amount_is_decided_afresh(service: Service) -> None:
    authorizer = service.authorizer
    assert outcome(authorizer.check(refund(service, 20)))[2] == "refund-auto-approved"
    denied = authorizer.check(refund(service, 900))
    assert outcome(denied) == (403, "deny", "refund-over-limit", "refund of 900 exceeds the limit of 500")
    assert outcome(authorizer.check(refund(service, 20)))[2] == "refund-auto-approved"
    assert stats(service) == (1, 2)


def test_headers_the_rules_read_split_the_key_and_others_do_not(service: Service) -> None:
    authorizer = service.authorizer
    allowed = authorizer.check(crm_read(service, "support", headers={"x-request-id": "a"}))
    assert outcome(allowed)[:3] == (200, "sanitize", "crm-redact-pii")
    # x-request-id differs on every call Envoy forwards: no rule reads it, so it is a hit.
    assert outcome(authorizer.check(crm_read(service, "support", headers={"x-request-id": "b"}))) == outcome(allowed)
    assert stats(service) == (1, 1)
    marketing = authorizer.check(crm_read(service, "marketing"))
    assert outcome(marketing)[:3] == (403, "deny", "crm-purpose-not-allowed")
    assert "purpose marketing is not allowed" in outcome(marketing)[3]
    # A header only the delegation rules read turns the same read into a denial.
    spoofed = authorizer.check(crm_read(service, "support", headers={"x-aegis-parent-agent": "boss"}))
    assert outcome(spoofed)[:3] == (403, "deny", "parent-header-without-chain")
    assert stats(service) == (1, 3)


def test_agents_do_not_share_decisions(service: Service) -> None:
    authorizer = service.authorizer
    assert authorizer.check(refund(service, 20)).status == 200
    other = authorizer.check(refund(service, 20, scopes=["crm.*"]))
    assert outcome(other)[:3] == (403, "deny", "scope-missing")
    relabelled = authorizer.check(refund(service, 20, labels={"team": "billing"}))
    assert relabelled.status == 200
    assert stats(service) == (0, 3)


def test_the_calendar_closing_changes_the_decision_of_the_same_call(service: Service) -> None:
    clock = Clock(OPEN)
    authorizer = authorizer_at(service, clock)
    call = slack_post(service, "#support")
    assert outcome(authorizer.check(call))[:3] == (200, "sanitize", "slack-redact-pii")
    clock.now = CLOSED
    assert outcome(authorizer.check(call))[:3] == (403, "deny", "slack-outside-business-hours")
    clock.now = OPEN  # a clock stepped back: the open decision is still the cached one
    assert outcome(authorizer.check(call))[0] == 200


def test_a_cached_decision_does_not_outlive_the_token(service: Service) -> None:
    token_clock = Clock(time.time())
    authorizer = authorizer_at(service, Clock(OPEN), token_clock=token_clock)
    call = refund(service, 20)
    assert authorizer.check(call).status == 200
    token_clock.now += 3600  # the token (600 s) has expired
    expired = authorizer.check(call)
    assert expired.status == 401 and expired.body is not None and expired.body["reason"] == "token_expired"


def test_rate_limits_count_every_cached_call(service: Service) -> None:
    authorizer = service.authorizer
    call = refund(service, 20, agent="rate-bot")
    statuses = [authorizer.check(call).status for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert stats(service) == (2, 1)


def test_approvals_are_still_recorded_for_cached_decisions(service: Service) -> None:
    authorizer = service.authorizer
    first = authorizer.check(refund(service, 120))
    second = authorizer.check(refund(service, 120, agent="other-bot"))
    again = authorizer.check(refund(service, 120))
    assert [a.status for a in (first, second, again)] == [202, 202, 202]
    assert first.metadata["approval_id"] == again.metadata["approval_id"] != second.metadata["approval_id"]
    assert stats(service) == (1, 2)


def test_a_method_override_header_is_refused_after_the_plain_call_was_cached(service: Service) -> None:
    authorizer = service.authorizer
    assert authorizer.check(refund(service, 20)).status == 200
    for name in ("x-http-method-override", "x-original-url"):
        refused = authorizer.check(refund(service, 20, headers={name: "DELETE"}))
        assert refused.status == 400 and refused.body is not None and refused.body["error"] == "ambiguous_request"
    assert stats(service) == (0, 1)


def test_calls_carrying_an_override_token_or_a_large_body_are_not_cached(service: Service) -> None:
    policy = service.authorizer.policy
    assert policy is not None and policy.decisions is not None
    identity = AgentIdentity("support-bot", "acme", ("payments.refund",))
    with_override = refund(service, 20, headers={"x-aegis-override": "token"})
    assert policy.decisions.key(identity, with_override, OPEN) is None
    large = request(service, "payments.demo", "/v1/refunds", {"amount": 20, "note": "x" * MAX_CACHED_BODY_BYTES})
    assert policy.decisions.key(identity, large, OPEN) is None
    assert policy.decisions.key(identity, refund(service, 20), OPEN) is not None


def test_the_cache_is_bounded_least_recently_used_first() -> None:
    cache = DecisionCache(frozenset(), {}, max_entries=2)
    decision = Decision(Effect.ALLOW, (), "v1")
    for key in ("a", "b"):
        cache.put((key,), ToolCall("t", {}), decision)
    assert cache.get(("a",)) is not None  # "a" is now the most recently used
    cache.put(("c",), ToolCall("t", {}), decision)
    assert cache.get(("b",)) is None
    assert cache.get(("a",)) is not None and cache.get(("c",)) is not None
    assert cache.stats.entries == 2


def test_only_engines_with_pure_decisions_get_a_cache(tmp_path: Path) -> None:
    bundle = build_bundle(POLICIES)
    assert activate(bundle, "native").decisions is not None
    assert activate(bundle, "embedded").decisions is not None  # the library only: native
    assert activate(bundle, "regopy").decisions is None  # Rego may read the clock
    assert activate(bundle, "native", decision_cache_entries=0).decisions is None
    custom = copy_policy_dir(
        tmp_path / "custom",
        (POLICIES / "support.yaml").read_text(encoding="utf-8"),
        rego={"custom.rego": "package aegis\n\ncustom_deny contains msg if { false; msg := {} }\n"},
    )
    assert activate(build_bundle(custom), "embedded").decisions is None


def test_a_reload_starts_an_empty_cache(service: Service) -> None:
    authorizer = service.authorizer
    authorizer.check(refund(service, 20))
    old = authorizer.policy
    assert old is not None
    authorizer.swap_policy(activate(old.bundle, "native"))
    assert authorizer.policy is not None and authorizer.policy.decisions is not None
    assert authorizer.policy.decisions.stats.entries == 0
    assert authorizer.check(refund(service, 20)).status == 200


def test_cached_and_uncached_authorizers_agree_on_every_call(service: Service) -> None:
    """Differential: the same sequence of calls (each twice, interleaved) through a cached and
    an uncached Authorizer, with the clock crossing the calendar's edge half-way."""
    calls = list(
        itertools.chain(
            (refund(service, amount) for amount in (-5, 20, 50, 50.5, 120, 500, 900)),
            (crm_read(service, purpose) for purpose in ("support", "investigation", "marketing", "")),
            (slack_post(service, channel) for channel in ("#support", "#billing", "#random")),
            (refund(service, 20, scopes=scopes) for scopes in (["payments.*"], ["crm.*"], ["*"])),
            (crm_read(service, "support", headers={"x-aegis-parent-agent": p}) for p in ("a", "")),
            (refund(service, 20, headers={"content-type": ct}) for ct in ("text/plain", "x+json")),
        )
    )
    clock = Clock(OPEN)
    cached, uncached = authorizer_at(service, clock), authorizer_at(service, clock, cached=False)
    policy = cached.policy
    assert policy is not None and policy.decisions is not None
    for moment in (OPEN, CLOSED):
        clock.now = moment
        for call in calls + calls:
            assert outcome(cached.check(call)) == outcome(uncached.check(call)), call
    assert policy.decisions.stats.hits > len(calls)


def test_policy_decision_cache_sizes_or_disables_the_cache(tmp_path: Path) -> None:
    disabled = build_service(load_config(write_config(tmp_path / "off", {"policy": {"decision_cache": 0}})))
    try:
        assert disabled.authorizer.policy is not None and disabled.authorizer.policy.decisions is None
    finally:
        disabled.close()
    with pytest.raises(ConfigError, match=r"policy.decision_cache.*a whole number, 0 or more"):
        load_config(write_config(tmp_path / "bad", {"policy": {"decision_cache": -1}}))


def test_hits_and_misses_are_exported_as_metrics(service: Service) -> None:
    call = refund(service, 20)
    for _ in range(3):
        service.authorizer.check(call)
    text = generate_latest(service.metrics.registry).decode()
    assert 'aegis_decision_cache_lookups_total{result="hit"} 2.0' in text
    assert 'aegis_decision_cache_lookups_total{result="miss"} 1.0' in text
    assert "aegis_decision_cache_entries 1.0" in text
