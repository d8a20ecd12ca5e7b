"""The path, host and method tricks again, over HTTP/2 cleartext (prior knowledge), plus the
tricks only HTTP/2 allows.

Envoy's listener speaks both protocols (``codec_type: AUTO``), so an agent can skip HTTP/1.1
entirely: ``:path`` and ``:authority`` then arrive as pseudo-headers, parsed by another codec.
The invariant is the same: what Aegis authorises is exactly what the upstream receives, or
nothing reaches it.  Frames are written with ``h2`` and outbound validation off, so a request
can carry what a well-behaved client never sends (uppercase names, a ``host`` that disagrees
with ``:authority``, connection-specific headers, pseudo-headers out of order).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Sequence

import h2.config
import h2.connection
import h2.events
import pytest
from helpers import Gateway

from bypass.test_path_host import (
    DEFAULT_DENY,
    HOST_CASES,
    OVERRIDE_CASES,
    PATH_CASES,
    Attempt,
    refund_ok,
)
from bypass.wire import PURPOSE, REFUND_20, SOCKET_TIMEOUT_S, Closed, Expect, RawResponse, check

pytestmark = pytest.mark.e2e

Header = tuple[bytes, bytes]

# Where HTTP/2 rightly answers differently from HTTP/1.1 (every other case expects the same).
H2_DIFFERS: dict[str, Expect] = {
    # :path must be origin-form in HTTP/2 (RFC 9113 §8.3.1); Envoy refuses the others.
    "relative-target": Closed(),
    "absolute-form": Closed(),
    "absolute-form-host-disagrees": Closed(),
    "absolute-form-userinfo": Closed(),
    "absolute-form-dotdot": Closed(),
    "absolute-form-crm-other-tenant-host-own": Closed(),
    "absolute-form-https-scheme": Closed(),
    "asterisk-target": Closed(),
    "connect-method": Closed(),
    # RFC 9113 §8.3.1 forbids userinfo in :authority; Envoy resets the stream.
    "host-userinfo": Closed(),
    # HTTP/1.1's codec refuses a lowercase method; HTTP/2's forwards it. Methods are
    # case-sensitive, so ``post`` is no catalogued tool (once judged as POST: now fixed).
    "method-lowercase": DEFAULT_DENY,
    # A second Host beside :authority: RFC 9113 §8.3.1 lets :authority win; Envoy keeps it.
    "host-header-twice": refund_ok(),
}


def h2_headers(attempt: Attempt, token: str) -> tuple[list[Header], bytes]:
    """The HTTP/2 spelling of an HTTP/1.1 attempt: ``:authority`` carries its Host."""
    crm = "crm.demo" in attempt.host.lower() or "crm.demo" in attempt.target
    method = attempt.method or ("GET" if crm else "POST")
    body = b"" if method in ("GET", "HEAD") else json.dumps(REFUND_20).encode()
    headers = [
        (b":method", method.encode()),
        (b":scheme", b"http"),
        (b":authority", attempt.host.encode()),
        (b":path", attempt.target.encode("latin-1")),
        (b"authorization", f"Bearer {token}".encode()),
    ]
    extra = (PURPOSE, *attempt.headers) if crm else attempt.headers
    headers += [(name.lower().encode(), value.encode()) for name, value in extra]
    if body:
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return headers, body


def h2_send(gw: Gateway, headers: Sequence[Header], body: bytes = b"") -> RawResponse:
    """One request on a fresh HTTP/2 connection; status None if the stream or the
    connection was reset without an answer."""
    connection = h2.connection.H2Connection(
        h2.config.H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=False, normalize_outbound_headers=False
        )
    )
    host, port = gw.config.envoy.listen.rsplit(":", 1)
    status: int | None = None
    response_headers: dict[str, str] = {}
    received = b""
    with socket.create_connection((host, int(port)), timeout=SOCKET_TIMEOUT_S) as sock:
        connection.initiate_connection()
        stream = connection.get_next_available_stream_id()
        connection.send_headers(stream, list(headers), end_stream=not body)
        if body:
            connection.send_data(stream, body, end_stream=True)
        sock.sendall(connection.data_to_send())
        while data := sock.recv(65536):
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream:
                    response_headers = {bytes(k).decode(): bytes(v).decode() for k, v in event.headers}
                    status = int(response_headers.pop(":status"))
                elif isinstance(event, h2.events.DataReceived) and event.stream_id == stream:
                    received += event.data
                    connection.acknowledge_received_data(event.flow_controlled_length, stream)
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id == stream:
                    return RawResponse(status, response_headers, received)
                elif isinstance(event, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                    return RawResponse(None)
            sock.sendall(connection.data_to_send())
    return RawResponse(None)


def h2_cases() -> list[tuple[str, Attempt, Expect]]:
    return [
        (name, attempt, H2_DIFFERS.get(name, expect))
        for name, attempt, expect in PATH_CASES + HOST_CASES + OVERRIDE_CASES
    ]


def test_every_h2_difference_names_an_http1_case() -> None:
    assert set(H2_DIFFERS) <= {name for name, _, _ in PATH_CASES + HOST_CASES + OVERRIDE_CASES}


@pytest.mark.parametrize(("attempt", "expect"), [c[1:] for c in h2_cases()], ids=[c[0] for c in h2_cases()])
def test_http1_trick_over_h2c(gateway: Gateway, attempt: Attempt, expect: Expect):
    headers, body = h2_headers(attempt, gateway.token())
    check(gateway, h2_send(gateway, headers, body), expect)


# --- tricks only HTTP/2 can play ------------------------------------------------------------


BODY = json.dumps(REFUND_20).encode()
Build = Callable[[Gateway], list[Header]]


def _refund(gateway: Gateway, *, authority: bytes = b"payments.demo") -> list[Header]:
    return [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":authority", authority),
        (b":path", b"/v1/refunds"),
        (b"authorization", f"Bearer {gateway.token()}".encode()),
        (b"content-type", b"application/json"),
    ]


def _swap(headers: list[Header], name: bytes, value: bytes) -> list[Header]:
    return [(n, value if n == name else v) for n, v in headers]


def _without(headers: list[Header], name: bytes) -> list[Header]:
    return [(n, v) for n, v in headers if n != name]


# Each a refund of 20 (allowed when judged as the refund tool), with one thing changed.
H2_ONLY: list[tuple[str, Build, Expect]] = [
    # :authority names one tool, a host header another: :authority routes and is judged.
    ("host-header-disagrees", lambda gw: [*_refund(gw), (b"host", b"slack.demo")], refund_ok()),
    ("authority-of-another-tool", lambda gw: _refund(gw, authority=b"slack.demo"), DEFAULT_DENY),
    (
        "authority-missing-host-given",
        lambda gw: [*_without(_refund(gw), b":authority"), (b"host", b"payments.demo")],
        refund_ok(),
    ),
    ("uppercase-header-name", lambda gw: [*_refund(gw), (b"X-Aegis-Purpose", b"support")], Closed()),
    ("connection-specific-header", lambda gw: [*_refund(gw), (b"connection", b"keep-alive")], Closed()),
    ("transfer-encoding-header", lambda gw: [*_refund(gw), (b"transfer-encoding", b"chunked")], Closed()),
    ("pseudo-header-after-regular", lambda gw: [*_refund(gw)[1:], _refund(gw)[0]], Closed()),
    ("path-pseudo-header-twice", lambda gw: [*_refund(gw), (b":path", b"/v1/other")], Closed()),
    ("path-empty", lambda gw: _swap(_refund(gw), b":path", b""), Closed()),
    ("method-delete-lowercase", lambda gw: _swap(_refund(gw), b":method", b"delete"), DEFAULT_DENY),
    ("content-length-disagrees-with-data", lambda gw: [*_refund(gw), (b"content-length", b"5")], Closed()),
]


@pytest.mark.parametrize(("build", "expect"), [c[1:] for c in H2_ONLY], ids=[c[0] for c in H2_ONLY])
def test_h2_only_trick(gateway: Gateway, build: Build, expect: Expect):
    check(gateway, h2_send(gateway, build(gateway), BODY), expect)
