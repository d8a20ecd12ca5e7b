"""Render the Envoy bootstrap that fronts the agents' tool traffic.

One function per Envoy resource, each returning plain dicts in the v3 API's YAML shape, and
:func:`render_bootstrap` to put them together.  The output is deterministic (insertion order,
no timestamps, no absolute paths from the config) so the rendered files under ``envoy/`` are
golden-tested against this module.

The filter chain is ``ext_authz → ext_proc → router``:

* ext_authz sends every request, with its body (``pack_as_bytes``), to the Aegis ``Check``;
  it fails closed, and an unreachable service is a 503.
* ext_proc (optional, ``with_ext_proc``) rewrites bodies under the redaction obligations that
  Check left in the ext_authz dynamic-metadata namespace (see ``extauthz.metadata``).
* the router sends the request, unchanged, to the upstream named by the Host header.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from extauthz.config import AegisConfig, load_config, parse_address
from extauthz.errors import ConfigError
from extauthz.metadata import (
    ACCESS_LOG_METADATA_KEYS,
    EXT_AUTHZ_NAMESPACE,
    EXT_PROC_NAMESPACE,
    HEADER_CLEAN,
    MD_REDACTIONS,
)

Resource = dict[str, Any]

GRPC_CLUSTER = "aegis_grpc"
# ext_proc has its own (grpc.aio) listener in the service, so its own cluster.
EXT_PROC_CLUSTER = "aegis_ext_proc"
OTEL_CLUSTER = "otel_collector"
ADMIN_CLUSTER = "envoy_admin"
INGRESS_LISTENER = "aegis_ingress"
METRICS_LISTENER = "envoy_metrics"
ROUTE_CONFIG = "aegis_routes"
EXT_AUTHZ_FILTER = "envoy.filters.http.ext_authz"
EXT_PROC_FILTER = "envoy.filters.http.ext_proc"
ROUTER_FILTER = "envoy.filters.http.router"
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
    return {"socket_address": {"address": host, "port_value": port}}


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _endpoints_cluster(
    name: str, hosts: Sequence[tuple[str, int]], connect_timeout: str, lb_policy: str = "ROUND_ROBIN"
) -> Resource:
    """A cluster of ``hosts``; STATIC when every host is an IP literal, STRICT_DNS otherwise."""
    static = all(_is_ip(host) for host, _ in hosts)
    cluster: Resource = {
        "name": name,
        "type": "STATIC" if static else "STRICT_DNS",
        "connect_timeout": connect_timeout,
        "lb_policy": lb_policy,
    }
    if not static:
        # Compose and Kubernetes DNS answer A records; AUTO would try AAAA first.
        cluster["dns_lookup_family"] = "V4_PREFERRED"
    lb_endpoints = [
        {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}} for host, port in hosts
    ]
    cluster["load_assignment"] = {"cluster_name": name, "endpoints": [{"lb_endpoints": lb_endpoints}]}
    return cluster


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
    cluster = _endpoints_cluster(upstream_cluster_name(host), [(parts.hostname, port)], UPSTREAM_CONNECT_TIMEOUT)
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
        raise ConfigError("service endpoints: at least one host:port is needed")
    hosts = [parse_address(e, what="service endpoint") for e in endpoints]
    # Not ROUND_ROBIN: each request opens two streams (Check, then ext_proc), so with two
    # replicas round robin sent every Check to one and every ext_proc stream to the other.
    cluster = _endpoints_cluster(name, hosts, GRPC_TIMEOUT, lb_policy="LEAST_REQUEST")
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
    return _endpoints_cluster(ADMIN_CLUSTER, [parse_address(config.envoy.admin)], "1s")


# --- filters ------------------------------------------------------------------------------


def grpc_service(cluster: str = GRPC_CLUSTER) -> Resource:
    """The Aegis service as both filters call it: 1 s, one retry on another replica.

    Only failures where the call never reached a replica are retried (``connect-failure``,
    ``refused-stream``): Check has side effects (single-use override tokens, budgets).
    """
    return {
        "envoy_grpc": {"cluster_name": cluster},
        "timeout": GRPC_TIMEOUT,
        "retry_policy": {
            "retry_on": "connect-failure,refused-stream",
            "num_retries": 1,
            # The core RetryPolicy's default back-off starts at 1 s: longer than the whole call.
            # Envoy also takes max_interval as the per-try timeout (convertCoreToRouteRetryPolicy):
            # it must be the call's timeout, or a Check slower than it fails closed under load.
            "retry_back_off": {"base_interval": "0.01s", "max_interval": GRPC_TIMEOUT},
            "retry_host_predicate": [
                _extension(
                    "envoy.retry_host_predicates.previous_hosts",
                    "extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate",
                )
            ],
            "host_selection_retry_max_attempts": 5,
        },
    }


def ext_authz_filter(config: AegisConfig) -> Resource:
    """ext_authz: fail closed, whole body (as bytes) to Check, 503 when the service is down."""
    body = {"max_request_bytes": config.envoy.max_request_bytes, "allow_partial_message": False, "pack_as_bytes": True}
    return _extension(
        EXT_AUTHZ_FILTER,
        "extensions.filters.http.ext_authz.v3.ExtAuthz",
        transport_api_version="V3",
        failure_mode_allow=False,
        status_on_error={"code": "ServiceUnavailable"},
        # What is authorised is what is sent: no partial bodies; over the limit Envoy answers
        # 413 (request_payload_too_large) without calling Check, chunked or not.
        with_request_body=body,
        include_peer_certificate=False,
        # Puts the Check latency in filter state for the access log (ext_authz_us).
        emit_filter_state_stats=True,
        grpc_service=grpc_service(),
    )


def _ext_proc_config() -> Resource:
    """ext_proc: buffered bodies both ways, fed the ext_authz metadata (redaction obligations).

    ``allow_mode_override`` lets the service skip body phases per call (nothing to redact).
    ext_proc also sees ext_authz's local replies, so its own failure status is 503 as well.
    """
    return _any(
        "extensions.filters.http.ext_proc.v3.ExternalProcessor",
        failure_mode_allow=False,
        # ext_proc also runs on ext_authz's local replies (503, 413): when the service is down,
        # its own failure would otherwise turn them into a 500.
        status_on_error={"code": "ServiceUnavailable"},
        grpc_service=grpc_service(EXT_PROC_CLUSTER),
        message_timeout=GRPC_TIMEOUT,
        processing_mode={
            "request_header_mode": "SEND",
            "response_header_mode": "SEND",
            "request_body_mode": "BUFFERED",
            "response_body_mode": "BUFFERED",
        },
        allow_mode_override=True,
        metadata_options={
            "forwarding_namespaces": {"untyped": [EXT_AUTHZ_NAMESPACE]},
            "receiving_namespaces": {"untyped": [EXT_PROC_NAMESPACE]},
        },
    )


def ext_proc_filter() -> Resource:
    """ext_proc, skipped entirely for calls Check marked clean (``x-aegis-clean: 1``).

    Check sets the marker on allowed calls with nothing to redact or meter and removes any
    agent-sent copy otherwise, so a clean call costs no gRPC stream; local replies (denials)
    carry no marker from Check but have no body worth redacting either.
    """
    skip = _extension("skip", "extensions.filters.common.matcher.action.v3.SkipFilter")
    header = _extension("clean", "type.matcher.v3.HttpRequestHeaderMatchInput", header_name=HEADER_CLEAN)
    return _extension(
        EXT_PROC_FILTER,
        "extensions.common.matching.v3.ExtensionWithMatcher",
        extension_config={"name": EXT_PROC_FILTER, "typed_config": _ext_proc_config()},
        xds_matcher={"matcher_tree": {"input": header, "exact_match_map": {"map": {"1": {"action": skip}}}}},
    )


def router_filter() -> Resource:
    """The terminal router filter."""
    return _extension(ROUTER_FILTER, "extensions.filters.http.router.v3.Router")


def http_filters(config: AegisConfig, *, with_ext_proc: bool = True) -> list[Resource]:
    """ext_authz → (ext_proc) → router; ext_proc must follow ext_authz to receive its metadata."""
    filters = [ext_authz_filter(config)]
    if with_ext_proc:
        filters.append(ext_proc_filter())
    filters.append(router_filter())
    return filters


# --- routes -------------------------------------------------------------------------------


def _json_direct_response(status: int, body: str) -> Resource:
    return {
        "match": {"prefix": "/"},
        "direct_response": {"status": status, "body": {"inline_string": body}},
        "response_headers_to_add": [
            {
                "header": {"key": "content-type", "value": "application/json"},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        ],
    }


def upstream_virtual_host(host: str) -> Resource:
    """Requests for ``host`` (any port) go, unchanged and without retries, to its cluster."""
    return {
        "name": upstream_cluster_name(host),
        "domains": [host, f"{host}:*"],
        "routes": [{"match": {"prefix": "/"}, "route": {"cluster": upstream_cluster_name(host)}}],
        # Check's clean marker is for Envoy's ext_proc matcher only.
        "request_headers_to_remove": [HEADER_CLEAN],
    }


def unknown_host_virtual_host(*, with_ext_proc: bool = True) -> Resource:
    """``*``: a direct 404 JSON. Nothing reaches an upstream, so no Check is needed for it."""
    disabled = {EXT_AUTHZ_FILTER: _any("extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute", disabled=True)}
    if with_ext_proc:
        disabled[EXT_PROC_FILTER] = _any("extensions.filters.http.ext_proc.v3.ExtProcPerRoute", disabled=True)
    return {
        "name": "unknown_host",
        "domains": ["*"],
        "routes": [_json_direct_response(404, UNKNOWN_HOST_BODY)],
        "typed_per_filter_config": disabled,
    }


def route_config(config: AegisConfig, *, with_ext_proc: bool = True) -> Resource:
    """One virtual host per configured upstream, by Host header, then the 404 catch-all."""
    hosts = [upstream_virtual_host(host) for host in config.upstreams]
    hosts.append(unknown_host_virtual_host(with_ext_proc=with_ext_proc))
    return {"name": ROUTE_CONFIG, "virtual_hosts": hosts}


# --- access log, tracing ------------------------------------------------------------------


def access_log_format() -> Resource:
    """JSON fields of one access-log line, including the decision from ext_authz metadata."""
    fields: Resource = {
        "start_time": "%START_TIME%",
        "method": "%REQ(:METHOD)%",
        # Without the query string: query values are arguments and may carry PII.
        "path": "%REQ_WITHOUT_QUERY(:PATH)%",
        "authority": "%REQ(:AUTHORITY)%",
        "response_code": "%RESPONSE_CODE%",
        "response_code_details": "%RESPONSE_CODE_DETAILS%",
        "response_flags": "%RESPONSE_FLAGS%",
        "duration_ms": "%DURATION%",
        "upstream_host": "%UPSTREAM_HOST%",
        "upstream_cluster": "%UPSTREAM_CLUSTER%",
        "downstream_remote_address": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
        "request_id": "%REQ(X-REQUEST-ID)%",
        "traceparent": "%REQ(TRACEPARENT)%",
        "bytes_received": "%BYTES_RECEIVED%",
        "bytes_sent": "%BYTES_SENT%",
        # Filled by emit_filter_state_stats; empty when Check was not called (unknown host).
        "ext_authz_us": f"%FILTER_STATE({EXT_AUTHZ_FILTER}:FIELD:latency_us)%",
    }
    for key in ACCESS_LOG_METADATA_KEYS:
        fields[key] = f"%DYNAMIC_METADATA({EXT_AUTHZ_NAMESPACE}:{key})%"
    # Redaction counts per detector type from ext_proc ("EMAIL:2,SSN:1"), never values.
    fields[MD_REDACTIONS] = f"%DYNAMIC_METADATA({EXT_PROC_NAMESPACE}:{MD_REDACTIONS})%"
    return fields


def access_log_path(config: AegisConfig) -> Path | None:
    """The access-log file (relative paths resolve against the config's directory), or None.

    Envoy opens it at startup and fails if its directory is missing: whoever starts Envoy
    creates ``access_log_path(config).parent`` first.
    """
    if config.envoy.access_log == "stdout":
        return None
    path = Path(config.envoy.access_log).expanduser()
    return path if path.is_absolute() else config.base_dir / path


def access_log(config: AegisConfig) -> Resource:
    """JSON lines to stdout, or to the file ``envoy.access_log`` names.

    Envoy buffers both loggers, stdout too when it is not a terminal, and flushes them every
    ``--file-flush-interval-msec`` (10 s by default): starters pass a shorter interval.
    """
    # REQ_WITHOUT_QUERY is a formatter extension: it must be declared to be usable.
    without_query = _extension(
        "envoy.formatter.req_without_query", "extensions.formatter.req_without_query.v3.ReqWithoutQuery"
    )
    log_format = {"json_format": access_log_format(), "formatters": [without_query]}
    path = access_log_path(config)
    if path is None:
        stream = "extensions.access_loggers.stream.v3.StdoutAccessLog"
        return _extension("envoy.access_loggers.stdout", stream, log_format=log_format)
    file_type = "extensions.access_loggers.file.v3.FileAccessLog"
    return _extension("envoy.access_loggers.file", file_type, path=str(path), log_format=log_format)


def tracing_provider(config: AegisConfig) -> Resource | None:
    """Envoy's OpenTelemetry tracer, exporting OTLP/gRPC to the collector; None when tracing is off.

    Envoy starts (or continues) the W3C trace and forwards ``traceparent`` to ext_authz and
    ext_proc, so the service's spans are children of Envoy's.  Without a tracer Envoy passes
    the agent's own ``traceparent`` through untouched.
    """
    telemetry = config.telemetry
    if not telemetry.enabled or telemetry.otlp_protocol != "grpc":
        return None
    return _extension(
        "envoy.tracers.opentelemetry",
        "config.trace.v3.OpenTelemetryConfig",
        grpc_service={"envoy_grpc": {"cluster_name": OTEL_CLUSTER}, "timeout": "1s"},
        service_name="envoy-aegis",
    )


def otel_collector_cluster(config: AegisConfig) -> Resource:
    """The OTLP/gRPC collector Envoy exports spans to (HTTP/2)."""
    host = parse_address(config.telemetry.otlp_endpoint, what="telemetry.otlp_endpoint")
    cluster = _endpoints_cluster(OTEL_CLUSTER, [host], GRPC_TIMEOUT)
    cluster["typed_extension_protocol_options"] = {
        _HTTP_OPTIONS: {
            "@type": "type.googleapis.com/" + _HTTP_OPTIONS,
            "explicit_http_config": {"http2_protocol_options": {}},
        }
    }
    return cluster


# --- listeners ----------------------------------------------------------------------------


def http_connection_manager(config: AegisConfig, *, with_ext_proc: bool = True) -> Resource:
    """HCM: canonical paths (what is authorised is what is sent), edge address handling."""
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
        "http_filters": http_filters(config, with_ext_proc=with_ext_proc),
        "access_log": [access_log(config)],
    }
    provider = tracing_provider(config)
    if provider is not None:
        sampling = round(config.telemetry.sample_ratio * 100, 4)
        hcm["tracing"] = {"provider": provider, "random_sampling": {"value": sampling}}
    return hcm


def _hcm_chain(hcm: Resource) -> Resource:
    return {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}


def listener(config: AegisConfig, *, with_ext_proc: bool = True) -> Resource:
    """The agents' listener on ``envoy.listen``."""
    return {
        "name": INGRESS_LISTENER,
        "address": _socket_address(config.envoy.listen),
        "filter_chains": [_hcm_chain(http_connection_manager(config, with_ext_proc=with_ext_proc))],
    }


def metrics_listener(address: str) -> Resource:
    """Exposes only ``/stats/prometheus`` of the (loopback) admin API, for a scraper."""
    routes = [
        {"match": {"path": PROMETHEUS_PATH}, "route": {"cluster": ADMIN_CLUSTER}},
        _json_direct_response(404, '{"error":"not_found"}'),
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


# --- bootstrap ----------------------------------------------------------------------------


def render_bootstrap(
    config: AegisConfig,
    *,
    service_endpoints: list[str] | None = None,
    with_ext_proc: bool = True,
    metrics_listen: str | None = None,
    ext_proc_endpoints: list[str] | None = None,
) -> Resource:
    """The whole Envoy bootstrap for ``config``.

    ``service_endpoints`` (default ``[config.service.grpc]``) are the Aegis replicas;
    ``metrics_listen`` adds a listener exposing only the Prometheus stats (for compose).
    """
    endpoints = service_endpoints if service_endpoints is not None else [config.service.grpc]
    proc_endpoints = ext_proc_endpoints if ext_proc_endpoints is not None else [config.service.ext_proc]
    listeners = [listener(config, with_ext_proc=with_ext_proc)]
    clusters = [grpc_cluster(endpoints)]
    if with_ext_proc:
        clusters.append(grpc_cluster(proc_endpoints, EXT_PROC_CLUSTER))
    if tracing_provider(config) is not None:
        clusters.append(otel_collector_cluster(config))
    clusters += [upstream_cluster(host, url) for host, url in config.upstreams.items()]
    if metrics_listen is not None:
        listeners.append(metrics_listener(metrics_listen))
        clusters.append(admin_cluster(config))
    return {
        "node": {"id": "aegis-envoy", "cluster": "aegis"},
        "admin": admin(config),
        "static_resources": {"listeners": listeners, "clusters": clusters},
        "overload_manager": overload_manager(),
    }


def render_bootstrap_yaml(
    config: AegisConfig,
    *,
    service_endpoints: list[str] | None = None,
    with_ext_proc: bool = True,
    metrics_listen: str | None = None,
    ext_proc_endpoints: list[str] | None = None,
) -> str:
    """:func:`render_bootstrap` as YAML, with a header naming the source config file."""
    bootstrap = render_bootstrap(
        config,
        service_endpoints=service_endpoints,
        with_ext_proc=with_ext_proc,
        metrics_listen=metrics_listen,
        ext_proc_endpoints=ext_proc_endpoints,
    )
    header = f"# Generated from {config.path.name} by extauthz.envoyconfig (aegis envoy-config); do not edit.\n"
    body: str = yaml.safe_dump(bootstrap, sort_keys=False, default_flow_style=False, width=1000)
    return header + body


def envoy_config_command(config_path: str, output: str | None, *, with_ext_proc: bool = True) -> int:
    """``aegis envoy-config -c aegis.yaml [-o FILE]``: render to FILE or stdout; exit status."""
    try:
        text = render_bootstrap_yaml(load_config(config_path), with_ext_proc=with_ext_proc)
    except ConfigError as exc:
        print(f"aegis envoy-config: {exc.message}", file=sys.stderr)
        return 2
    if output is None or output == "-":
        sys.stdout.write(text)
        return 0
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as exc:
        print(f"aegis envoy-config: cannot write {output}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0
