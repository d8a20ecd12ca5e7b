"""The rendered config in the real Envoy 1.40, against a stub Aegis gRPC service.

Pins the Envoy behaviour the generator relies on: oversize bodies are a 413 before any
Check, unknown hosts a JSON 404 without a Check, a dead replica costs no request, a dead
service is a clean 503 (with and without ext_proc), and the access log carries the metadata.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import struct_pb2
from google.rpc import status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from extauthz.config import AegisConfig, EnvoyConfig, IdentityConfig, PolicyConfig, ServiceConfig
from extauthz.envoy_proc import authz_metadata, replaced_request_answer
from extauthz.envoyconfig import render_bootstrap_yaml
from extauthz.metadata import (
    FEATURE_REQUEST_BODY_FILTER,
    GRPC_ENVOY_FEATURES,
    MD_BODY_PHASES,
    MD_REQUEST_BODY,
    MD_REQUEST_REDACTED,
    PHASES_BOTH_BODIES,
    PHASES_RESPONSE,
)
from extauthz.ports import free_loopback_port as free_port
from extauthz.redactor import BodyOutcome

from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc  # isort: skip
from envoy.service.ext_proc.v3 import external_processor_pb2, external_processor_pb2_grpc  # isort: skip

pytestmark = pytest.mark.e2e
MAX_BODY = 1024


@dataclass
class StubService:
    """Check allows and writes metadata; ext_proc changes nothing; health says SERVING."""

    checks: list[str] = field(default_factory=list)
    features: list[str] = field(default_factory=list)  # each Check's GRPC_ENVOY_FEATURES, "" when absent
    # Each ext_proc message of a response-only stream: its kind and the ext_authz keys forwarded.
    forwarded: list[tuple[str, list[str]]] = field(default_factory=list)

    def Check(self, request: Any, context: Any) -> Any:
        path = request.attributes.request.http.path
        self.checks.append(path)
        self.features.append(dict(context.invocation_metadata()).get(GRPC_ENVOY_FEATURES, ""))
        metadata = struct_pb2.Struct()
        metadata.update({"decision": "allow", "rule": "stub-rule", "tool": "stub.tool"})
        if path in HANDED:  # a request body to put in place, as Check hands a redacted one
            metadata.update({MD_REQUEST_BODY: HANDED[path]})
        if path == RESPONSE_ONLY_PATH:  # Check redacted the request and names the response-only instance
            metadata.update(
                {MD_BODY_PHASES: PHASES_RESPONSE, MD_REQUEST_REDACTED: "", MD_REQUEST_BODY: HANDED["/v1/handed"]}
            )
        if path == OLDER_SERVICE_PATH:  # a service from before the Lua filter: ext_proc puts it in place
            metadata.update(
                {MD_BODY_PHASES: PHASES_BOTH_BODIES, MD_REQUEST_REDACTED: "", MD_REQUEST_BODY: HANDED["/v1/handed"]}
            )
        return external_auth_pb2.CheckResponse(status=status_pb2.Status(code=0), dynamic_metadata=metadata)

    def Process(self, requests: Iterator[Any], context: Any) -> Iterator[Any]:
        for request in requests:
            if request.WhichOneof("request").startswith("response"):
                self.forwarded.append((request.WhichOneof("request"), sorted(authz_metadata(request))))
            handed = authz_metadata(request, (MD_REQUEST_BODY,)).get(MD_REQUEST_BODY)
            if request.HasField("request_headers") and isinstance(handed, str):
                yield replaced_request_answer(BodyOutcome(body=handed.encode()))  # as that service answered
                continue
            response = external_processor_pb2.ProcessingResponse()
            getattr(response, request.WhichOneof("request")).SetInParent()
            yield response


def start_grpc(stub: StubService, port: int) -> grpc.Server:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=[("grpc.so_reuseport", 0)])
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(stub, server)
    external_processor_pb2_grpc.add_ExternalProcessorServicer_to_server(stub, server)
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server


# Path → the request_body the stub Check hands over: a body, and a value that is not text.
HANDED: dict[str, Any] = {"/v1/handed": '{"swapped": true}', "/v1/handed-broken": {"not": "text"}}
OLDER_SERVICE_PATH = "/v1/handed-both-bodies"
RESPONSE_ONLY_PATH = "/v1/handed-response-only"


class Upstream(BaseHTTPRequestHandler):
    bodies: dict[str, bytes] = {}  # path → the last body received there (framed: content-length)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        Upstream.bodies[self.path] = body
        out = json.dumps({"received": len(body)}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Stack:
    base: str
    stub: StubService
    grpc_server: grpc.Server
    log: Path

    with_ext_proc: bool

    def post(self, host: str, body: bytes = b"{}", path: str = "/v1/refunds") -> httpx.Response:
        return httpx.post(f"{self.base}{path}", headers={"host": host}, content=body, timeout=5)


@pytest.fixture(scope="module", params=[True, False], ids=["ext_proc", "no_ext_proc"])
def stack(
    request: pytest.FixtureRequest, envoy_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("envoy")
    listen, admin, grpc_port, dead_port = free_port(), free_port(), free_port(), free_port()
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    config = AegisConfig(
        path=tmp / "aegis.yaml",
        identity=IdentityConfig(issuer="i", audience="a", public_keys=(tmp / "k.pem",)),
        policy=PolicyConfig(dir=tmp),
        envoy=EnvoyConfig(listen=f"127.0.0.1:{listen}", admin=f"127.0.0.1:{admin}", max_request_bytes=MAX_BODY),
        service=ServiceConfig(grpc=f"127.0.0.1:{grpc_port}"),
        upstreams={"payments.demo": f"http://127.0.0.1:{upstream.server_address[1]}"},
    )
    stub = StubService()
    server = start_grpc(stub, grpc_port)
    bootstrap = tmp / "envoy.yaml"
    # A second, dead replica: the retry on connect-failure must hide it from every request.
    endpoints = [config.service.grpc, f"127.0.0.1:{dead_port}"]
    # The stub serves Check and ext_proc on one port; the real service splits them.
    bootstrap.write_text(
        render_bootstrap_yaml(
            config, service_endpoints=endpoints, ext_proc_endpoints=endpoints, with_ext_proc=request.param
        )
    )
    log = tmp / "envoy.out"
    with log.open("wb") as out:
        envoy = subprocess.Popen(
            [envoy_binary, "-c", str(bootstrap), "--concurrency", "1", "--log-level", "error", "--disable-hot-restart"]
            + ["--file-flush-interval-msec", "50"],  # the stdout access log is flushed like a file
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_ready(f"http://127.0.0.1:{admin}/ready", envoy)
        yield Stack(f"http://127.0.0.1:{listen}", stub, server, log, request.param)
    finally:
        envoy.terminate()
        envoy.wait(timeout=10)
        server.stop(None)
        upstream.shutdown()
        upstream.server_close()


def _wait_ready(url: str, envoy: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert envoy.poll() is None, "envoy exited"
        try:
            if httpx.get(url, timeout=1).text.strip() == "LIVE":
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("envoy did not become ready")


def _access_log(stack: Stack, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for line in stack.log.read_text(errors="replace").splitlines():
            if line.startswith("{") and request_id in line:
                entry: dict[str, Any] = json.loads(line)
                return entry
        time.sleep(0.05)
    raise AssertionError(f"no access log line for {request_id}")


def test_allowed_requests_reach_the_upstream_past_a_dead_replica(stack: Stack) -> None:
    for _ in range(6):
        response = stack.post("payments.demo", b'{"amount": 5}')
        assert response.status_code == 200, response.text
        assert response.json() == {"received": 13}
    entry = _access_log(stack, response.headers["x-request-id"])
    assert entry["decision"] == "allow"
    assert entry["rule"] == "stub-rule"
    assert entry["tool"] == "stub.tool"
    assert entry["upstream_cluster"] == "upstream_payments_demo"
    assert int(entry["ext_authz_us"]) > 0


def test_a_handed_request_body_is_put_in_place_only_by_a_bootstrap_that_says_so(stack: Stack) -> None:
    sent = b'{"card": "agent sent this"}'
    response = stack.post("payments.demo", sent, path="/v1/handed")
    assert response.status_code == 200, response.text
    Upstream.bodies.pop("/v1/handed-broken", None)
    broken = stack.post("payments.demo", sent, path="/v1/handed-broken")
    if stack.with_ext_proc:  # the Lua filter is there, and every Check is told
        assert Upstream.bodies["/v1/handed"] == HANDED["/v1/handed"].encode()
        assert stack.stub.features[-1] == FEATURE_REQUEST_BODY_FILTER
        # A handed value it cannot put in place refuses the call, never sends the agent's body.
        assert broken.status_code == 502 and broken.json()["error"] == "redaction_failed"
        assert "/v1/handed-broken" not in Upstream.bodies
    else:  # no filter, no claim: Check would leave the body to ext_proc (here: none)
        assert Upstream.bodies["/v1/handed"] == sent
        assert stack.stub.features[-1] == ""
        assert broken.status_code == 200 and Upstream.bodies["/v1/handed-broken"] == sent


def test_a_service_from_before_the_filter_still_gets_its_body_to_the_tool_framed(stack: Stack) -> None:
    # Upgrading Envoy first: the service names both bodies and ext_proc puts the body in
    # place at the request headers (Envoy drops its length); the Lua filter puts it in place
    # again and frames it.  A chunked request, so only the filter can give it a length.
    if not stack.with_ext_proc:
        pytest.skip("no ext_proc instance in this bootstrap")
    response = httpx.post(
        f"{stack.base}{OLDER_SERVICE_PATH}",
        headers={"host": "payments.demo"},
        content=iter([b'{"card": "agent ', b'sent this"}']),
        timeout=5,
    )
    assert response.status_code == 200, response.text
    assert Upstream.bodies[OLDER_SERVICE_PATH] == HANDED["/v1/handed"].encode()


def test_a_body_put_in_place_is_not_forwarded_to_ext_proc(stack: Stack) -> None:
    # ext_proc is sent the ext_authz metadata with each message; once the filter has put the
    # body in place it is dropped from there, and what the stream reads is still forwarded.
    if not stack.with_ext_proc:
        pytest.skip("no ext_proc instance in this bootstrap")
    stack.stub.forwarded.clear()
    response = stack.post("payments.demo", b'{"card": "agent sent this"}', path=RESPONSE_ONLY_PATH)
    assert response.status_code == 200, response.text
    assert Upstream.bodies[RESPONSE_ONLY_PATH] == HANDED["/v1/handed"].encode()
    assert [kind for kind, _ in stack.stub.forwarded] == ["response_headers", "response_body"]
    for _, keys in stack.stub.forwarded:
        assert MD_REQUEST_REDACTED in keys and MD_BODY_PHASES in keys
        assert MD_REQUEST_BODY not in keys


def test_body_over_the_limit_is_413_without_a_check(stack: Stack) -> None:
    before = len(stack.stub.checks)
    assert stack.post("payments.demo", b"x" * MAX_BODY).status_code == 200
    response = stack.post("payments.demo", b"x" * (MAX_BODY + 1))
    assert response.status_code == 413
    assert len(stack.stub.checks) == before + 1
    assert _access_log(stack, response.headers["x-request-id"])["response_code_details"] == "request_payload_too_large"
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "error": "body_too_large",
        "message": f"the request body is larger than the {MAX_BODY} bytes Envoy forwards to Aegis",
        "request_id": response.headers["x-request-id"],
    }


def test_unknown_host_is_a_json_404_without_a_check(stack: Stack) -> None:
    before = len(stack.stub.checks)
    response = stack.post("evil.example")
    assert response.status_code == 404
    assert response.json() == {"error": "unknown_host"}
    assert response.headers["content-type"] == "application/json"
    assert len(stack.stub.checks) == before


def test_escaped_slashes_are_rejected(stack: Stack) -> None:
    response = httpx.get(f"{stack.base}/v1%2Frefunds", headers={"host": "payments.demo"}, timeout=5)
    assert response.status_code == 400


def test_service_down_is_a_clean_503(stack: Stack) -> None:
    # Last in the module: stops the stub service for good.
    stack.grpc_server.stop(None)
    response = stack.post("payments.demo")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"] == "aegis_unavailable"
    assert body["message"].startswith("Aegis did not answer") and "fail closed" in body["message"]
    assert body["request_id"] == response.headers["x-request-id"]
    # ext_proc (when configured) has no response phase for ext_authz's local reply.
    details = _access_log(stack, response.headers["x-request-id"])["response_code_details"]
    assert details == "ext_authz_error", details
