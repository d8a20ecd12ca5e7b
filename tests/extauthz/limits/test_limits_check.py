"""Budgets and rate limits in Check, in process (the e2e scale tests are the proof across replicas)."""

from __future__ import annotations

import datetime as dt
import json
import time
import zoneinfo
from pathlib import Path

import pytest
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2
from google.protobuf import json_format
from helpers import POLICIES, copy_policy_dir, free_port, write_config

from extauthz.config import load_config
from extauthz.devtokens import mint_token
from extauthz.limits import UsageCharge, record_usage, usage_tokens
from extauthz.limits.enforce import BudgetWarner, decode_charges
from extauthz.metadata import MD_USAGE
from extauthz.redactor import Exchange, RedactionSettings
from extauthz.server import MeasuredAuthorizationServicer, build_service
from extauthz.store.sqlite import SqliteStore
from extauthz.telemetry import Metrics

LIMITS = """
policy_set: limits
budgets:
  - id: refunds-daily
    agents: {ids: [budget-bot]}
    tools: ["payments.*"]
    per: all
    per_day: {requests: 3}
    timezone: Asia/Tokyo
    warn_at: 0.5
  - id: llm-cost
    agents: {ids: [cost-bot]}
    tools: [payments.refund]
    per_day: {cost: 1.0}
    cost: {fixed: 0.25, from_response: {usage_prices: {input_tokens: 0.001, output_tokens: 0.002}}}
rate_limits:
  - id: refunds-per-agent
    agents: {ids: [rate-bot, open-bot]}
    tools: [payments.refund]
    rate: 1
    per_seconds: 60
    burst: 2
  - id: open-on-store-error
    agents: {ids: [open-bot]}
    tools: [payments.refund]
    rate: 1
    per_seconds: 60
    burst: 100
    on_store_error: allow
"""


def policy_dir(tmp_path: Path) -> Path:
    texts = [(POLICIES / name).read_text() for name in ("support.yaml", "delegation.yaml")]
    return copy_policy_dir(tmp_path / "policies", *texts, LIMITS)


@pytest.fixture
def service(tmp_path: Path):
    svc = build_service(load_config(write_config(tmp_path, policy_dir=policy_dir(tmp_path))))
    yield svc
    svc.close()


def check(service, agent: str, amount: float = 20):
    tok = mint_token(service.config.identity, agent=agent, tenant="acme", scopes=["payments.refund"])
    http = attribute_context_pb2.AttributeContext.HttpRequest(
        method="POST",
        host="payments.demo",
        path="/v1/refunds",
        headers={"content-type": "application/json", "authorization": f"Bearer {tok}"},
        raw_body=json.dumps({"amount": amount}).encode(),
    )
    request = external_auth_pb2.CheckRequest(
        attributes=attribute_context_pb2.AttributeContext(
            request=attribute_context_pb2.AttributeContext.Request(http=http)
        )
    )
    return MeasuredAuthorizationServicer(service).Check(request, None)


def refusal(response):
    denied = response.denied_response
    headers = {h.header.key: h.header.value for h in denied.headers}
    return denied.status.code, json.loads(denied.body), headers


def test_rate_limit_allows_the_burst_then_429_with_retry_after(service):
    assert [check(service, "rate-bot").status.code for _ in range(2)] == [0, 0]
    status, body, headers = refusal(check(service, "rate-bot"))
    assert status == 429
    assert body["error"] == "rate_limited" and body["limit"] == "refunds-per-agent"
    assert 58 <= int(headers["retry-after"]) <= 60 and body["retry_after"] == int(headers["retry-after"])
    assert check(service, "other-bot").status.code == 0  # not selected


def test_budget_counts_allowed_calls_only_and_resets_at_local_midnight(service):
    assert refusal(check(service, "budget-bot", 900))[0] == 403  # a denied call spends nothing
    assert [check(service, "budget-bot").status.code for _ in range(3)] == [0, 0, 0]
    status, body, headers = refusal(check(service, "budget-bot"))
    assert status == 429 and body["error"] == "budget_exhausted" and body["limit"] == "refunds-daily"
    now = dt.datetime.now(zoneinfo.ZoneInfo("Asia/Tokyo"))
    midnight = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), tzinfo=now.tzinfo)
    assert abs(int(headers["retry-after"]) - (midnight - now).total_seconds()) <= 2
    warnings = service.metrics.budget_warnings.labels("refunds-daily")._value.get()
    assert warnings == 1  # once per window


def test_cost_budget_charges_the_fixed_cost_and_hands_prices_to_ext_proc(service):
    response = check(service, "cost-bot")
    assert response.status.code == 0
    metadata = json_format.MessageToDict(response.dynamic_metadata)
    charges = decode_charges(metadata[MD_USAGE])
    assert [c.budget for c in charges] == ["llm-cost"]
    # 0.25 fixed, then a response of 200 input + 100 output tokens: 0.2 + 0.2 = 0.4 → 0.65 used.
    record_usage(service.store, None, charges, {"input_tokens": 200, "output_tokens": 100}, time.time())
    assert check(service, "cost-bot").status.code == 0  # 0.65 + 0.25 = 0.9
    status, body, _ = refusal(check(service, "cost-bot"))
    assert status == 429 and body["error"] == "budget_exhausted"


def test_store_down_fails_closed_unless_the_rate_limit_says_allow(tmp_path: Path):
    path = write_config(
        tmp_path,
        {"store": f"redis://127.0.0.1:{free_port()}/0", "store_timeout": "100ms"},
        policy_dir=policy_dir(tmp_path),
    )
    svc = build_service(load_config(path))
    try:
        status, body, _ = refusal(check(svc, "rate-bot"))
        assert status == 503 and body["error"] == "store_unavailable"
        svc.store._retry_at = 0.0  # type: ignore[attr-defined]  # skip the back-off
        # open-bot: the deny-on-error limit still refuses (both apply); only allow-limits pass.
        assert refusal(check(svc, "open-bot"))[0] == 503
        assert check(svc, "other-bot").status.code == 0  # no limit, no store needed
    finally:
        svc.close()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"usage": {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42}},
            {"input_tokens": 12, "output_tokens": 30},
        ),
        ({"usage": {"input_tokens": 7, "output_tokens": 9}}, {"input_tokens": 7, "output_tokens": 9}),
        ({"usage": {"input_tokens": -1, "output_tokens": True}}, {}),
        ({"no": "usage"}, {}),
        ([1, 2], {}),
    ],
)
def test_usage_tokens_openai_and_anthropic(body, expected):
    assert usage_tokens(json.dumps(body).encode()) == expected


def test_usage_tokens_gzip_and_garbage():
    import gzip

    assert usage_tokens(gzip.compress(b'{"usage":{"input_tokens":3}}'), "gzip") == {"input_tokens": 3}
    assert usage_tokens(b"not json") == {}
    assert usage_tokens(b"{}", "br") == {}


def test_exchange_reads_response_body_for_usage_but_never_buffers_a_stream():
    charge = UsageCharge("b", "k", 1e12, {"input_tokens": 1}, 10)
    exchange = Exchange.from_metadata(RedactionSettings(), {MD_USAGE: json.dumps([charge.to_data()])})
    assert exchange.usage == (charge,) and exchange.wants_response and not exchange.streams_response
    exchange.note_response_headers({"content-type": "application/json"})
    assert exchange.reads_response_body
    exchange.note_response_headers({"content-type": "text/event-stream"})
    assert not exchange.reads_response_body and not exchange.streams_response


def test_warning_once_per_window_with_webhook(tmp_path: Path):
    store = SqliteStore(tmp_path / "a.db")
    events: list[dict] = []
    warner = BudgetWarner(store, Metrics(), events.append)
    for value in (1, 5, 8, 9, 10):
        warner.check("b", "key", value, 10, 0.8, 2e12, 1e12)
    assert [e["used"] for e in events] == [8]
    store.close()
