"""Clusters: the upstream tools, the Aegis gRPC services, Envoy's admin, the OTLP collector."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from extauthz.config import AegisConfig
from extauthz.config_fields import parse_address
from extauthz.envoyconfig._base import (
    _HTTP_OPTIONS,
    ADMIN_CLUSTER,
    GRPC_CLUSTER,
    GRPC_TIMEOUT,
    HEALTH_CHECK_INTERVAL,
    OTEL_CLUSTER,
    SYSTEM_CA_BUNDLE,
    UPSTREAM_CONNECT_TIMEOUT,
    Resource,
    _endpoint_address,
    _endpoints_cluster,
    _extension,
    _host_address,
    _is_ip,
    _socket_address,
)
from extauthz.errors import ConfigError

# --- clusters -----------------------------------------------------------------------------


def upstream_cluster_name(host: str) -> str:
    """``payments.demo`` → ``upstream_payments_demo``."""
    return "upstream_" + host.replace(".", "_")


def upstream_cluster(host: str, url: str) -> Resource:
    """The cluster for one tool host: the URL's host:port, TLS (verified, SNI) for https."""
    parts = urlsplit(url)
    if parts.hostname is None:
        raise ConfigError(f"upstreams.{host}: no host in {url!r}")
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    address = _host_address(parts.hostname, port)
    cluster = _endpoints_cluster(upstream_cluster_name(host), [address], UPSTREAM_CONNECT_TIMEOUT)
    if tls:
        cluster["transport_socket"] = _upstream_tls(parts.hostname)
    return cluster


def _upstream_tls(server_name: str) -> Resource:
    validation = {
        "trusted_ca": {"filename": SYSTEM_CA_BUNDLE},
        "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": server_name}}],
    }
    return _extension(
        "envoy.transport_sockets.tls",
        "extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        sni=server_name,
        common_tls_context={"validation_context": validation},
    )


def grpc_cluster(endpoints: Sequence[str], name: str = GRPC_CLUSTER) -> Resource:
    """The Aegis gRPC service: one lb endpoint per replica, HTTP/2, active gRPC health check.

    HTTP/2 must be explicit: without it the config validates but every Check fails (403).
    Envoy keeps one HTTP/2 connection per worker per endpoint, so replicas must be separate
    endpoints; the grpc.health.v1 check takes a dead one out of the balancing.  A replica's
    ext_proc stream may land on another replica than its Check: ext_proc must rely only on
    the forwarded metadata, never on state kept by Check.
    """
    if not endpoints:
        raise ConfigError("service endpoints: at least one host:port or unix:PATH is needed")
    addresses = [_endpoint_address(e, what="service endpoint") for e in endpoints]
    # Not ROUND_ROBIN: each request opens two streams (Check, then ext_proc), so with two
    # replicas round robin sent every Check to one and every ext_proc stream to the other.
    cluster = _endpoints_cluster(name, addresses, GRPC_TIMEOUT, lb_policy="LEAST_REQUEST")
    cluster["typed_extension_protocol_options"] = {
        _HTTP_OPTIONS: {
            "@type": "type.googleapis.com/" + _HTTP_OPTIONS,
            "explicit_http_config": {
                # Keepalive notices a replica that vanished without closing its connection.
                "http2_protocol_options": {"connection_keepalive": {"interval": "30s", "timeout": "5s"}}
            },
        }
    }
    cluster["health_checks"] = [grpc_health_check()]
    return cluster


def may_be_replicated(endpoints: Sequence[str]) -> bool:
    """Whether ``endpoints`` may be several servers: more than one, or a host name."""
    if len(endpoints) != 1:
        return True
    address = _endpoint_address(endpoints[0], what="service endpoint")
    return "pipe" not in address and not _is_ip(address["socket_address"]["address"])


def grpc_health_check() -> Resource:
    """Active ``grpc.health.v1.Health/Check`` for the whole server (empty service name)."""
    return {
        "timeout": GRPC_TIMEOUT,
        "interval": HEALTH_CHECK_INTERVAL,
        # Without traffic Envoy would otherwise only check every 60 s.
        "no_traffic_interval": HEALTH_CHECK_INTERVAL,
        "unhealthy_threshold": 2,
        "healthy_threshold": 1,
        "grpc_health_check": {"service_name": ""},
    }


def admin_cluster(config: AegisConfig) -> Resource:
    """Loopback cluster to the admin API, used only by the metrics listener."""
    return _endpoints_cluster(ADMIN_CLUSTER, [_socket_address(config.envoy.admin)], "1s")


def otel_collector_cluster(config: AegisConfig) -> Resource:
    """The OTLP/gRPC collector Envoy exports spans to (HTTP/2)."""
    host, port = parse_address(config.telemetry.otlp_endpoint, what="telemetry.otlp_endpoint")
    cluster = _endpoints_cluster(OTEL_CLUSTER, [_host_address(host, port)], GRPC_TIMEOUT)
    cluster["typed_extension_protocol_options"] = {
        _HTTP_OPTIONS: {
            "@type": "type.googleapis.com/" + _HTTP_OPTIONS,
            "explicit_http_config": {"http2_protocol_options": {}},
        }
    }
    return cluster
