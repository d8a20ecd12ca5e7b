"""engine: opa through real Envoy: the sidecar decides; its absence fails closed (503)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import POLICIES, start_gateway

from extauthz.errors import PolicyError
from extauthz.policy import build_bundle, write_bundle
from extauthz.policy.opa_local import find_opa, local_opa

pytestmark = pytest.mark.e2e


@pytest.fixture
def opa_available() -> None:
    try:
        find_opa()
    except PolicyError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{exc}; under CI the OPA tests must run")
        pytest.skip(str(exc))


def test_opa_sidecar_engine_end_to_end(tmp_path: Path, opa_available: None) -> None:
    bundle = build_bundle(POLICIES)
    path = tmp_path / "bundle.tar.gz"
    write_bundle(bundle, path)
    with local_opa(bundle) as opa_url:
        policy = {"dir": "", "bundle": str(path), "engine": "opa", "opa_url": opa_url}
        gw = start_gateway(tmp_path / "gw", extra={"policy": policy})

        def refund(amount: float):
            return gw.call("POST", "payments.demo", "/v1/refunds", json={"amount": amount, "currency": "USD"})

        try:
            assert refund(20).status_code == 200
            denied = refund(900)
            assert denied.status_code == 403
            assert denied.json()["rule"] == "refund-over-limit"
            assert denied.json()["policy_version"] == bundle.revision
            assert refund(120).status_code == 202
        except BaseException:
            gw.client.close()
            gw.stack.stop()
            raise
    # The sidecar is gone: every decision fails closed with a clear reason, nothing goes upstream.
    try:
        seen = len(gw.received("payments.demo"))
        down = refund(20)
        assert down.status_code == 503
        assert down.json()["error"] == "engine_unavailable"
        assert len(gw.received("payments.demo")) == seen
    finally:
        gw.client.close()
        gw.stack.stop()
