"""Shared names and small builders of the Envoy bootstrap (one place for each constant)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from extauthz.config_fields import parse_address, socket_path
from extauthz.errors import ConfigError
from extauthz.metadata import BODY_PHASES

Resource = dict[str, Any]

GRPC_CLUSTER = "aegis_grpc"
# ext_proc has its own listener in the service, so its own cluster.
EXT_PROC_CLUSTER = "aegis_ext_proc"
OTEL_CLUSTER = "otel_collector"
ADMIN_CLUSTER = "envoy_admin"
INGRESS_LISTENER = "aegis_ingress"
METRICS_LISTENER = "envoy_metrics"
ROUTE_CONFIG = "aegis_routes"
EXT_AUTHZ_FILTER = "envoy.filters.http.ext_authz"
EXT_PROC_FILTER = "envoy.filters.http.ext_proc"
# One ext_proc instance per set of body phases Check can choose (metadata.BODY_PHASES).
EXT_PROC_FILTERS = {phases: f"{EXT_PROC_FILTER}.{phases}" for phases in BODY_PHASES}
ROUTER_FILTER = "envoy.filters.http.router"
# Puts a request body Check redacted in place (Lua): envoyconfig.filters.request_body_filter.
REQUEST_BODY_FILTER = "envoy.filters.http.lua.request_body"
REQUEST_BODY_LUA_FILTER = "envoy.filters.http.lua"  # the Lua filter it creates
# Both gRPC calls are on the request path: a slow policy service must fail fast (closed).
GRPC_TIMEOUT = "1s"
UPSTREAM_CONNECT_TIMEOUT = "5s"
HEALTH_CHECK_INTERVAL = "2s"
UNKNOWN_HOST_BODY = '{"error":"unknown_host"}'
PROMETHEUS_PATH = "/stats/prometheus"
# The Debian/Ubuntu bundle, present in the envoyproxy/envoy image; Envoy 1.40 refuses SAN
# checks with system_root_certs ("without trusted CA is insecure"), so it is named.
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
MAX_DOWNSTREAM_CONNECTIONS = 10_000

_T = "type.googleapis.com/envoy."
_HCM_TYPE = _T + "extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def _any(type_name: str, **fields: Any) -> Resource:
    """A typed config: ``{"@type": type.googleapis.com/envoy.<type_name>, **fields}``."""
    return {"@type": _T + type_name, **fields}


def _extension(name: str, type_name: str, **fields: Any) -> Resource:
    return {"name": name, "typed_config": _any(type_name, **fields)}


def _socket_address(address: str) -> Resource:
    host, port = parse_address(address, what="envoy address")
    return _host_address(host, port)


def _host_address(host: str, port: int) -> Resource:
    return {"socket_address": {"address": host, "port_value": port}}


def _endpoint_address(address: str, what: str) -> Resource:
    """A gRPC service endpoint: ``host:port``, or ``unix:PATH`` as an Envoy pipe."""
    path = socket_path(address)
    if path is not None:
        return {"pipe": {"path": path}}
    return _host_address(*parse_address(address, what=what))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _endpoints_cluster(
    name: str, addresses: Sequence[Resource], connect_timeout: str, lb_policy: str = "ROUND_ROBIN"
) -> Resource:
    """A cluster of endpoint ``addresses``; STATIC when every one is an IP literal or a pipe
    (a Unix socket), STRICT_DNS when they are host names."""
    named = [a["socket_address"]["address"] for a in addresses if "pipe" not in a]
    static = all(_is_ip(host) for host in named)
    if not static and len(named) < len(addresses):
        raise ConfigError(f"cluster {name}: Unix sockets and host names cannot be mixed (a DNS cluster has no pipes)")
    cluster: Resource = {
        "name": name,
        "type": "STATIC" if static else "STRICT_DNS",
        "connect_timeout": connect_timeout,
        "lb_policy": lb_policy,
    }
    if not static:
        # Compose and Kubernetes DNS answer A records; AUTO would try AAAA first.
        cluster["dns_lookup_family"] = "V4_PREFERRED"
    lb_endpoints = [{"endpoint": {"address": address}} for address in addresses]
    cluster["load_assignment"] = {"cluster_name": name, "endpoints": [{"lb_endpoints": lb_endpoints}]}
    return cluster
