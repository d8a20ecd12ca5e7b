"""The demo tool servers: their answers, and the record of what reached them."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import free_port

from extauthz.config import AegisConfig, IdentityConfig, PolicyConfig
from extauthz.demo_tools import CRM_RECORD, RECEIVED_LIMIT, DemoToolServer, crm, start_demo_tools
from extauthz.errors import ConfigError


def make_config(upstreams: dict[str, str]) -> AegisConfig:
    return AegisConfig(
        path=Path("/srv/aegis/aegis.yaml"),
        identity=IdentityConfig(issuer="i", audience="a", public_keys=(Path("/srv/k.pem"),)),
        policy=PolicyConfig(dir=Path("/srv/policies")),
        upstreams=upstreams,
    )


@pytest.fixture(scope="module")
def tools() -> Iterator[dict[str, str]]:
    upstreams = {host: f"http://127.0.0.1:{free_port()}" for host in ("payments.demo", "slack.demo", "crm.demo")}
    servers = start_demo_tools(make_config({**upstreams, "other.example": "http://127.0.0.1:1"}))
    try:
        assert sorted(s.name for s in servers) == ["crm.demo", "payments.demo", "slack.demo"]
        yield upstreams
    finally:
        for server in servers:
            server.shutdown()


@pytest.fixture
def client(tools: dict[str, str]) -> Iterator[httpx.Client]:
    for url in tools.values():
        httpx.delete(f"{url}/_received", timeout=5)
    with httpx.Client(timeout=5) as c:
        yield c


def test_refund_answers_with_an_id_and_echo(tools: dict[str, str], client: httpx.Client) -> None:
    body = {"amount": 20.0, "currency": "USD", "customer_id": "c-1"}
    response = client.post(f"{tools['payments.demo']}/v1/refunds", json=body)
    assert response.status_code == 200
    refund = response.json()
    assert refund["id"].startswith("re_") and refund["status"] == "succeeded"
    assert (refund["amount"], refund["currency"], refund["customer_id"]) == (20.0, "USD", "c-1")
    assert refund["request"] == body


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/v1/refunds", b"not json", 400),
        ("POST", "/v1/refunds", b'{"amount": "20"}', 400),
        ("POST", "/v1/refunds", b'{"amount": true}', 400),
        ("GET", "/v1/refunds", b"", 405),
        ("POST", "/v1/charges", b"{}", 404),
    ],
)
def test_refund_rejects_what_the_api_would(
    tools: dict[str, str], client: httpx.Client, method: str, path: str, body: bytes, status: int
) -> None:
    response = client.request(method, f"{tools['payments.demo']}{path}", content=body)
    assert response.status_code == status
    assert "error" in response.json()


def test_slack_echoes_the_text_it_received(tools: dict[str, str], client: httpx.Client) -> None:
    response = client.post(
        f"{tools['slack.demo']}/api/chat.postMessage", json={"channel": "#support", "text": "Ticket 4411 resolved"}
    )
    assert response.status_code == 200
    answer = response.json()
    assert answer["ok"] is True and answer["channel"] == "#support"
    assert answer["message"]["text"] == "Ticket 4411 resolved"
    bad = client.post(f"{tools['slack.demo']}/api/chat.postMessage", json={"text": "no channel"})
    assert bad.json() == {"ok": False, "error": "invalid_arguments"}


def test_crm_returns_a_record_full_of_fake_pii(tools: dict[str, str], client: httpx.Client) -> None:
    response = client.get(f"{tools['crm.demo']}/tenants/acme/records/r-1001")
    assert response.status_code == 200
    record = response.json()
    assert record["tenant_id"] == "acme" and record["record_id"] == "r-1001"
    for key in ("full_name", "email", "phone", "ssn", "dob", "address", "notes"):
        assert record[key] == CRM_RECORD[key]
    assert record["ssn"] == "123-45-6789"
    assert client.get(f"{tools['crm.demo']}/tenants/acme/records").status_code == 404
    assert client.post(f"{tools['crm.demo']}/tenants/acme/records/r-1").status_code == 405


def test_received_records_method_path_headers_and_body(tools: dict[str, str], client: httpx.Client) -> None:
    url = tools["payments.demo"]
    client.post(
        f"{url}/v1/refunds?dry=1",
        json={"amount": 5},
        headers={"x-aegis-decision-id": "d-1", "X-Twice": "a"},
    )
    [entry] = client.get(f"{url}/_received").json()
    assert entry["method"] == "POST"
    assert entry["path"] == "/v1/refunds?dry=1"
    assert entry["headers"]["x-aegis-decision-id"] == "d-1"
    assert entry["headers"]["x-twice"] == "a"  # names are lower-cased
    assert "authorization" not in entry["headers"]
    assert entry["body"] == '{"amount":5}'
    assert client.get(f"{tools['slack.demo']}/_received").json() == []  # one record per tool


def test_received_keeps_the_last_requests_only() -> None:
    server = DemoToolServer("127.0.0.1", 0, "crm.demo", crm, limit=3).start()
    try:
        with httpx.Client(timeout=5) as c:
            for n in range(5):
                c.get(f"{server.url}/tenants/t/records/r-{n}")
            received = c.get(f"{server.url}/_received").json()
        assert [e["path"] for e in received] == [f"/tenants/t/records/r-{n}" for n in (2, 3, 4)]
    finally:
        server.shutdown()
    assert RECEIVED_LIMIT >= 50


def test_chunked_request_bodies_are_read(tools: dict[str, str], client: httpx.Client) -> None:
    # Envoy re-encodes buffered bodies as chunked when ext_proc skips the header phase.
    def chunks() -> Iterator[bytes]:
        yield b'{"channel": "#support", '
        yield b'"text": "in two chunks"}'

    response = client.post(f"{tools['slack.demo']}/api/chat.postMessage", content=chunks())
    assert response.json()["message"]["text"] == "in two chunks"
    [entry] = client.get(f"{tools['slack.demo']}/_received").json()
    assert entry["headers"]["transfer-encoding"] == "chunked"


def test_keep_alive_serves_several_requests_on_one_connection(tools: dict[str, str]) -> None:
    with httpx.Client(timeout=5) as c:
        for _ in range(3):
            assert c.get(f"{tools['crm.demo']}/tenants/a/records/b").status_code == 200


def test_shutdown_frees_the_port() -> None:
    port = free_port()
    [server] = start_demo_tools(make_config({"crm.demo": f"http://127.0.0.1:{port}"}))
    server.shutdown()
    [again] = start_demo_tools(make_config({"crm.demo": f"http://127.0.0.1:{port}"}))
    again.shutdown()


def test_port_in_use_is_a_config_error_naming_the_tool() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = make_config({"slack.demo": f"http://127.0.0.1:{free_port()}", "crm.demo": f"http://127.0.0.1:{port}"})
        with pytest.raises(ConfigError, match="upstreams.crm.demo"):
            start_demo_tools(config)


def test_https_upstream_is_refused() -> None:
    with pytest.raises(ConfigError, match="plain http"):
        start_demo_tools(make_config({"payments.demo": "https://payments.example"}))


def test_standalone_module_serves_until_terminated(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "aegis.yaml"
    config.write_text(
        "identity: {issuer: i, audience: a, public_keys: [k.pem]}\npolicy: {dir: p}\n"
        f"upstreams: {{payments.demo: 'http://127.0.0.1:{port}'}}\n",
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "extauthz.demo_tools", "-c", str(config)], stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/_received", timeout=1).json() == []
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert f"demo tool payments.demo on http://127.0.0.1:{port}" in err


def test_config_with_no_demo_host_is_rejected_by_the_module(tmp_path: Path) -> None:
    config = tmp_path / "aegis.yaml"
    config.write_text("identity: {issuer: i, audience: a, public_keys: [k.pem]}\npolicy: {dir: p}\n")
    result = subprocess.run(
        [sys.executable, "-m", "extauthz.demo_tools", "-c", str(config)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "no payments.demo" in result.stderr
