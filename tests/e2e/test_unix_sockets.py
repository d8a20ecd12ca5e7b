"""Check and ext_proc over Unix domain sockets (``service.grpc: unix:PATH``): real Envoy
connects through pipes, decisions and redaction work as over TCP, and the drain logic still
tells Envoys apart (by process id, as a socket's client has no address)."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from helpers import POLICIES, Gateway, copy_policy_dir, free_port, start_gateway

from extauthz.supervisor import SupervisorError, check_ports_free

pytestmark = pytest.mark.e2e

ALWAYS_OPEN = '      - {days: [mon, tue, wed, thu, fri, sat, sun], start: "00:00", end: "24:00"}'
SSN = "123-45-6789"
REFUND = {"amount": 20.0, "currency": "USD", "customer_id": "c-1"}


@pytest.fixture(scope="module")
def sockets_dir() -> Iterator[Path]:
    # sun_path holds 107 bytes: pytest's tmp paths can be longer, so a short directory.
    with tempfile.TemporaryDirectory(prefix="aegis-uds-", dir="/tmp") as tmp:
        yield Path(tmp)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, sockets_dir: Path) -> Iterator[Gateway]:
    policy = (POLICIES / "support.yaml").read_text()
    policy = policy.replace('      - {days: [mon, tue, wed, thu, fri], start: "09:00", end: "17:00"}', ALWAYS_OPEN)
    root = tmp_path_factory.mktemp("uds")
    policies = copy_policy_dir(root / "policies", policy)
    service = {"grpc": f"unix:{sockets_dir / 'grpc.sock'}", "ext_proc": f"unix:{sockets_dir / 'ext_proc.sock'}"}
    gw = start_gateway(root / "gw", policy_dir=policies, extra={"service": service})
    try:
        yield gw
    finally:
        gw.client.close()
        gw.stack.stop()


def test_the_service_listens_on_the_sockets_and_envoy_uses_pipes(gateway: Gateway, sockets_dir: Path) -> None:
    for name in ("grpc.sock", "ext_proc.sock"):
        assert stat.S_ISSOCK(os.stat(sockets_dir / name).st_mode), name
    # Envoy's admin names a pipe endpoint by its path; both clusters turn healthy through it.
    wanted = [
        f"aegis_grpc::{sockets_dir / 'grpc.sock'}::health_flags::healthy",
        f"aegis_ext_proc::{sockets_dir / 'ext_proc.sock'}::health_flags::healthy",
    ]
    deadline = time.monotonic() + 10
    while True:
        clusters = httpx.get(f"http://{gateway.config.envoy.admin}/clusters", timeout=5).text
        if all(line in clusters for line in wanted) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for line in wanted:
        assert line in clusters


def test_decisions_over_a_unix_socket(gateway: Gateway) -> None:
    def refund(amount: float, **kw: object) -> httpx.Response:
        return gateway.call("POST", "payments.demo", "/v1/refunds", json={**REFUND, "amount": amount}, **kw)

    allowed = refund(20)
    assert allowed.status_code == 200, allowed.text
    assert any(
        r["headers"].get("x-aegis-decision-id") == allowed.headers["x-aegis-decision-id"]
        for r in gateway.received("payments.demo")
    )
    assert refund(120).status_code == 202  # approval needed
    assert refund(20, auth=False).status_code == 401


def test_redaction_over_a_unix_socket(gateway: Gateway) -> None:
    text = f"Customer verified with SSN {SSN}"
    response = gateway.call("POST", "slack.demo", "/api/chat.postMessage", json={"channel": "#support", "text": text})
    assert response.status_code == 200, response.text
    decision_id = response.headers["x-aegis-decision-id"]
    seen = [r for r in gateway.received("slack.demo") if r["headers"].get("x-aegis-decision-id") == decision_id]
    assert len(seen) == 1
    assert SSN not in seen[0]["body"]
    assert "[REDACTED:SSN]" in json.loads(seen[0]["body"])["text"]


def test_a_live_socket_is_named_as_taken(gateway: Gateway) -> None:
    # Another aegis on the same config: only the sockets are taken.
    config = gateway.config
    envoy = dataclasses.replace(config.envoy, listen=f"127.0.0.1:{free_port()}", admin=f"127.0.0.1:{free_port()}")
    service = dataclasses.replace(config.service, http=f"127.0.0.1:{free_port()}")
    config = dataclasses.replace(
        config, envoy=envoy, service=service, demo=dataclasses.replace(config.demo, tools=False)
    )
    with pytest.raises(SupervisorError, match=r"service\.grpc: unix:.* is already in use"):
        check_ports_free(config)


def test_a_stale_socket_file_is_replaced_but_no_other_file(sockets_dir: Path) -> None:
    front = _front()
    stale = sockets_dir / "stale.sock"
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(str(stale))
    leftover.close()  # the file stays and nobody accepts: what a killed server leaves
    server = front.FrontServer(f"unix:{stale}", {})
    assert server.start() == 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect(str(stale))  # the new server accepts on the same path
    server.stop(1.0)
    assert not stale.exists()  # removed on stop
    regular = sockets_dir / "not-a-socket"
    regular.write_text("keep me")
    with pytest.raises(OSError):
        front.FrontServer(f"unix:{regular}", {}).start()
    assert regular.read_text() == "keep me"


def test_a_socket_peer_is_its_process(sockets_dir: Path) -> None:
    """The drain logic keys Envoys by peer: over a socket, the client's process id."""
    front = _front()

    def echo_peer(message: bytes, metadata: object, peer: str) -> bytes:
        return peer.encode()

    path = sockets_dir / "peer.sock"
    # tonic routes by service name: health's, as the only one served here.
    server = front.FrontServer(f"unix:{path}", {"/grpc.health.v1.Health/Check": echo_peer})
    server.start()
    try:
        # grpcio's default authority is the socket path, which HTTP/2 servers refuse.
        options = [("grpc.default_authority", "localhost")]
        with grpc.insecure_channel(f"unix:{path}", options=options) as channel:
            answer = channel.unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=5)
    finally:
        server.stop(1.0)
    assert answer == f"unix:pid={os.getpid()}".encode()


def _front():  # type: ignore[no-untyped-def]
    from extauthz import grpc_front

    if not grpc_front.available():
        pytest.skip("the compiled gRPC front is not built")
    return grpc_front
