"""AuthZEN evaluation API: same engine and identity as Check, AuthZEN 1.0 shapes."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from extauthz.config import load_config
from extauthz.devtokens import mint_token
from extauthz.server import build_service, start_http


@pytest.fixture
def service(config_path: Path):
    svc = build_service(load_config(config_path))
    yield svc
    svc.close()


@pytest.fixture
def client(service):
    # The real HTTP server (uvicorn) on a free loopback port.
    server, thread = start_http(service)
    with httpx.Client(base_url=f"http://{service.config.service.http}", timeout=5) as c:
        yield c
    server.should_exit = True
    thread.join(timeout=5)


def bearer(service, agent="support-bot", scopes=("payments.refund", "crm.*")):
    token = mint_token(service.config.identity, agent=agent, tenant="acme", scopes=scopes)
    return {"authorization": f"Bearer {token}"}


def request(tool, args, subject="support-bot", headers=None):
    return {
        "subject": {"type": "agent", "id": subject},
        "action": {"name": "call"},
        "resource": {"type": "tool", "id": tool, "properties": args},
        "context": {"headers": headers or {}},
    }


@pytest.mark.parametrize(
    ("amount", "decision", "effect", "rule"),
    [
        (20, True, "allow", "refund-auto-approved"),
        (120, False, "approval_needed", "refund-needs-approval"),
        (900, False, "deny", "refund-over-limit"),
    ],
)
def test_single_evaluation(service, client, amount, decision, effect, rule):
    response = client.post(
        "/access/v1/evaluation", json=request("payments.refund", {"amount": amount}), headers=bearer(service)
    )
    assert response.status_code == 200
    body = response.json()
    assert body["decision"] is decision
    assert body["context"]["effect"] == effect
    assert body["context"]["rules"] == [rule]
    assert body["context"]["policy_version"] == service.authorizer.policy.version
    # Asking is not calling: no approval is recorded.
    assert service.store.list_approvals() == []


def test_sanitize_is_permitted_with_obligations(service, client):
    body = client.post(
        "/access/v1/evaluation",
        json=request("crm.get_record", {"tenant_id": "acme", "record_id": "r"}, headers={"X-Aegis-Purpose": "support"}),
        headers=bearer(service),
    ).json()
    assert body["decision"] is True
    assert body["context"]["obligations"]["redact"]["fields"] == ["dob", "full_name", "ssn"]


def test_unknown_tool_is_denied(service, client):
    body = client.post("/access/v1/evaluation", json=request("nope.tool", {}), headers=bearer(service)).json()
    assert body["decision"] is False
    assert body["context"]["rules"] == ["default-deny"]


def test_identity_is_required_and_must_match_the_subject(service, client):
    missing = client.post("/access/v1/evaluation", json=request("payments.refund", {"amount": 1}))
    assert missing.status_code == 401
    assert missing.json()["reason"] == "missing_token"
    other = client.post(
        "/access/v1/evaluation",
        json=request("payments.refund", {"amount": 1}, subject="admin-bot"),
        headers=bearer(service),
    )
    assert other.status_code == 401
    assert other.json()["reason"] == "subject_mismatch"


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (b"not json", 400, "invalid_request"),
        (b"[]", 400, "invalid_request"),
        (b'{"subject": {"id": "support-bot"}, "resource": {"type": "document", "id": "x"}}', 400, "invalid_request"),
        (
            b'{"subject": {"id": "support-bot"}, "resource": {"type": "tool", "id": "payments.refund", "properties": {"amount": "1"}}}',
            400,
            "invalid_argument",
        ),
    ],
)
def test_bad_requests_get_a_clear_400(service, client, body, status, error):
    response = client.post("/access/v1/evaluation", content=body, headers=bearer(service))
    assert response.status_code == status
    assert response.json()["error"] == error


def test_batch_with_defaults_and_semantics(service, client):
    batch = {
        "subject": {"type": "agent", "id": "support-bot"},
        "action": {"name": "call"},
        "evaluations": [
            {"resource": {"type": "tool", "id": "payments.refund", "properties": {"amount": 10}}},
            {"resource": {"type": "tool", "id": "payments.refund", "properties": {"amount": 900}}},
            {"resource": {"type": "tool", "id": "payments.refund", "properties": {"amount": 20}}},
        ],
    }
    all_results = client.post("/access/v1/evaluations", json=batch, headers=bearer(service)).json()["evaluations"]
    assert [r["decision"] for r in all_results] == [True, False, True]
    batch["options"] = {"evaluations_semantic": "deny_on_first_deny"}
    stopped = client.post("/access/v1/evaluations", json=batch, headers=bearer(service)).json()["evaluations"]
    assert [r["decision"] for r in stopped] == [True, False]
    single = client.post(
        "/access/v1/evaluations", json=request("payments.refund", {"amount": 10}), headers=bearer(service)
    )
    assert single.json()["decision"] is True
