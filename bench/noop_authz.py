"""A Check (and an ext_proc) that decide nothing: the floor a Python gRPC service costs here.

``python -m bench.noop_authz CHECK_ADDR [EXT_PROC_ADDR]`` serves ``Authorization/Check``,
answering OK to every request, on the server Aegis's Check runs on (the compiled gRPC front,
or sync grpcio with the same worker pool when that is disabled; gRPC health for Envoy's
active check).  With ``EXT_PROC_ADDR`` it also serves ``ExternalProcessor/Process`` as Aegis
does (on the compiled front, through the gate the Check server shares, or on grpc.aio in its
own thread): its Check then names the ext_proc instance Aegis would for a redacted call
(``body_phases``), hands the request body back as Aegis hands a body it redacted
(``request_body``: Envoy's Lua filter puts it in place, and the stream is response-only,
two messages; or, behind a bootstrap without that filter, its ext_proc puts it in place at
the request headers, three messages), and answers every other message changing nothing.
``bench.gateway`` and ``bench.dlp_gateway`` measure them behind the generated Envoy bootstrap
in the same run as Aegis, so Aegis's added latency splits into the Python gRPC round trips
(this floor) and Aegis's own work (the rest).
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import AsyncIterator
from concurrent import futures

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as proc_pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc
from google.protobuf import struct_pb2
from google.rpc import code_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from extauthz import grpc_front
from extauthz.envoy_authz import envoy_puts_request_body, phases_when_handed
from extauthz.envoy_proc import authz_metadata, replaced_request_answer
from extauthz.metadata import (
    MAX_REQUEST_BODY_HANDED,
    MD_BODY_PHASES,
    MD_REQUEST_BODY,
    MD_REQUEST_REDACTED,
    PHASES_BOTH_BODIES,
    PHASES_RESPONSE,
)
from extauthz.redactor import BodyOutcome
from extauthz.server import AUTHZ_SERVICE, EXT_PROC_SERVICE, GRPC_WORKERS, HEALTH_SERVICE

_OK = external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code_pb2.OK))


def _ok_with_phases(phases: str) -> external_auth_pb2.CheckResponse:
    metadata = struct_pb2.Struct()
    metadata.fields[MD_BODY_PHASES].string_value = phases
    return external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code_pb2.OK), dynamic_metadata=metadata)


_OK_BOTH_BODIES = _ok_with_phases(PHASES_BOTH_BODIES)
_OK_RESPONSE_BODY = _ok_with_phases(PHASES_RESPONSE)


def _ok_handing_back(body: bytes, envoy_puts_body: bool) -> external_auth_pb2.CheckResponse:
    """The request body handed back unchanged, as Aegis hands one it redacted, and the
    instance Aegis would name for it."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return _OK_BOTH_BODIES
    if len(body) > MAX_REQUEST_BODY_HANDED:
        return _OK_BOTH_BODIES
    handed = {MD_REQUEST_REDACTED: "", MD_REQUEST_BODY: text}
    response = external_auth_pb2.CheckResponse()
    response.status.code = code_pb2.OK
    fields = response.dynamic_metadata.fields
    fields[MD_BODY_PHASES].string_value = phases_when_handed(handed, envoy_puts_body)
    for key, value in handed.items():
        fields[key].string_value = value
    return response


class AllowEverything(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    """OK to everything; with ``redacting``, naming the ext_proc instance as Aegis does."""

    def __init__(self, *, redacting: bool = False) -> None:
        self._redacting = redacting

    def Check(
        self, request: external_auth_pb2.CheckRequest, context: grpc.ServicerContext
    ) -> external_auth_pb2.CheckResponse:
        if not self._redacting:
            return _OK
        http = request.attributes.request.http
        body = http.raw_body or http.body.encode()
        return _ok_handing_back(body, envoy_puts_request_body(context)) if body else _OK_RESPONSE_BODY


def pass_everything(request: proc_pb.ProcessingRequest) -> tuple[list[proc_pb.ProcessingResponse], bool]:
    """Every message Envoy sends the instance, answered with "no change"; done after the
    response body, as Aegis closes the stream."""
    kind = request.WhichOneof("request")
    if kind == "request_headers":
        handed = authz_metadata(request, (MD_REQUEST_BODY,)).get(MD_REQUEST_BODY)
        if not isinstance(handed, str):
            return [proc_pb.ProcessingResponse(request_headers=proc_pb.HeadersResponse())], False
        return [replaced_request_answer(BodyOutcome(body=handed.encode()))], False
    if kind == "request_body":
        return [proc_pb.ProcessingResponse(request_body=proc_pb.BodyResponse())], False
    if kind == "response_headers":
        return [proc_pb.ProcessingResponse(response_headers=proc_pb.HeadersResponse())], False
    if kind == "response_body":
        return [proc_pb.ProcessingResponse(response_body=proc_pb.BodyResponse())], True
    if kind == "request_trailers":
        return [proc_pb.ProcessingResponse(request_trailers=proc_pb.TrailersResponse())], False
    return [proc_pb.ProcessingResponse(response_trailers=proc_pb.TrailersResponse())], False


class PassEverything(external_processor_pb2_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    """``pass_everything`` on grpc.aio."""

    async def Process(
        self, requests: AsyncIterator[proc_pb.ProcessingRequest], context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncIterator[proc_pb.ProcessingResponse]:
        async for request in requests:
            responses, done = pass_everything(request)
            for response in responses:
                yield response
            if done:
                return


async def _serve_ext_proc(address: str) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    external_processor_pb2_grpc.add_ExternalProcessorServicer_to_server(PassEverything(), server)
    if server.add_insecure_port(address) == 0:
        raise SystemExit(f"bench.noop_authz: cannot listen on {address}")
    await server.start()
    await server.wait_for_termination()


def serve(address: str, ext_proc: str | None) -> None:
    if grpc_front.available():
        serve_front(address, ext_proc)
        return
    if ext_proc is not None:
        threading.Thread(
            target=lambda: asyncio.run(_serve_ext_proc(ext_proc)), name="noop-ext-proc", daemon=True
        ).start()
    serve_grpcio(address, redacting=ext_proc is not None)


def serve_front(address: str, ext_proc: str | None) -> None:
    gate = grpc_front.PythonGate(1)
    health_servicer = health.HealthServicer()
    health_check = {
        grpc_front.method_path(HEALTH_SERVICE, "Check"): grpc_front.unary_handler(
            health_servicer.Check, health_pb2.HealthCheckRequest.FromString, "Health/Check"
        )
    }
    allow = AllowEverything(redacting=ext_proc is not None)
    check = grpc_front.unary_handler(allow.Check, external_auth_pb2.CheckRequest.FromString, "Check")
    # Kept referenced: a FrontServer that is garbage collected stops serving.
    servers = [
        grpc_front.FrontServer(
            address, {grpc_front.method_path(AUTHZ_SERVICE, "Check"): check, **health_check}, gate=gate
        )
    ]
    if ext_proc is not None:
        process = grpc_front.stream_handler(
            lambda context: pass_everything, proc_pb.ProcessingRequest.FromString, "Process"
        )
        streams = {grpc_front.method_path(EXT_PROC_SERVICE, "Process"): process}
        servers.append(grpc_front.FrontServer(ext_proc, health_check, streams=streams, gate=gate))
    for server in servers:
        server.start()
    for service in ("", AUTHZ_SERVICE):
        health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    threading.Event().wait()


def serve_grpcio(address: str, *, redacting: bool = False) -> None:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=GRPC_WORKERS, thread_name_prefix="noop-grpc"),
        options=[("grpc.so_reuseport", 0)],
    )
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(AllowEverything(redacting=redacting), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if server.add_insecure_port(address) == 0:
        raise SystemExit(f"bench.noop_authz: cannot listen on {address}")
    server.start()
    for service in ("", AUTHZ_SERVICE):
        health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    server.wait_for_termination()


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        raise SystemExit("usage: python -m bench.noop_authz CHECK_HOST:PORT [EXT_PROC_HOST:PORT]")
    serve(sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else None)
