"""The gateway core, end to end: real HTTP → real Envoy → Aegis → real upstream tool servers."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import re
import time
from pathlib import Path

import pytest
from faults_support import wait_until
from helpers import copy_policy_dir, start_gateway

from extauthz.demo import business_hours_now

pytestmark = pytest.mark.e2e

REFUND = {"amount": 20.0, "currency": "USD", "customer_id": "c-1"}


def refund(gw, amount, **kw):
    return gw.call("POST", "payments.demo", "/v1/refunds", json={**REFUND, "amount": amount}, **kw)


# --- the demo scenario ---------------------------------------------------------------


def test_small_refund_is_allowed_and_reaches_the_tool_without_the_jwt(gateway):
    response = refund(gateway, 20)
    assert response.status_code == 200
    decision_id = response.headers["x-aegis-decision-id"]
    seen = [r for r in gateway.received("payments.demo") if r["headers"].get("x-aegis-decision-id") == decision_id]
    assert len(seen) == 1
    assert "authorization" not in {k.lower() for k in seen[0]["headers"]}
    assert json.loads(seen[0]["body"])["amount"] == 20.0


def test_refund_over_50_needs_approval(gateway):
    response = refund(gateway, 120)
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "approval_needed"
    assert response.headers["location"] == body["status_url"]
    assert int(response.headers["retry-after"]) > 0
    assert body["expires_at"].endswith("Z")
    # The agent polls with its own JWT and sees the pending approval.
    import httpx

    status = httpx.get(body["status_url"], headers={"authorization": f"Bearer {gateway.token()}"}, timeout=5)
    assert status.status_code == 200
    assert status.json()["state"] == "pending"
    other_agent = httpx.get(
        body["status_url"], headers={"authorization": f"Bearer {gateway.token(agent='intruder')}"}, timeout=5
    )
    assert other_agent.status_code == 404
    assert not any(json.loads(r["body"] or "{}").get("amount") == 120.0 for r in gateway.received("payments.demo"))


def test_refund_over_500_is_denied(gateway):
    response = refund(gateway, 900)
    assert response.status_code == 403
    body = response.json()
    assert body["rule"] == "refund-over-limit"
    assert body["decision_id"] == response.headers["x-aegis-decision-id"]
    assert body["policy_version"]


def test_slack_post_follows_channel_allowlist_and_business_hours(gateway):
    support = gateway.call(
        "POST", "slack.demo", "/api/chat.postMessage", json={"channel": "#support", "text": "resolved"}
    )
    if business_hours_now(gateway.config, time.time()):
        assert support.status_code == 200
    else:
        assert support.status_code == 403
        assert "business hours" in support.json()["reason"]
    random = gateway.call("POST", "slack.demo", "/api/chat.postMessage", json={"channel": "#random", "text": "hi"})
    assert random.status_code == 403
    assert "slack-channel-not-allowed" in random.json()["rule"]


def test_crm_read_own_tenant_with_purpose(gateway):
    response = gateway.call("GET", "crm.demo", "/tenants/acme/records/r-1", headers={"x-aegis-purpose": "support"})
    assert response.status_code == 200
    cross = gateway.call("GET", "crm.demo", "/tenants/globex/records/r-1", headers={"x-aegis-purpose": "support"})
    assert cross.status_code == 403
    assert cross.json()["rule"] == "crm-cross-tenant"
    no_purpose = gateway.call("GET", "crm.demo", "/tenants/acme/records/r-1")
    assert no_purpose.status_code == 403
    assert no_purpose.json()["rule"] == "crm-purpose-missing"


# --- identity ------------------------------------------------------------------------


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(gw, **over):
    now = int(time.time())
    return {
        "iss": gw.config.identity.issuer,
        "aud": gw.config.identity.audience,
        "sub": "support-bot",
        "tenant": "acme",
        "scope": "payments.refund",
        "iat": now,
        "exp": now + 60,
        **over,
    }


def _hs256_with_public_key(gw) -> str:
    header, payload = _b64({"alg": "HS256", "typ": "JWT"}), _b64(_claims(gw))
    key = gw.config.identity.public_keys[0].read_bytes()
    sig = hmac.new(key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{base64.urlsafe_b64encode(sig).rstrip(b'=').decode()}"


@pytest.mark.parametrize(
    ("make_token", "reason"),
    [
        (lambda gw: "garbled.token.value", "malformed_token"),
        (lambda gw: f"{_b64({'alg': 'none'})}.{_b64(_claims(gw))}.", "algorithm_not_allowed"),
        (_hs256_with_public_key, "algorithm_not_allowed"),
        (lambda gw: gw.token(now=time.time() - 3600), "token_expired"),
        (lambda gw: gw.token(now=time.time() + 600), "token_not_yet_valid"),
        (lambda gw: gw.token(extra_claims={"aud": "other"}), "wrong_audience"),
        (lambda gw: gw.token(extra_claims={"iss": "https://evil.test"}), "wrong_issuer"),
        (lambda gw: gw.token(ttl_s=86400), "lifetime_too_long"),
    ],
)
def test_bad_tokens_get_401_with_reason(gateway, make_token, reason):
    token = make_token(gateway)
    response = refund(gateway, 20, token=token)
    assert response.status_code == 401
    assert response.json()["reason"] == reason
    assert response.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
    assert token not in response.text


def test_missing_token_is_401(gateway):
    response = refund(gateway, 20, auth=False)
    assert response.status_code == 401
    assert response.json()["reason"] == "missing_token"


# --- requests that cannot be judged ----------------------------------------------------


def test_unknown_tool_is_denied_by_default(gateway):
    response = gateway.call("DELETE", "payments.demo", "/v1/refunds/all")
    assert response.status_code == 403
    assert response.json()["rule"] == "default-deny"


def test_out_of_scope_tool_is_denied(gateway):
    response = refund(gateway, 20, token=gateway.token(scopes=["crm.*"]))
    assert response.status_code == 403
    assert response.json()["rule"] == "scope-missing"


def test_malformed_and_ambiguous_json_is_400(gateway):
    for body in (b'{"amount": 10', b'{"amount": 10, "amount": 1000}'):
        response = gateway.call(
            "POST", "payments.demo", "/v1/refunds", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 400
        assert response.json()["error"] == "malformed_body"


def test_oversized_body_is_413_and_never_reaches_the_tool(gateway):
    size = gateway.config.envoy.max_request_bytes + 1024
    body = json.dumps({**REFUND, "note": "x" * size})
    response = gateway.call(
        "POST", "payments.demo", "/v1/refunds", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert not any(len(r["body"] or "") > size for r in gateway.received("payments.demo"))


def test_access_log_carries_decision_rule_and_policy_version(gateway):
    response = refund(gateway, 900)
    decision_id = response.headers["x-aegis-decision-id"]
    entry = gateway.access_log(decision_id)
    assert entry["decision"] == "deny"
    assert entry["rule"] == "refund-over-limit"
    assert entry["policy_version"] == response.json()["policy_version"]
    assert entry["response_code"] == 403


# --- fail closed -------------------------------------------------------------------------


CONFLICT = 'package aegis\nimport rego.v1\neffect := "conflict" if input.tool.args.customer_id == "explode"\n'


def test_engine_failure_is_503_and_nothing_reaches_the_tool(tmp_path: Path):
    policies = copy_policy_dir(
        tmp_path / "policies",
        (Path(__file__).parents[2] / "policies" / "support.yaml").read_text(),
        rego={"conflict.rego": CONFLICT},
    )
    gw = start_gateway(tmp_path / "gw", policy_dir=policies)
    try:
        response = gw.call("POST", "payments.demo", "/v1/refunds", json={**REFUND, "customer_id": "explode"})
        assert response.status_code == 503
        assert response.json()["error"] == "engine_unavailable"
        assert gw.received("payments.demo") == []
        # The same gateway still decides other calls.
        assert refund(gw, 20).status_code == 200
    finally:
        gw.client.close()
        gw.stack.stop()


def test_demo_scenario_plays_clean(gateway):
    from extauthz.demo import play

    lines: list[str] = []
    assert play(gateway.config, out=lines.append) == 0, "\n".join(lines)
    assert lines[-1].strip().startswith("8 of 8 steps")


def test_parent_agent_header_must_match_the_delegation_chain(gateway):
    delegated = gateway.token(act=["support-orchestrator"])
    ok = refund(gateway, 20, token=delegated, headers={"x-aegis-parent-agent": "support-orchestrator"})
    assert ok.status_code == 200
    coerced = refund(gateway, 20, token=delegated, headers={"x-aegis-parent-agent": "billing-planner"})
    assert coerced.status_code == 403
    assert coerced.json()["rule"] == "parent-header-mismatch"
    forged = refund(gateway, 20, headers={"x-aegis-parent-agent": "support-orchestrator"})
    assert forged.status_code == 403
    assert forged.json()["rule"] == "parent-header-without-chain"


def envoy_counter(gw, suffix: str) -> int:
    """The sum of Envoy's stats whose name ends with ``suffix``."""
    import httpx

    text = httpx.get(f"http://{gw.config.envoy.admin}/stats", params={"filter": re.escape(suffix) + "$"}).text
    return sum(int(line.rsplit(":", 1)[1]) for line in text.splitlines() if ":" in line)


def ext_proc_streams(gw) -> int:
    return envoy_counter(gw, "ext_proc.streams_started")


def test_envoy_ends_ext_proc_streams_without_resetting_them(gateway):
    # Envoy resets (RST_STREAM) every ext_proc stream it is done with unless the runtime flag
    # for graceful close is on; each reset costs the grpc.aio server native memory for good.
    from extauthz.envoyconfig import EXT_PROC_CLUSTER

    resets = functools.partial(envoy_counter, gateway, f"cluster.{EXT_PROC_CLUSTER}.upstream_rq_tx_reset")
    before, started = resets(), ext_proc_streams(gateway)
    for _ in range(5):
        crm = gateway.call("GET", "crm.demo", "/tenants/acme/records/r-1", headers={"x-aegis-purpose": "support"})
        assert crm.status_code == 200 and "[REDACTED" in crm.text
    assert ext_proc_streams(gateway) == started + 5
    # Read the resets once Envoy has closed all five streams, however it closed them.
    closed = functools.partial(envoy_counter, gateway, "ext_proc.streams_closed")
    wait_until(lambda: closed() >= started + 5, timeout=5, what="Envoy to close the ext_proc streams")
    assert resets() == before


def test_clean_calls_skip_ext_proc_and_sanitized_calls_use_it(gateway):
    streams = functools.partial(ext_proc_streams, gateway)
    before = streams()
    assert refund(gateway, 5).status_code == 200  # nothing to redact: no ext_proc stream
    assert streams() == before
    crm = gateway.call("GET", "crm.demo", "/tenants/acme/records/r-1", headers={"x-aegis-purpose": "support"})
    assert crm.status_code == 200
    assert streams() == before + 1


def test_local_replies_open_no_ext_proc_stream(gateway):
    # 403, 202 and 401 are ext_authz local replies: with no response phase in the static
    # ext_proc mode, Envoy opens no stream for them (each would cost a gRPC stream, and
    # grpc.aio leaks native memory per cancelled server stream).
    before = ext_proc_streams(gateway)
    assert refund(gateway, 900).status_code == 403
    assert refund(gateway, 120).status_code == 202
    assert refund(gateway, 20, auth=False).status_code == 401
    assert ext_proc_streams(gateway) == before
    # The probe is live: a call with a redacted response does open one.
    crm = gateway.call("GET", "crm.demo", "/tenants/acme/records/r-1", headers={"x-aegis-purpose": "support"})
    assert crm.status_code == 200
    assert ext_proc_streams(gateway) == before + 1
