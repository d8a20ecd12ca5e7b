"""Hot reload through real Envoy: decisions follow the policy files without a restart."""

from __future__ import annotations

import os
import time

import httpx
import pytest
from helpers import POLICIES, copy_policy_dir, start_gateway

pytestmark = pytest.mark.e2e

SUPPORT = (POLICIES / "support.yaml").read_text()
RAISED = SUPPORT.replace("lte: 50}", "lte: 100}").replace("{arg: amount, gt: 50}", "{arg: amount, gt: 100}")
ADMIN_TOKEN = "test-admin-token-0123456789abcdef"


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_reload_new_version_reject_broken_and_admin_endpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("AEGIS_TEST_ADMIN", ADMIN_TOKEN)
    policies = copy_policy_dir(tmp_path / "policies", SUPPORT)
    gw = start_gateway(
        tmp_path / "gw",
        policy_dir=policies,
        extra={
            "policy": {"dir": str(policies), "poll_interval": 1},
            "service": {"admin_token_env": "AEGIS_TEST_ADMIN"},
        },
    )
    http = f"http://{gw.config.service.http}"

    def refund(amount):
        return gw.call("POST", "payments.demo", "/v1/refunds", json={"amount": amount, "currency": "USD"})

    try:
        assert refund(80).status_code == 202
        version = httpx.get(f"{http}/v1/policy").json()["policy_version"]
        # Raise the automatic limit: the running gateway follows.
        (policies / "p0.yaml").write_text(RAISED)
        assert wait_for(lambda: refund(80).status_code == 200)
        new_version = httpx.get(f"{http}/v1/policy").json()["policy_version"]
        assert new_version != version
        assert refund(80).json().get("status") == "succeeded"
        # A broken edit is rejected: the last good version keeps serving, /readyz says why.
        (policies / "p0.yaml").write_text(SUPPORT.replace("policy_set: support", "policy_set: [support"))
        assert wait_for(lambda: httpx.get(f"{http}/readyz").json()["checks"]["policy"].get("last_error") is not None)
        ready = httpx.get(f"{http}/readyz").json()
        assert "p0.yaml" in ready["checks"]["policy"]["last_error"]
        assert ready["checks"]["policy"]["version"] == new_version
        assert refund(80).status_code == 200
        # The admin endpoint: refused without the admin token (an agent JWT is not one)...
        agent = httpx.post(f"{http}/v1/policy/reload", headers={"authorization": f"Bearer {gw.token()}"})
        assert agent.status_code == 401
        # ...and with it, a forced reload that reports the rejection.
        forced = httpx.post(f"{http}/v1/policy/reload", headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
        assert forced.status_code == 422
        assert forced.json()["policy_version"] == new_version
        assert ADMIN_TOKEN not in forced.text
        metrics = httpx.get(f"{http}/metrics").text
        assert "aegis_policy_load_failures_total" in metrics
        (policies / "p0.yaml").write_text(SUPPORT)
        fixed = httpx.post(f"{http}/v1/policy/reload", headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
        assert fixed.status_code == 200 and fixed.json()["changed"] is True
        assert refund(80).status_code == 202
    finally:
        gw.client.close()
        gw.stack.stop()
    assert os.environ["AEGIS_TEST_ADMIN"] == ADMIN_TOKEN
