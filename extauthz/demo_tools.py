"""Demo tool servers behind Envoy: payments, Slack and a CRM, for the demo and end-to-end tests.

Each server answers its tool like the real API would (in miniature) and records the last
requests it received, exposed at ``GET /_received`` (``DELETE /_received`` clears them), so a
test can assert what actually reached the upstream: no ``Authorization`` header, a
redacted body, the ``x-aegis-decision-id`` header.

    payments.demo  POST /v1/refunds                         {"amount","currency","customer_id"}
    slack.demo     POST /api/chat.postMessage               {"channel","text"}
    crm.demo       GET  /tenants/{tenant_id}/records/{id}   → a customer record full of fake PII

Run standalone with ``python -m extauthz.demo_tools -c aegis.yaml``; ``aegis up`` starts
them in-process through :func:`start_demo_tools`.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import signal
import sys
import threading
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from extauthz.config import AegisConfig, load_config
from extauthz.errors import AegisError, ConfigError

RECEIVED_LIMIT = 100
MAX_BODY_BYTES = 10 * 1024 * 1024
RECEIVED_PATH = "/_received"

Answer = tuple[int, Any]
# (method, path, body) → (status, JSON document)
Tool = Callable[[str, str, bytes], Answer]

# Obviously fake, but valid for the detectors (SSN area/group/serial, Luhn card, 555-01xx
# fictional phone, example.com mail), so redaction has something real to find.
CRM_RECORD = {
    "full_name": "Jane Q. Customer",
    "email": "jane.customer@example.com",
    "phone": "+1 415-555-0142",
    "ssn": "123-45-6789",
    "dob": "1984-07-19",
    "address": "742 Evergreen Terrace, Springfield, IL 62704",
    "notes": (
        "Called from +1 415-555-0142 about a double charge on card 4111 1111 1111 1111; "
        "prefers e-mail (jane.customer@example.com). Verified with SSN 123-45-6789."
    ),
}
_CRM_PATH = re.compile(r"^/tenants/(?P<tenant_id>[^/]+)/records/(?P<record_id>[^/]+)$")


class _BadBody(ValueError):
    """The request body cannot be read (400), or is over MAX_BODY_BYTES (413)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _error(status: int, code: str, message: str) -> Answer:
    return status, {"error": code, "message": message}


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def payments(method: str, path: str, body: bytes) -> Answer:
    """``POST /v1/refunds``: a refund, echoing what was asked."""
    if path != "/v1/refunds":
        return _error(404, "not_found", f"no route {path}")
    if method != "POST":
        return _error(405, "method_not_allowed", "use POST")
    request = _json_object(body)
    if request is None or isinstance(request.get("amount"), bool) or not isinstance(request.get("amount"), int | float):
        return _error(400, "invalid_request", "a JSON object with a numeric amount is required")
    refund = {
        "id": f"re_{uuid.uuid4().hex[:16]}",
        "object": "refund",
        "status": "succeeded",
        "amount": request["amount"],
        "currency": request.get("currency", "USD"),
        "customer_id": request.get("customer_id"),
    }
    return 200, {**refund, "request": request}


def slack(method: str, path: str, body: bytes) -> Answer:
    """``POST /api/chat.postMessage``: Slack's shape, echoing the text as received."""
    if path != "/api/chat.postMessage":
        return _error(404, "not_found", f"no route {path}")
    if method != "POST":
        return _error(405, "method_not_allowed", "use POST")
    request = _json_object(body)
    if request is None or not isinstance(request.get("channel"), str):
        return 200, {"ok": False, "error": "invalid_arguments"}  # Slack answers errors with 200
    message = {"type": "message", "text": request.get("text", ""), "ts": "1700000000.000100"}
    return 200, {"ok": True, "channel": request["channel"], "ts": message["ts"], "message": message}


def crm(method: str, path: str, body: bytes) -> Answer:
    """``GET /tenants/{tenant_id}/records/{record_id}``: a customer record with fake PII."""
    del body
    match = _CRM_PATH.match(path)
    if match is None:
        return _error(404, "not_found", f"no route {path}")
    if method != "GET":
        return _error(405, "method_not_allowed", "use GET")
    return 200, {"tenant_id": match["tenant_id"], "record_id": match["record_id"], **CRM_RECORD}


TOOLS: dict[str, Tool] = {"payments.demo": payments, "slack.demo": slack, "crm.demo": crm}


class DemoToolServer(ThreadingHTTPServer):
    """One tool's HTTP server with the log of what it received; ``shutdown()`` frees the port."""

    daemon_threads = True

    def __init__(self, host: str, port: int, name: str, tool: Tool, limit: int = RECEIVED_LIMIT) -> None:
        super().__init__((host, port), _Handler)
        self.name = name
        self.tool = tool
        self._received: deque[dict[str, Any]] = deque(maxlen=limit)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._received.append(entry)

    def received(self) -> list[dict[str, Any]]:
        """What this tool received, oldest first."""
        with self._lock:
            return list(self._received)

    def clear(self) -> None:
        with self._lock:
            self._received.clear()

    def start(self) -> DemoToolServer:
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, name=f"demo-{self.name}", daemon=True
        )
        self._thread.start()
        return self

    def shutdown(self) -> None:
        """Stop serving and close the socket (safe to call once the server has started)."""
        if self._thread is not None:
            super().shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive with Envoy's connection pool
    timeout = 60  # an idle kept-alive connection frees its thread after a minute
    server: DemoToolServer

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _handle(self) -> None:
        path = urlsplit(self.path).path
        if path == RECEIVED_PATH:
            self._received_endpoint()
            return
        try:
            body = self._read_body()
        except _BadBody as exc:
            self._send(*_error(exc.status, "bad_body", str(exc)))
            self.close_connection = True
            return
        self.server.record(
            {
                "method": self.command,
                "path": self.path,
                "headers": self._headers(),
                "body": body.decode("utf-8", errors="replace"),
            }
        )
        status, document = self.server.tool(self.command, path, body)
        # Content negotiation like real APIs: SSE when asked for, gzip when accepted.
        if status == 200 and "text/event-stream" in self.headers.get("accept", ""):
            self._send_events(document)
        else:
            self._send(status, document, gzipped="gzip" in self.headers.get("accept-encoding", ""))

    def _received_endpoint(self) -> None:
        if self.command == "DELETE":
            self.server.clear()
            self._send(200, {"cleared": True})
        else:
            self._send(200, self.server.received())

    def _headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        return headers

    def _read_body(self) -> bytes:
        # Envoy re-encodes a buffered body as chunked when ext_proc skips the headers phase.
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            return self._read_chunked()
        length = self.headers.get("content-length") or "0"
        if not length.isdigit():
            raise _BadBody(f"bad content-length {length!r}")
        if int(length) > MAX_BODY_BYTES:
            raise _BadBody("body too large", 413)
        return self.rfile.read(int(length))

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline().split(b";", 1)[0].strip()
            try:
                size = int(line, 16)
            except ValueError:
                raise _BadBody(f"bad chunk size {line!r}") from None
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                raise _BadBody("body too large", 413)
            chunks.append(self.rfile.read(size))
            self.rfile.readline()  # the CRLF after each chunk

    def _send(self, status: int, document: Any, *, gzipped: bool = False) -> None:
        payload = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        if gzipped:
            payload = gzip.compress(payload, mtime=0)
            self.send_header("content-encoding", "gzip")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _send_events(self, document: Any) -> None:
        """One SSE event per field, each written as its own chunk, every event split in two
        mid-value: redaction must not miss PII that straddles a chunk boundary."""
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        items = document.items() if isinstance(document, dict) else [("data", document)]
        for key, value in items:
            event = f"event: field\ndata: {json.dumps({key: value})}\n\n".encode()
            for part in (event[: len(event) // 2], event[len(event) // 2 :]):
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the access log of record is Envoy's."""


def start_demo_tools(config: AegisConfig, *, host: str | None = None) -> list[DemoToolServer]:
    """Start a server for each demo host in ``config.upstreams``, on the port of its URL.

    ``host`` overrides the bind address (``0.0.0.0`` in a container); by default each server
    binds the host of its URL.  Hosts other than the three demo tools are left alone.
    """
    servers: list[DemoToolServer] = []
    try:
        for name, tool in TOOLS.items():
            url = config.upstreams.get(name)
            if url is None:
                continue
            parts = urlsplit(url)
            if parts.scheme != "http" or parts.hostname is None:
                raise ConfigError(f"upstreams.{name}: the demo tools serve plain http, got {url!r}")
            address = (host or parts.hostname, parts.port or 80)
            try:
                servers.append(DemoToolServer(*address, name, tool).start())
            except OSError as exc:
                raise ConfigError(
                    f"upstreams.{name}: cannot listen on {address[0]}:{address[1]}: {exc.strerror}"
                ) from exc
    except BaseException:
        for server in servers:
            server.shutdown()
        raise
    return servers


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m extauthz.demo_tools -c aegis.yaml [--host 0.0.0.0]``: serve until stopped."""
    parser = argparse.ArgumentParser(prog="python -m extauthz.demo_tools", description="Demo tool servers.")
    parser.add_argument("-c", "--config", required=True, help="aegis.yaml naming the upstream URLs")
    parser.add_argument("--host", help="bind address for every tool (default: the host of each URL)")
    args = parser.parse_args(argv)
    try:
        servers = start_demo_tools(load_config(args.config), host=args.host)
    except AegisError as exc:
        print(f"demo tools: {exc.message}", file=sys.stderr)
        return 2
    if not servers:
        print("demo tools: no payments.demo, slack.demo or crm.demo in upstreams", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    for server in servers:
        print(f"demo tool {server.name} on {server.url}", file=sys.stderr)
    stop.wait()
    for server in servers:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
