"""The ingress listener and its HTTP connection manager, the metrics listener, admin."""

from __future__ import annotations

from extauthz.config import AegisConfig
from extauthz.envoyconfig._base import (
    _HCM_TYPE,
    ADMIN_CLUSTER,
    INGRESS_LISTENER,
    MAX_DOWNSTREAM_CONNECTIONS,
    METRICS_LISTENER,
    PROMETHEUS_PATH,
    Resource,
    _any,
    _extension,
    _socket_address,
)
from extauthz.envoyconfig.filters import http_filters, router_filter
from extauthz.envoyconfig.observability import access_log, tracing_provider
from extauthz.envoyconfig.routes import json_direct_response, route_config

# --- listeners ----------------------------------------------------------------------------


def http_connection_manager(config: AegisConfig, *, with_ext_proc: bool = True, replicated: bool = True) -> Resource:
    """HCM: canonical paths (what is authorised is what is sent), edge address handling.
    ``replicated``: the Aegis service has several endpoints (``filters.grpc_service``)."""
    hcm: Resource = {
        "@type": _HCM_TYPE,
        "stat_prefix": "aegis",
        "codec_type": "AUTO",
        "use_remote_address": True,
        "normalize_path": True,
        "merge_slashes": True,
        "path_with_escaped_slashes_action": "REJECT_REQUEST",
        # x_aegis_override must not be a second spelling of x-aegis-override (CGI/WSGI upstreams
        # fold _ and -); REJECT_REQUEST would close HTTP/1 connections without any answer.
        "common_http_protocol_options": {"headers_with_underscores_action": "DROP_HEADER"},
        "generate_request_id": True,
        "preserve_external_request_id": False,
        "always_set_request_id_in_response": True,
        # Keep x-request-id a plain UUID and let traceparent, not the request id, decide sampling.
        "request_id_extension": {
            "typed_config": _any(
                "extensions.request_id.uuid.v3.UuidRequestIdConfig",
                pack_trace_reason=False,
                use_request_id_for_trace_sampling=False,
            )
        },
        "route_config": route_config(config, with_ext_proc=with_ext_proc),
        "http_filters": http_filters(config, with_ext_proc=with_ext_proc, replicated=replicated),
        "access_log": [access_log(config)],
        "local_reply_config": local_reply_config(config),
    }
    provider = tracing_provider(config)
    if provider is not None:
        sampling = round(config.telemetry.sample_ratio * 100, 4)
        hcm["tracing"] = {"provider": provider, "random_sampling": {"value": sampling}}
    return hcm


# Envoy's own refusals, told apart by ``response_code_details`` (a CEL filter): Envoy sends
# them with an empty or plain-text body, agents get the JSON shape Aegis answers with. Aegis's
# own answers (ext_authz denials; ext_proc immediate responses, details ``aegis_*``) never match.
_ENVOY_REFUSALS = (
    (
        "response.code_details == 'ext_authz_error'",
        503,
        "aegis_unavailable",
        "Aegis did not answer the authorization check in time; the call is refused (fail closed)",
    ),
    (
        # The gRPC status follows the prefix (ext_proc_error_gRPC_error_14{…}). With the service
        # down, ext_proc fails on ext_authz's 503 too, and its details are the ones that remain.
        "response.code_details.startsWith('ext_proc_error')",
        503,
        "aegis_unavailable",
        "Aegis did not answer in time; the call is refused (fail closed)",
    ),
    (
        "response.code_details == 'request_payload_too_large'",
        413,
        "body_too_large",
        "the request body is larger than the {limit} bytes Envoy forwards to Aegis",
    ),
)


def local_reply_config(config: AegisConfig) -> Resource:
    """JSON bodies, with the request id, for the refusals Envoy makes without asking Aegis."""
    mappers = []
    for expression, status, code, message in _ENVOY_REFUSALS:
        cel = _extension(
            "envoy.access_loggers.extension_filters.cel",
            "extensions.access_loggers.filters.cel.v3.ExpressionFilter",
            expression=expression,
        )
        body = {
            "error": code,
            "message": message.format(limit=config.envoy.max_request_bytes),
            "request_id": "%REQ(X-REQUEST-ID)%",
        }
        mappers.append(
            {"filter": {"extension_filter": cel}, "status_code": status, "body_format_override": {"json_format": body}}
        )
    return {"mappers": mappers}


def _hcm_chain(hcm: Resource) -> Resource:
    return {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}


def listener(config: AegisConfig, *, with_ext_proc: bool = True, replicated: bool = True) -> Resource:
    """The agents' listener on ``envoy.listen``."""
    hcm = http_connection_manager(config, with_ext_proc=with_ext_proc, replicated=replicated)
    return {
        "name": INGRESS_LISTENER,
        "address": _socket_address(config.envoy.listen),
        "filter_chains": [_hcm_chain(hcm)],
    }


def metrics_listener(address: str) -> Resource:
    """Exposes only ``/stats/prometheus`` of the (loopback) admin API, for a scraper."""
    routes = [
        {"match": {"path": PROMETHEUS_PATH}, "route": {"cluster": ADMIN_CLUSTER}},
        json_direct_response(404, '{"error":"not_found"}'),
    ]
    hcm = {
        "@type": _HCM_TYPE,
        "stat_prefix": "metrics",
        "route_config": {
            "name": "metrics_routes",
            "virtual_hosts": [{"name": "metrics", "domains": ["*"], "routes": routes}],
        },
        "http_filters": [router_filter()],
    }
    return {"name": METRICS_LISTENER, "address": _socket_address(address), "filter_chains": [_hcm_chain(hcm)]}


def overload_manager() -> Resource:
    """Caps downstream connections (Envoy warns at startup when nothing does)."""
    monitor = _extension(
        "envoy.resource_monitors.global_downstream_max_connections",
        "extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
        max_active_downstream_connections=MAX_DOWNSTREAM_CONNECTIONS,
    )
    return {"resource_monitors": [monitor]}


def admin(config: AegisConfig) -> Resource:
    """The admin API on ``envoy.admin``; config validation keeps it on loopback."""
    return {"address": _socket_address(config.envoy.admin)}
