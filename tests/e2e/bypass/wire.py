"""Bytes on the wire and what the upstream tool servers received.

httpx tidies up exactly what an attacker would not (absolute-form targets, ``..``, chunk
framing, repeated headers), so every bypass attempt here is written byte for byte on a
socket to Envoy.  Each attempt is then judged on both sides:

- what the agent sees (status and the rule / reason / error code of the answer), and
- what the upstream test servers (``extauthz.demo_tools``, which record every request)
  received: nothing for a refused call; for an allowed one exactly one request, with the
  path Aegis judged (Envoy's access log carries the path ext_authz saw and the tool Check
  matched) and the body bytes the agent sent.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from helpers import Gateway

REFUND_20 = {"amount": 20, "currency": "USD", "customer_id": "c-1"}
PURPOSE = ("x-aegis-purpose", "support")
SOCKET_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class RawResponse:
    """One HTTP/1.1 response as read off the socket; ``status`` None: closed without one."""

    status: int | None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def code(self) -> str | None:
        """The answer's rule (403/202), reason (401) or error (400/413/404), if it is JSON."""
        try:
            document = self.json()
        except ValueError:
            return None
        if not isinstance(document, dict):
            return None
        return document.get("rule") or document.get("reason") or document.get("error")


def build(
    method: str,
    target: str,
    host: str | None,
    *,
    token: str | None = None,
    body: bytes = b"",
    content_type: str | None = "application/json",
    headers: Sequence[tuple[str, str]] = (),
    chunks: Sequence[bytes] | None = None,
    close: bool = True,
) -> bytes:
    """An HTTP/1.1 request, byte for byte: Content-Length framing, or chunked if ``chunks``."""
    lines = [f"{method} {target} HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host}")
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    if content_type is not None and (body or chunks):
        lines.append(f"Content-Type: {content_type}")
    if chunks is not None:
        lines.append("Transfer-Encoding: chunked")
        body = b"".join(f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in chunks) + b"0\r\n\r\n"
    elif body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    lines.extend(f"{name}: {value}" for name, value in headers)
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def exchange(
    gw: Gateway, data: bytes | Sequence[bytes], *, pause_s: float = 0.0, responses: int = 1
) -> list[RawResponse]:
    """Send ``data`` (a list: one write per item, ``pause_s`` apart) and read until
    ``responses`` complete responses arrived or Envoy closed the connection (a reset counts
    as a close).  Not waiting for the close saves Envoy's delayed-close second per case."""
    host, port = gw.config.envoy.listen.rsplit(":", 1)
    parts = [data] if isinstance(data, bytes) else list(data)
    received = b""
    with socket.create_connection((host, int(port)), timeout=SOCKET_TIMEOUT_S) as sock:
        try:
            for index, part in enumerate(parts):
                if index and pause_s:
                    time.sleep(pause_s)  # separate TCP segments: Envoy must buffer the whole body
                sock.sendall(part)
            while len(parse_responses(received)) < responses and (chunk := sock.recv(65536)):
                received += chunk
        except (ConnectionResetError, BrokenPipeError):
            pass
    return parse_responses(received, closed=True)


def send(gw: Gateway, data: bytes | Sequence[bytes], *, pause_s: float = 0.0) -> RawResponse:
    """The one response to one request (None status if Envoy closed without answering)."""
    responses = exchange(gw, data, pause_s=pause_s)
    return responses[0] if responses else RawResponse(None)


def parse_responses(data: bytes, *, closed: bool = False) -> list[RawResponse]:
    """The complete responses at the start of ``data``; once the connection is ``closed``,
    a short last body counts too (a HEAD answer announces a length it does not send)."""
    responses: list[RawResponse] = []
    while data.startswith(b"HTTP/1."):
        head, separator, rest = data.partition(b"\r\n\r\n")
        if not separator:
            break
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if status == 100:
            data = rest
            continue
        if "chunked" in headers.get("transfer-encoding", ""):
            complete = _dechunk(rest)
            if complete is None:
                break
            body, data = complete
        else:
            length = int(headers.get("content-length", "0"))
            if len(rest) < length and not closed:
                break
            body, data = rest[:length], rest[length:]
        responses.append(RawResponse(status, headers, body))
    return responses


def _dechunk(data: bytes) -> tuple[bytes, bytes] | None:
    body = b""
    while True:
        size_line, separator, data = data.partition(b"\r\n")
        if not separator:
            return None
        size = int(size_line.split(b";", 1)[0], 16)
        if size == 0:
            _, separator, data = data.partition(b"\r\n")
            return (body, data) if separator else None
        if len(data) < size + 2:
            return None
        body, data = body + data[:size], data[size + 2 :]


# --- the upstream side ------------------------------------------------------------------------


def clear_upstreams(gw: Gateway) -> None:
    """Forget what the upstream test servers received (before each case)."""
    for url in gw.config.upstreams.values():
        httpx.delete(f"{url}/_received", timeout=5).raise_for_status()


def upstream_log(gw: Gateway) -> list[tuple[str, dict[str, Any]]]:
    """Every request any upstream received since the last clear, as (host, record)."""
    return [(host, record) for host in gw.config.upstreams for record in gw.received(host)]


def assert_nothing_reached(gw: Gateway) -> None:
    reached = [(host, r["method"], r["path"]) for host, r in upstream_log(gw)]
    assert reached == [], f"a refused call reached an upstream: {reached}"


def assert_reached_once(
    gw: Gateway, response: RawResponse, host: str, method: str, path: str, *, tool: str | None = None
) -> dict[str, Any]:
    """Exactly one upstream request, to ``host`` with ``method`` and ``path``, carrying this
    answer's decision id; with ``tool``, Envoy's access log shows Check judged that tool on
    that very path and method (what is authorised is what is sent)."""
    log = upstream_log(gw)
    assert [(h, r["method"], r["path"]) for h, r in log] == [(host, method, path)]
    record = log[0][1]
    decision_id = response.headers["x-aegis-decision-id"]
    assert record["headers"]["x-aegis-decision-id"] == decision_id
    assert "authorization" not in record["headers"]
    if tool is not None:
        entry = gw.access_log(decision_id)
        assert (entry["tool"], entry["method"], entry["path"]) == (tool, method, path)
    return record


# --- expectations of the parametrized tables ---------------------------------------------------


@dataclass(frozen=True)
class Reach:
    """Allowed: the agent gets ``status`` and the tool exactly this method + path."""

    host: str
    path: str
    tool: str
    method: str = "POST"
    status: int = 200


# Answer codes Envoy gives on its own, without a Check (routes and local_reply_config).
ENVOY_CODES = (None, "unknown_host", "body_too_large")


@dataclass(frozen=True)
class Refused:
    """Refused by Aegis (or Envoy): this status and answer code; nothing reaches a tool."""

    status: int
    code: str | None


@dataclass(frozen=True)
class Closed:
    """Refused by Envoy's HTTP codec: ``status`` if given (501 for a transfer coding it does
    not implement, RFC 9112 §6.1), else no answer at all or a 4xx; nothing reaches a tool."""

    status: int | None = None


Expect = Reach | Refused | Closed


def check(gw: Gateway, response: RawResponse, expect: Expect, *, log: bool = True) -> dict[str, Any] | None:
    """Assert the agent's answer and the upstream side for one case; the record if reached."""
    if isinstance(expect, Reach):
        assert response.status == expect.status, (response.status, response.body[:300])
        return assert_reached_once(
            gw, response, expect.host, expect.method, expect.path, tool=expect.tool if log else None
        )
    if isinstance(expect, Refused):
        assert (response.status, response.code) == (expect.status, expect.code), response.body[:300]
        if expect.code not in ENVOY_CODES:  # Aegis answered (not Envoy on its own)
            assert "x-aegis-decision-id" in response.headers
        elif expect.code == "body_too_large":  # Envoy's own 413 in Aegis's shape (local_reply_config)
            assert "x-aegis-decision-id" not in response.headers
            assert response.json()["request_id"] == response.headers["x-request-id"]
    elif expect.status is not None:
        assert response.status == expect.status, (response.status, response.body[:300])
    else:
        assert response.status is None or 400 <= response.status < 500, (response.status, response.body[:300])
    assert_nothing_reached(gw)
    return None
