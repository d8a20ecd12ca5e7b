"""A Check that decides nothing: the floor a Python gRPC ext_authz service costs here.

``python -m bench.noop_authz 127.0.0.1:PORT`` serves ``Authorization/Check``, answering OK
to every request, on the server Aegis's Check runs on (sync grpcio, the same worker pool,
gRPC health for Envoy's active check).  ``bench.gateway`` measures it behind the generated
Envoy bootstrap in the same run as Aegis, so Aegis's added latency splits into the Python
gRPC round trip (this floor) and Aegis's own work (the rest).
"""

from __future__ import annotations

import sys
from concurrent import futures

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.rpc import code_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from extauthz.server import AUTHZ_SERVICE, GRPC_WORKERS

_OK = external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code_pb2.OK))


class AllowEverything(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    def Check(
        self, request: external_auth_pb2.CheckRequest, context: grpc.ServicerContext
    ) -> external_auth_pb2.CheckResponse:
        return _OK


def serve(address: str) -> None:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=GRPC_WORKERS, thread_name_prefix="noop-grpc"),
        options=[("grpc.so_reuseport", 0)],
    )
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(AllowEverything(), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if server.add_insecure_port(address) == 0:
        raise SystemExit(f"bench.noop_authz: cannot listen on {address}")
    server.start()
    for service in ("", AUTHZ_SERVICE):
        health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    server.wait_for_termination()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m bench.noop_authz HOST:PORT")
    serve(sys.argv[1])
