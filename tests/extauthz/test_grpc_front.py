"""The compiled gRPC front (extauthz/native) driven by a real grpcio client over loopback.

The e2e suites (tests/e2e) run every Check and ext_proc stream through it behind real Envoy;
these pin down the transport's own contract: statuses, metadata, peer, failures, streams,
concurrency into Python, stop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from google.protobuf import struct_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from helpers import free_port

from extauthz import grpc_front
from extauthz.config import load_config
from extauthz.metadata import EXT_AUTHZ_NAMESPACE, MD_REDACT, MD_TOOL
from extauthz.server import AUTHZ_SERVICE, HEALTH_SERVICE, build_service, start_ext_proc, start_grpc

pytestmark = pytest.mark.skipif(not grpc_front.available(), reason="the gRPC front is not built (make install)")

HEALTH_CHECK = grpc_front.method_path(HEALTH_SERVICE, "Check")
# The front serves the two services Envoy calls; tests hang their handlers on Check.
ECHO = grpc_front.method_path(AUTHZ_SERVICE, "Check")


def _raw(channel: grpc.Channel, path: str) -> grpc.UnaryUnaryMultiCallable:
    return channel.unary_unary(path, request_serializer=lambda b: b, response_deserializer=lambda b: b)


class Recorder:
    """A raw handler that records what it was given and how many calls were inside it at once."""

    def __init__(self, hold_s: float = 0.0) -> None:
        self.calls: list[tuple[bytes, list[tuple[str, str]], str]] = []
        self.hold_s = hold_s
        self.inside = 0
        self.most_inside = 0
        self._lock = threading.Lock()

    def __call__(self, message: bytes, metadata: list[tuple[str, str]], peer: str) -> bytes:
        with self._lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
            self.calls.append((message, list(metadata), peer))
        time.sleep(self.hold_s)  # releases the GIL, as a handler waiting on I/O does
        with self._lock:
            self.inside -= 1
        return b"echo:" + message


@pytest.fixture
def serve() -> Iterator:
    servers: list[grpc_front.FrontServer] = []
    channels: list[grpc.Channel] = []

    def start(methods, **kw) -> grpc.Channel:
        address = f"127.0.0.1:{free_port()}"
        server = grpc_front.FrontServer(address, methods, **kw)
        server.start()
        servers.append(server)
        channel = grpc.insecure_channel(address)
        channels.append(channel)
        return channel

    yield start
    for channel in channels:
        channel.close()
    for server in servers:
        server.stop(1.0)


def test_messages_metadata_and_peer_reach_the_handler(serve):
    recorder = Recorder()
    channel = serve({ECHO: recorder})
    answer = _raw(channel, ECHO)(b"\x00\x01payload", metadata=[("traceparent", "00-abc-def-01")], timeout=5)
    assert answer == b"echo:\x00\x01payload"
    message, metadata, peer = recorder.calls[0]
    assert message == b"\x00\x01payload"
    assert ("traceparent", "00-abc-def-01") in metadata
    assert peer.startswith("ipv4:127.0.0.1:")  # grpcio's format: the drain keys Envoys by it


def test_servicer_status_codes_pass_through(serve):
    """grpc_health's servicer answers NOT_FOUND through ``context.set_code``, as on grpcio."""
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    handler = grpc_front.unary_handler(servicer.Check, health_pb2.HealthCheckRequest.FromString, "Health/Check")
    stub = health_pb2_grpc.HealthStub(serve({HEALTH_CHECK: handler}))
    assert stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status == 1  # SERVING
    with pytest.raises(grpc.RpcError) as caught:
        stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_abort_ends_the_call_with_its_status(serve):
    def method(request, context):
        context.abort(grpc.StatusCode.PERMISSION_DENIED, "not you")

    handler = grpc_front.unary_handler(method, health_pb2.HealthCheckRequest.FromString, "Echo")
    with pytest.raises(grpc.RpcError) as caught:
        _raw(serve({ECHO: handler}), ECHO)(b"", timeout=5)
    assert (caught.value.code(), caught.value.details()) == (grpc.StatusCode.PERMISSION_DENIED, "not you")


def test_a_failing_handler_fails_the_call_without_its_message(serve, caplog):
    def method(request, context):
        raise ValueError("card 4111 1111 1111 1111")

    handler = grpc_front.unary_handler(method, health_pb2.HealthCheckRequest.FromString, "Check")
    with caplog.at_level(logging.ERROR, logger="aegis.grpc"), pytest.raises(grpc.RpcError) as caught:
        _raw(serve({ECHO: handler}), ECHO)(b"", timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNKNOWN
    assert "4111" not in caught.value.details()
    assert [r.aegis for r in caplog.records] == [{"method": "Check", "error": "ValueError"}]


def test_a_raw_handler_raising_is_unknown_too(serve):
    def broken(message, metadata, peer):
        raise RuntimeError("secret")

    with pytest.raises(grpc.RpcError) as caught:
        _raw(serve({ECHO: broken}), ECHO)(b"", timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNKNOWN
    assert "secret" not in caught.value.details()


def test_a_message_that_does_not_parse_is_internal(serve):
    handler = grpc_front.unary_handler(lambda r, c: r, external_auth_pb2.CheckRequest.FromString, "Check")
    with pytest.raises(grpc.RpcError) as caught:
        _raw(serve({ECHO: handler}), ECHO)(b"\xff\xff\xff", timeout=5)
    assert caught.value.code() == grpc.StatusCode.INTERNAL


def test_unknown_methods_are_unimplemented(serve):
    channel = serve({ECHO: Recorder()})
    for path in ("/envoy.service.auth.v3.Authorization/Other", HEALTH_CHECK, "/aegis.test.Echo/Call"):
        with pytest.raises(grpc.RpcError) as caught:
            _raw(channel, path)(b"", timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


@pytest.mark.parametrize("concurrency", [1, 3])
def test_calls_inside_python_never_exceed_the_concurrency(serve, concurrency):
    recorder = Recorder(hold_s=0.05)
    call = _raw(serve({ECHO: recorder}, concurrency=concurrency), ECHO)
    threads = [threading.Thread(target=call, args=(b"x",), kwargs={"timeout": 10}) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(recorder.calls) == 6
    assert recorder.most_inside == concurrency  # held back to it, and reached with 6 callers


def test_stop_lets_the_call_in_flight_finish_then_refuses(serve):
    address = f"127.0.0.1:{free_port()}"
    recorder = Recorder(hold_s=0.5)
    server = grpc_front.FrontServer(address, {ECHO: recorder})
    server.start()
    results: list[bytes] = []
    with grpc.insecure_channel(address) as channel:
        caller = threading.Thread(target=lambda: results.append(_raw(channel, ECHO)(b"late", timeout=10)))
        caller.start()
        while not recorder.calls:
            time.sleep(0.01)
        server.stop(5.0)
        caller.join()
    assert results == [b"echo:late"]
    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as caught:
        _raw(channel, ECHO)(b"", timeout=2)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_an_address_in_use_fails_loudly():
    address = f"127.0.0.1:{free_port()}"
    first = grpc_front.FrontServer(address, {ECHO: Recorder()})
    first.start()
    try:
        with pytest.raises(OSError):
            grpc_front.FrontServer(address, {ECHO: Recorder()}).start()
    finally:
        first.stop(1.0)


@pytest.mark.parametrize(("disabled", "transport"), [(False, "native"), (True, "grpcio")])
def test_the_service_serves_check_on_the_front_unless_disabled(config_path, monkeypatch, disabled, transport):
    if disabled:
        monkeypatch.setenv("AEGIS_GRPC_FRONT", "0")
    service = build_service(load_config(config_path))
    server, health_servicer = start_grpc(service)
    try:
        assert server.transport == transport
        with grpc.insecure_channel(service.config.service.grpc) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            answer = stub.Check(health_pb2.HealthCheckRequest(service=AUTHZ_SERVICE), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
            # A Check without a token: the real authorizer answers 401 through either transport.
            check = channel.unary_unary(
                grpc_front.method_path(AUTHZ_SERVICE, "Check"),
                request_serializer=external_auth_pb2.CheckRequest.SerializeToString,
                response_deserializer=external_auth_pb2.CheckResponse.FromString,
            )
            response = check(external_auth_pb2.CheckRequest(), timeout=5)
            assert response.denied_response.status.code == 401
    finally:
        server.stop(1.0)
        service.close()


def test_one_call_at_a_time_unless_a_check_waits_on_the_network(monkeypatch):
    monkeypatch.delenv("AEGIS_GRPC_PYTHON_CONCURRENCY", raising=False)
    assert grpc_front.python_concurrency(False) == 1
    assert grpc_front.python_concurrency(True) == grpc_front.NETWORK_CONCURRENCY
    monkeypatch.setenv("AEGIS_GRPC_PYTHON_CONCURRENCY", "3")
    assert grpc_front.python_concurrency(False) == 3


# --- bidirectional streams (ext_proc's Process) ------------------------------------------

PROCESS = grpc_front.method_path("envoy.service.ext_proc.v3.ExternalProcessor", "Process")


def _stream(channel: grpc.Channel) -> grpc.StreamStreamMultiCallable:
    return channel.stream_stream(PROCESS, request_serializer=lambda b: b, response_deserializer=lambda b: b)


class Session:
    """A raw stream session: answers ``b"re:" + message`` and is done at ``b"last"``."""

    def __init__(self, metadata: list[tuple[str, str]], peer: str, log: list[object]) -> None:
        self.log = log
        log.append(("open", dict(metadata).get("x-test"), peer.startswith("ipv4:127.0.0.1:")))

    def __call__(self, message: bytes) -> tuple[list[bytes], bool]:
        self.log.append(message)
        if message == b"twice":
            return [b"one", b"two"], False
        if message == b"silent":
            return [], False
        return [b"re:" + message], message == b"last"


def _opener(log: list[object]):
    return lambda metadata, peer: Session(metadata, peer, log)


def test_a_stream_is_answered_in_order_and_closed_ok_when_the_session_is_done(serve):
    log: list[object] = []
    channel = serve({}, streams={PROCESS: _opener(log)})
    sent = iter([b"a", b"twice", b"silent", b"last"])

    def requests():
        # One message at a time, as Envoy sends ext_proc phases; never more after "last".
        yield from sent

    call = _stream(channel)(requests(), metadata=[("x-test", "yes")], timeout=5)
    assert list(call) == [b"re:a", b"one", b"two", b"re:last"]
    assert call.code() == grpc.StatusCode.OK
    assert log == [("open", "yes", True), b"a", b"twice", b"silent", b"last"]


def test_a_stream_the_client_half_closes_ends_ok(serve):
    log: list[object] = []
    call = _stream(serve({}, streams={PROCESS: _opener(log)}))(iter([b"a", b"b"]), timeout=5)
    assert list(call) == [b"re:a", b"re:b"]
    assert call.code() == grpc.StatusCode.OK


def test_each_stream_has_its_own_session(serve):
    log: list[object] = []
    channel = serve({}, streams={PROCESS: _opener(log)})
    for _ in range(3):
        assert list(_stream(channel)(iter([b"last"]), timeout=5)) == [b"re:last"]
    assert [entry for entry in log if isinstance(entry, tuple)] == [("open", None, True)] * 3


def test_a_session_status_or_failure_ends_the_stream_with_it(serve, caplog):
    def answer(request):
        if request.service == "deny":
            raise ValueError("card 4111 1111 1111 1111")
        return [health_pb2.HealthCheckResponse(status=1)], False

    opener = grpc_front.stream_handler(lambda context: answer, health_pb2.HealthCheckRequest.FromString, "Process")
    channel = serve({}, streams={PROCESS: opener})
    ok = health_pb2.HealthCheckRequest(service="ok").SerializeToString()
    deny = health_pb2.HealthCheckRequest(service="deny").SerializeToString()
    with caplog.at_level(logging.ERROR, logger="aegis.grpc"):
        call = _stream(channel)(iter([ok, deny, ok]), timeout=5)
        answers = []
        with pytest.raises(grpc.RpcError) as caught:
            for answer_bytes in call:
                answers.append(answer_bytes)
    assert [health_pb2.HealthCheckResponse.FromString(a).status for a in answers] == [1]
    assert caught.value.code() == grpc.StatusCode.UNKNOWN
    assert "4111" not in caught.value.details()
    assert [r.aegis for r in caplog.records] == [{"method": "Process", "error": "ValueError"}]
    with pytest.raises(grpc.RpcError) as caught:
        list(_stream(channel)(iter([b"\xff\xff\xff"]), timeout=5))
    assert caught.value.code() == grpc.StatusCode.INTERNAL


def test_an_opener_can_refuse_the_stream(serve):
    channel = serve({}, streams={PROCESS: lambda metadata, peer: (grpc.StatusCode.UNAVAILABLE.value[0], "busy")})
    with pytest.raises(grpc.RpcError) as caught:
        list(_stream(channel)(iter([b"a"]), timeout=5))
    assert (caught.value.code(), caught.value.details()) == (grpc.StatusCode.UNAVAILABLE, "busy")


def test_a_gate_bounds_python_calls_across_servers(serve):
    """The Check and ext_proc servers share one GIL: one gate holds both to one call at once."""
    recorder = Recorder(hold_s=0.05)
    gate = grpc_front.PythonGate(1)
    channels = [serve({ECHO: recorder}, gate=gate, concurrency=4) for _ in range(2)]
    threads = [
        threading.Thread(target=_raw(channel, ECHO), args=(b"x",), kwargs={"timeout": 10})
        for channel in channels
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(recorder.calls) == 6
    assert recorder.most_inside == 1


@pytest.mark.parametrize(("disabled", "transport"), [(False, "native"), (True, "grpc.aio")])
def test_the_service_serves_ext_proc_on_the_front_unless_disabled(config_path, monkeypatch, disabled, transport):
    """A clean call's stream through either transport: one answer that skips every later
    phase, then the processor closes the stream itself with OK; a refused call's stream gets
    the refusal."""
    if disabled:
        monkeypatch.setenv("AEGIS_GRPC_FRONT", "0")
    service = build_service(load_config(config_path))
    server = start_ext_proc(service)

    def headers(metadata: dict[str, str]) -> pb.ProcessingRequest:
        request = pb.ProcessingRequest(
            request_headers=pb.HttpHeaders(
                headers=base_pb2.HeaderMap(headers=[base_pb2.HeaderValue(key="content-type", raw_value=b"text/plain")])
            )
        )
        struct = struct_pb2.Struct()
        struct.update(metadata)
        request.metadata_context.filter_metadata[EXT_AUTHZ_NAMESPACE].CopyFrom(struct)
        return request

    try:
        assert server.transport == transport
        with grpc.insecure_channel(service.config.service.ext_proc) as channel:
            assert health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status == 1
            process = channel.stream_stream(
                PROCESS,
                request_serializer=pb.ProcessingRequest.SerializeToString,
                response_deserializer=pb.ProcessingResponse.FromString,
            )
            call = process(iter([headers({MD_TOOL: "payments.refund"})]), timeout=5)
            answers = list(call)
            assert call.code() == grpc.StatusCode.OK
            assert [a.WhichOneof("response") for a in answers] == ["request_headers"]
            assert answers[0].mode_override.request_body_mode == answers[0].mode_override.NONE
            assert answers[0].mode_override.response_header_mode == answers[0].mode_override.SKIP
            refused = list(process(iter([headers({MD_TOOL: "crm.read", MD_REDACT: "{not json"})]), timeout=5))
            assert [a.WhichOneof("response") for a in refused] == ["immediate_response"]
            assert refused[0].immediate_response.status.code == 502
    finally:
        server.stop(1.0)
        service.close()
