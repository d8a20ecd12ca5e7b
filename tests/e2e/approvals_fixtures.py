"""Shared pieces of the approval end-to-end tests: a local receiver standing in for Slack,
Teams and a webhook consumer, and a gateway configured with approvals."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import Gateway, copy_policy_dir, start_gateway

SLACK_BOT_TOKEN = "xoxb-test-bot-token"  # noqa: S105 - test credential
SLACK_SIGNING_SECRET = "slack-signing-secret-for-tests"  # noqa: S105
HOOK_SECRET = "webhook-secret-for-tests"  # noqa: S105
OPERATOR_TOKEN = "operator-token-for-tests"  # noqa: S105
CONSOLE_TOKEN = "alice-console-token"  # noqa: S105
APPROVER_SLACK_ID = "U0LEAD"
CHANNEL = "C0APPROVALS"
ENV = {
    "AEGIS_TEST_SLACK_BOT": SLACK_BOT_TOKEN,
    "AEGIS_TEST_SLACK_SIGNING": SLACK_SIGNING_SECRET,
    "AEGIS_TEST_HOOK_SECRET": HOOK_SECRET,
    "AEGIS_TEST_OPERATOR": OPERATOR_TOKEN,
}
REFUND = {"currency": "USD", "customer_id": "c-1"}


class Receiver:
    """Records every request; answers like Slack's Web API, a Teams workflow and a webhook."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail_next = 0  # answer this many requests with 500 first (retry tests)
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver._lock:
                    failing = receiver.fail_next > 0
                    receiver.fail_next -= 1 if failing else 0
                    receiver.requests.append(
                        {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
                    )
                if failing:
                    self.send_response(500)
                    self.end_headers()
                    return
                answer: dict[str, Any] = {"ok": True}
                if self.path == "/slack/chat.postMessage":
                    answer = {"ok": True, "channel": CHANNEL, "ts": "1700000000.000100"}
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                found = [r for r in self.requests if predicate(r)]
            if found:
                return found[-1]
            time.sleep(0.05)
        raise AssertionError("the receiver did not get the expected request")

    def slack_message(self, approval_id: str, method: str = "chat.postMessage") -> dict[str, Any]:
        request = self.wait_for(lambda r: r["path"] == f"/slack/{method}" and approval_id.encode() in r["body"])
        return {**request, "json": json.loads(request["body"])}


def slack_headers(body: bytes, ts: int | None = None, secret: str = SLACK_SIGNING_SECRET) -> dict[str, str]:
    """Slack's request signing: the timestamp and ``v0=`` HMAC-SHA256 of ``v0:{ts}:{body}``."""
    timestamp = str(int(time.time()) if ts is None else ts)
    mac = hmac.new(secret.encode(), b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    return {"x-slack-request-timestamp": timestamp, "x-slack-signature": f"v0={mac}"}


def slack_post(
    gw: Gateway,
    payload: dict[str, Any] | str,
    *,
    secret: str = SLACK_SIGNING_SECRET,
    ts: int | None = None,
) -> httpx.Response:
    """POST an interaction to the service the way Slack does (form-encoded, signed)."""
    raw = payload if isinstance(payload, str) else json.dumps(payload)
    body = urllib.parse.urlencode({"payload": raw}).encode()
    headers = {"content-type": "application/x-www-form-urlencoded", **slack_headers(body, ts, secret)}
    return httpx.post(f"http://{gw.config.service.http}/v1/slack/interactions", content=body, headers=headers)


def click(
    gw: Gateway, approval_id: str, action: str = "approve", user: str = APPROVER_SLACK_ID, **kw: Any
) -> httpx.Response:
    payload = {
        "type": "block_actions",
        "user": {"id": user, "username": "lead"},
        "actions": [{"action_id": action, "block_id": "aegis_approval", "value": approval_id, "type": "button"}],
    }
    return slack_post(gw, payload, **kw)


def approvals_config(receiver_url: str, **over: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "token_ttl": "10m",
        "operator_token_env": "AEGIS_TEST_OPERATOR",
        "sweep_interval": "1s",
        "notify_backoff": "100ms",
        "slack": {"signing_secret_env": "AEGIS_TEST_SLACK_SIGNING", "api_url": f"{receiver_url}/slack"},
        "console": {
            "approvers": {
                "alice": {
                    "token_sha256": hashlib.sha256(CONSOLE_TOKEN.encode()).hexdigest(),
                    "email": "alice@example.com",
                },
                "mallory": {"token_sha256": hashlib.sha256(b"mallory-token").hexdigest()},
            }
        },
        "groups": {
            "support-leads": {
                "approvers": [APPROVER_SLACK_ID, "alice"],
                "notify": [
                    {"slack": {"bot_token_env": "AEGIS_TEST_SLACK_BOT", "channel": CHANNEL}},
                    {"teams": {"webhook_url": f"{receiver_url}/teams"}},
                    {"webhook": {"url": f"{receiver_url}/hook", "secret_env": "AEGIS_TEST_HOOK_SECRET"}},
                ],
            }
        },
    }
    config.update(over)
    return config


@contextmanager
def approvals_gateway(
    directory: Path, receiver: Receiver, *, policy_yaml: str | None = None, **over: Any
) -> Iterator[Gateway]:
    """A gateway with approvals notifying ``receiver``, its secrets in the environment it
    starts with (``ENV``); stopped on exit."""
    policy_dir = copy_policy_dir(directory / "policies", policy_yaml) if policy_yaml else None
    with pytest.MonkeyPatch.context() as mp:
        for name, value in ENV.items():
            mp.setenv(name, value)
        gateway = start_gateway(
            directory / "gw", policy_dir=policy_dir, extra={"approvals": approvals_config(receiver.url, **over)}
        )
    try:
        yield gateway
    finally:
        gateway.client.close()
        gateway.stack.stop()


def refund(gw: Gateway, amount: float, token: str | None = None, override: str | None = None) -> httpx.Response:
    headers = {"x-aegis-override": override} if override else {}
    return gw.call(
        "POST", "payments.demo", "/v1/refunds", token=token, json={"amount": amount, **REFUND}, headers=headers
    )


def status(gw: Gateway, approval_id: str, token: str | None = None) -> dict[str, Any]:
    response = httpx.get(
        f"http://{gw.config.service.http}/v1/approvals/{approval_id}",
        headers={"authorization": f"Bearer {token or gw.token()}"},
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def operator(gw: Gateway, method: str, path: str, **kw: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {OPERATOR_TOKEN}", **kw.pop("headers", {})}
    return httpx.request(method, f"http://{gw.config.service.http}/v1/operator/approvals{path}", headers=headers, **kw)


def approve(gw: Gateway, approval_id: str, comment: str = "ok") -> None:
    response = operator(gw, "POST", f"/{approval_id}/approve", json={"comment": comment})
    assert response.status_code == 200, response.text
