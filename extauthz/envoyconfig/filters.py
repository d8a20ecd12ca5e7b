"""HTTP filters: ext_authz → ext_proc (skipped for clean calls) → router."""

from __future__ import annotations

from extauthz.config import AegisConfig
from extauthz.envoyconfig._base import (
    EXT_AUTHZ_FILTER,
    EXT_PROC_CLUSTER,
    EXT_PROC_FILTER,
    GRPC_CLUSTER,
    GRPC_TIMEOUT,
    ROUTER_FILTER,
    Resource,
    _any,
    _extension,
)
from extauthz.metadata import (
    EXT_AUTHZ_NAMESPACE,
    EXT_PROC_NAMESPACE,
    HEADER_CLEAN,
)

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

    ``allow_mode_override`` lets the service choose the phases per call (nothing to redact:
    none); the static mode has no response phase, so ext_authz's local replies open no stream.
    """
    return _any(
        "extensions.filters.http.ext_proc.v3.ExternalProcessor",
        failure_mode_allow=False,
        # One failure shape for the agent: ext_proc's own errors are a 503 like ext_authz's.
        status_on_error={"code": "ServiceUnavailable"},
        grpc_service=grpc_service(EXT_PROC_CLUSTER),
        message_timeout=GRPC_TIMEOUT,
        processing_mode={
            "request_header_mode": "SEND",
            "request_body_mode": "BUFFERED",
            # No response phase by default, so ext_authz's local replies (403, 202, 401, 503)
            # open no ext_proc stream; calls that need the response turn it on in the answer
            # to their request headers (mode_override).
            "response_header_mode": "SKIP",
            "response_body_mode": "NONE",
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
    carry no marker but open no stream either (no response phase in the static mode).
    """
    skip = _extension("skip", "extensions.filters.common.matcher.action.v3.SkipFilter")
    header = _extension("clean", "type.matcher.v3.HttpRequestHeaderMatchInput", header_name=HEADER_CLEAN)
    return _extension(
        EXT_PROC_FILTER,
        "extensions.common.matching.v3.ExtensionWithMatcher",
        extension_config={"name": EXT_PROC_FILTER, "typed_config": _ext_proc_config()},
        xds_matcher={"matcher_tree": {"input": header, "exact_match_map": {"map": {"1": {"action": skip}}}}},
    )


# Without it Envoy ends every ext_proc stream it is done with by resetting it (RST_STREAM),
# even when Aegis has already answered and is closing; grpc.aio keeps ~17 bytes of native
# memory per server stream the client resets, so a redacting gateway grew without bound
# (measured: +1.0 MB per 62,000 redacted calls, flat with the flag).  Envoy 1.40 has no
# filter field for it, only this runtime flag.
EXT_PROC_GRACEFUL_CLOSE = "envoy.reloadable_features.ext_proc_graceful_grpc_close"


def layered_runtime() -> Resource:
    """Runtime: ext_proc closes its gRPC streams gracefully (half-close, no reset); the admin
    layer keeps ``/runtime_modify`` working for operators."""
    return {
        "layers": [
            {"name": "aegis", "static_layer": {EXT_PROC_GRACEFUL_CLOSE: True}},
            {"name": "admin", "admin_layer": {}},
        ]
    }


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
