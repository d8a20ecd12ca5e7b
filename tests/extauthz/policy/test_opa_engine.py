"""The OPA sidecar engine: real OPA decisions, revision pinning, and every failure → EngineError."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from helpers import POLICIES, copy_policy_dir, free_port, write_config

from extauthz.config import load_config
from extauthz.decision import Effect
from extauthz.engine import create_engine
from extauthz.engine.opa import OpaEngine
from extauthz.errors import ConfigError, EngineError
from extauthz.policy import build_bundle

pytestmark = pytest.mark.opa
SUPPORT = build_bundle(POLICIES)


def refund(amount, scopes=("payments.refund",)):
    return {
        "agent": {"id": "bot", "tenant": "acme", "scopes": list(scopes), "chain": [], "labels": {}},
        "tool": {"name": "payments.refund", "args": {"amount": amount}},
        "request": {"method": "POST", "host": "payments.demo", "path": "/v1/refunds", "query": "", "headers": {}},
        "context": {"purpose": None, "now": "", "calendars": {"business_hours": True}},
        "override": None,
    }


def test_opa_decides_like_the_native_engine(opa_support):
    engine = create_engine(SUPPORT, "opa", opa_url=opa_support.url)
    assert isinstance(engine, OpaEngine)
    native = create_engine(SUPPORT, "native")
    with engine:
        for amount, effect in [(20, Effect.ALLOW), (120, Effect.APPROVAL_NEEDED), (900, Effect.DENY)]:
            decision = engine.evaluate(refund(amount))
            assert decision.effect is effect
            assert decision == native.evaluate(refund(amount))
            assert decision.policy_version == SUPPORT.revision
        assert engine.evaluate(refund(20, scopes=())).rules == ("scope-missing",)


def test_a_sidecar_serving_another_policy_version_fails_closed(opa_support, tmp_path):
    changed = (POLICIES / "support.yaml").read_text().replace("lte: 50}", "lte: 60}")
    other = build_bundle(copy_policy_dir(tmp_path / "p", changed))
    assert other.revision != SUPPORT.revision
    with (
        OpaEngine(other, opa_support.url) as engine,
        pytest.raises(EngineError, match=f"serves policy version {SUPPORT.revision}, not {other.revision}"),
    ):
        engine.evaluate(refund(20))


def test_a_sidecar_without_bundle_fails_closed(opa_rest):
    opa_rest.load(SUPPORT)
    opa_rest.client.delete("/v1/data/system/bundles/aegis")  # the policy stays, the provenance goes
    with (
        OpaEngine(SUPPORT, opa_rest.url) as engine,
        pytest.raises(EngineError, match="serves policy version no bundle"),
    ):
        engine.evaluate(refund(20))


def test_opa_down_is_an_engine_error():
    engine = OpaEngine(SUPPORT, f"http://127.0.0.1:{free_port()}", timeout_s=0.5)
    with engine, pytest.raises(EngineError, match="unreachable") as info:
        engine.evaluate(refund(20))
    assert info.value.code == "engine_unavailable"


def test_opa_slow_is_an_engine_error():
    """A sidecar that accepts the connection and never answers: the timeout fails closed."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []
    thread = threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True)
    thread.start()
    engine = OpaEngine(SUPPORT, f"http://127.0.0.1:{listener.getsockname()[1]}", timeout_s=0.2)
    started = time.monotonic()
    try:
        with pytest.raises(EngineError, match="did not answer in time"):
            engine.evaluate(refund(20))
        assert time.monotonic() - started < 2
    finally:
        engine.close()
        for conn in accepted:
            conn.close()
        listener.close()


def _engine_answering(handler) -> OpaEngine:
    return OpaEngine(SUPPORT, "http://opa.test", client=httpx.Client(transport=httpx.MockTransport(handler)))


PROVENANCE = {"bundles": {"b": {"revision": SUPPORT.revision}}}


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (httpx.Response(500, json={"code": "internal_error", "message": "boom"}), "answered 500: internal_error: boom"),
        (httpx.Response(400, text="not json"), "answered 400: not json"),
        (httpx.Response(200, text="{not json"), "invalid JSON"),
        (httpx.Response(200, json=[1]), "non-object"),
        (httpx.Response(200, json={"provenance": PROVENANCE}), "no decision"),
        (httpx.Response(200, json={"provenance": PROVENANCE, "result": {"effect": "maybe"}}), "malformed decision"),
    ],
)
def test_every_bad_opa_answer_is_an_engine_error(response, message):
    with _engine_answering(lambda request: response) as engine, pytest.raises(EngineError, match=message):
        engine.evaluate(refund(20))


def test_transport_errors_are_translated():
    def broken(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("connection reset", request=request)

    with _engine_answering(broken) as engine, pytest.raises(EngineError, match="unreachable"):
        engine.evaluate(refund(20))


def test_an_unserialisable_input_is_an_engine_error():
    with _engine_answering(lambda r: httpx.Response(200)) as engine, pytest.raises(EngineError, match="cannot be sent"):
        engine.evaluate(refund(float("nan")))


def test_the_query_asks_for_provenance_on_the_decision_entry_point():
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(500)

    with _engine_answering(record) as engine, pytest.raises(EngineError):
        engine.evaluate(refund(20))
    assert seen[0].method == "POST"
    assert seen[0].url.path == "/v1/data/aegis/decision"
    assert seen[0].url.params["provenance"] == "true"


# --- configuration ------------------------------------------------------------------------


def _config(tmp_path: Path, policy: dict) -> Path:
    return write_config(tmp_path, {"policy": {"dir": str(POLICIES), **policy}})


def test_config_engine_opa_with_its_url(tmp_path):
    config = load_config(
        _config(tmp_path, {"engine": "opa", "opa_url": "http://127.0.0.1:8181/", "opa_timeout": "250ms"})
    )
    assert config.policy.engine == "opa"
    assert config.policy.opa_url == "http://127.0.0.1:8181"
    assert config.policy.opa_timeout_s == 0.25


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"engine": "opa"}, "policy.opa_url: expected the http"),
        ({"engine": "opa", "opa_url": "127.0.0.1:8181"}, "policy.opa_url: expected the http"),
        ({"opa_url": "http://127.0.0.1:8181"}, "policy.opa_url: expected no value unless policy.engine is opa"),
        ({"engine": "wasm"}, "policy.engine: expected one of embedded, native, regopy, opa"),
        ({"engine": "opa", "opa_url": "http://o", "opa_timeout": "soon"}, "policy.opa_timeout"),
    ],
)
def test_config_errors_name_the_key(tmp_path, policy, message):
    with pytest.raises(ConfigError, match=message):
        load_config(_config(tmp_path, policy))
