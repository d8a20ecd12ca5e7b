"""The Check servicer called in process with real CheckRequests (fast; the e2e tests are the proof)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2
from google.protobuf import json_format
from helpers import copy_policy_dir, write_config

from extauthz.config import load_config
from extauthz.devtokens import mint_token
from extauthz.errors import AegisError
from extauthz.server import MeasuredAuthorizationServicer, build_service


@pytest.fixture
def service(config_path: Path):
    svc = build_service(load_config(config_path))
    yield svc
    svc.close()


def token(service, **kw):
    base = {"agent": "support-bot", "tenant": "acme", "scopes": ["payments.refund", "slack.post_message", "crm.*"]}
    return mint_token(service.config.identity, **{**base, **kw})


def check(service, *, method="POST", host="payments.demo", path="/v1/refunds", body=None, headers=None, auth=True):
    hdrs = {"content-type": "application/json", **(headers or {})}
    if auth:
        hdrs["authorization"] = f"Bearer {token(service)}"
    http = attribute_context_pb2.AttributeContext.HttpRequest(
        method=method,
        host=host,
        path=path,
        headers=hdrs,
        raw_body=json.dumps(body).encode() if body is not None else b"",
    )
    request = external_auth_pb2.CheckRequest(
        attributes=attribute_context_pb2.AttributeContext(
            request=attribute_context_pb2.AttributeContext.Request(http=http)
        )
    )
    return MeasuredAuthorizationServicer(service).Check(request, None)


def headers_of(options):
    return {h.header.key: h.header.value for h in options}


def test_allow_strips_credentials_and_tags_the_call(service):
    response = check(service, body={"amount": 20})
    assert response.status.code == 0
    ok = response.ok_response
    assert set(ok.headers_to_remove) >= {"authorization", "x-aegis-override"}
    decision_id = headers_of(ok.headers)["x-aegis-decision-id"]
    assert headers_of(ok.response_headers_to_add)["x-aegis-decision-id"] == decision_id
    metadata = json_format.MessageToDict(response.dynamic_metadata)
    assert metadata["decision"] == "allow"
    assert metadata["rule"] == "refund-auto-approved"
    assert metadata["policy_version"] == service.authorizer.policy.version
    assert metadata["decision_id"] == decision_id


def test_deny_is_a_403_with_reason_rule_and_version(service):
    response = check(service, body={"amount": 900})
    assert response.status.code != 0
    denied = response.denied_response
    assert denied.status.code == 403
    body = json.loads(denied.body)
    assert body["error"] == "denied"
    assert body["rule"] == "refund-over-limit"
    assert body["reason"] == "refund of 900 exceeds the limit of 500"
    assert body["policy_version"] == service.authorizer.policy.version
    assert headers_of(denied.headers)["x-aegis-decision-id"] == body["decision_id"]


def test_approval_needed_is_a_202_recorded_once(service):
    first = check(service, body={"amount": 120, "customer_id": "c-1"})
    body = json.loads(first.denied_response.body)
    assert first.denied_response.status.code == 202
    assert body["status"] == "approval_needed"
    assert body["status_url"].endswith(f"/v1/approvals/{body['approval_id']}")
    hdrs = headers_of(first.denied_response.headers)
    assert hdrs["location"] == body["status_url"]
    assert int(hdrs["retry-after"]) > 0
    stored = service.store.get_approval(body["approval_id"])
    assert stored.state == "pending" and stored.tool == "payments.refund" and stored.agent_id == "support-bot"
    # The same call while pending returns the same approval; a different amount is a new one.
    again = json.loads(check(service, body={"amount": 120, "customer_id": "c-1"}).denied_response.body)
    assert again["approval_id"] == body["approval_id"]
    other = json.loads(check(service, body={"amount": 121, "customer_id": "c-1"}).denied_response.body)
    assert other["approval_id"] != body["approval_id"]


def test_missing_token_is_a_401_with_challenge(service):
    response = check(service, body={"amount": 20}, auth=False)
    denied = response.denied_response
    assert denied.status.code == 401
    assert headers_of(denied.headers)["www-authenticate"].startswith('Bearer error="invalid_token"')
    assert json.loads(denied.body)["reason"] == "missing_token"


def test_malformed_body_is_a_400(service):
    http_body = {"amount": 10}
    response = check(service, body=http_body, headers={"content-type": "text/plain"})
    assert response.denied_response.status.code == 400
    assert json.loads(response.denied_response.body)["error"] == "malformed_body"


def test_no_policy_fails_closed_with_503(tmp_path):
    broken = copy_policy_dir(tmp_path / "p", "policy_set: t\ntools: [not, a, mapping]\n")
    svc = build_service(load_config(write_config(tmp_path, policy_dir=broken)))
    try:
        response = check(svc, body={"amount": 20})
        assert response.denied_response.status.code == 503
        assert json.loads(response.denied_response.body)["error"] == "engine_unavailable"
        ready = svc.readiness()
        assert ready["ready"] is False
        assert "tools" in ready["checks"]["policy"]["last_error"]
    finally:
        svc.close()


def test_close_stops_the_background_work_then_the_store(config_path: Path) -> None:
    """What ``serve`` does after its last call, and tests after theirs: no sweep or reload
    thread left to touch a closed store (which logged "approval sweep failed" at exit)."""
    svc = build_service(load_config(config_path))
    approvals = svc.authorizer.approvals
    assert approvals is not None
    sweeper = approvals._sweeper  # noqa: SLF001 - the thread close() must end
    assert sweeper.is_alive()
    svc.close()
    assert not sweeper.is_alive()
    with pytest.raises(AegisError):
        svc.store.ping()  # closed after the threads that write to it
    svc.reloader.stop()  # a second stop does nothing (serve stops the reloader first, then closes)
