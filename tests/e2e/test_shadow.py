"""Shadow mode end to end: shadow rules are reported, never enforced; a shadow set lets calls through."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers import POLICIES, Gateway, copy_policy_dir, start_gateway

pytestmark = pytest.mark.e2e

# A new, stricter refund rule rolled out in shadow beside the enforced starter policy, and a
# whole new policy set (a billing tool) in shadow mode.
SHADOW_RULE = """
  - id: refund-strict-limit
    tools: [payments.refund]
    mode: shadow
    when: [{arg: amount, gt: 10}]
    effect: deny
    reason: refunds over 10 would be denied (was {amount})
"""
SHADOW_SET = """
policy_set: billing
mode: shadow
default_effect: deny
tools:
  billing.invoice:
    match: {host: payments.demo, method: POST, path: /v1/invoices}
    body: json
rules:
  - id: invoice-small
    tools: [billing.invoice]
    when: [{arg: total, lte: 100}]
    effect: allow
  - id: invoice-large
    tools: [billing.invoice]
    when: [{arg: total, gt: 1000}]
    effect: deny
    reason: invoices over 1000 would be denied
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("shadow")
    support = (POLICIES / "support.yaml").read_text() + SHADOW_RULE
    policies = copy_policy_dir(root / "policies", support, SHADOW_SET)
    gw = start_gateway(root / "gw", policy_dir=policies)
    try:
        yield gw
    finally:
        gw.client.close()
        gw.stack.stop()


def test_a_shadow_rule_never_changes_the_enforced_answer(gateway):
    response = gateway.call("POST", "payments.demo", "/v1/refunds", json={"amount": 20, "currency": "USD"})
    assert response.status_code == 200  # enforced: refund-auto-approved
    entry = gateway.access_log(response.headers["x-aegis-decision-id"])
    assert entry["decision"] == "allow"
    assert entry["shadow"] == "would_deny:refund-strict-limit"


def test_enforced_and_shadow_rules_coexist(gateway):
    response = gateway.call("POST", "payments.demo", "/v1/refunds", json={"amount": 900, "currency": "USD"})
    assert response.status_code == 403
    assert response.json()["rule"] == "refund-over-limit"
    entry = gateway.access_log(response.headers["x-aegis-decision-id"])
    assert entry["shadow"] == "would_deny:refund-strict-limit"
    small = gateway.call("POST", "payments.demo", "/v1/refunds", json={"amount": 5, "currency": "USD"})
    assert gateway.access_log(small.headers["x-aegis-decision-id"])["shadow"] is None


@pytest.mark.parametrize(
    ("total", "would"),
    [(50, None), (5000, "would_deny:invoice-large"), (500, "would_deny:default-deny")],
)
def test_a_shadow_policy_set_lets_calls_through_and_reports(gateway, total, would):
    token = gateway.token(scopes=["billing.*"])
    response = gateway.call("POST", "payments.demo", "/v1/invoices", token=token, json={"total": total})
    assert response.status_code != 403  # let through (the demo payments tool has no /v1/invoices: 404)
    entry = gateway.access_log(response.headers["x-aegis-decision-id"])
    assert entry["decision"] == "allow"
    assert entry["shadow"] == would
