"""HTTP filters: ext_authz → ext_proc (a composite: the instance for the body phases Check
named, none for clean calls) → Lua (only for a request body Check redacted) → router."""

from __future__ import annotations

from extauthz.config import AegisConfig
from extauthz.envoyconfig._base import (
    EXT_AUTHZ_FILTER,
    EXT_PROC_CLUSTER,
    EXT_PROC_FILTER,
    EXT_PROC_FILTERS,
    GRPC_CLUSTER,
    GRPC_TIMEOUT,
    REQUEST_BODY_FILTER,
    REQUEST_BODY_LUA_FILTER,
    ROUTER_FILTER,
    Resource,
    _any,
    _extension,
)
from extauthz.metadata import (
    BODY_PHASES,
    EXT_AUTHZ_NAMESPACE,
    EXT_PROC_NAMESPACE,
    FEATURE_REQUEST_BODY_FILTER,
    GRPC_ENVOY_FEATURES,
    MD_BODY_PHASES,
    MD_REQUEST_BODY,
    PHASES_BOTH_BODIES,
    PHASES_RESPONSE,
    TRACE_HEADER_ATTRIBUTES,
)

# --- filters ------------------------------------------------------------------------------


def grpc_service(cluster: str = GRPC_CLUSTER, *, replicated: bool = True) -> Resource:
    """The Aegis service as both filters call it: 1 s; with several replicas (``replicated``),
    one retry on another replica.

    Only failures where the call never reached a replica are retried (``connect-failure``,
    ``refused-stream``): Check has side effects (single-use override tokens, budgets).  With
    one replica there is no other to try, and the policy is not free: Envoy keeps each
    request for a replay: 5 to 11 % of its CPU per Check, measured (docs/performance.md).
    """
    service: Resource = {"envoy_grpc": {"cluster_name": cluster}, "timeout": GRPC_TIMEOUT}
    if not replicated:
        return service
    service["retry_policy"] = {
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
    }
    return service


def ext_authz_filter(config: AegisConfig, *, replicated: bool = True, puts_request_body: bool = False) -> Resource:
    """ext_authz: fail closed, whole body (as bytes) to Check, 503 when the service is down.
    ``puts_request_body``: the chain has ``request_body_filter``, and every Check is told so
    (``metadata.GRPC_ENVOY_FEATURES``)."""
    body = {"max_request_bytes": config.envoy.max_request_bytes, "allow_partial_message": False, "pack_as_bytes": True}
    service = grpc_service(replicated=replicated)
    if puts_request_body:
        service["initial_metadata"] = [{"key": GRPC_ENVOY_FEATURES, "value": FEATURE_REQUEST_BODY_FILTER}]
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
        grpc_service=service,
    )


# The static processing mode of each instance (metadata.BODY_PHASES says why these two).
# Both see the response headers: Envoy holds them while the body is redacted, so a refusal
# is still a status with a reason, and the answer there can switch an event stream to
# STREAMED (mode_override) or skip a body nothing reads.
_PROCESSING_MODES: dict[str, Resource] = {
    PHASES_BOTH_BODIES: {
        "request_header_mode": "SEND",
        "request_body_mode": "BUFFERED",
        "response_header_mode": "SEND",
        "response_body_mode": "BUFFERED",
    },
    PHASES_RESPONSE: {
        "request_header_mode": "SKIP",
        "request_body_mode": "NONE",
        "response_header_mode": "SEND",
        "response_body_mode": "BUFFERED",
    },
}


def _ext_proc_config(phases: str, replicated: bool) -> Resource:
    """One ext_proc instance: the ``phases`` mode, fed the ext_authz metadata (redaction
    obligations)."""
    return _any(
        "extensions.filters.http.ext_proc.v3.ExternalProcessor",
        failure_mode_allow=False,
        # One failure shape for the agent: ext_proc's own errors are a 503 like ext_authz's.
        status_on_error={"code": "ServiceUnavailable"},
        grpc_service=grpc_service(EXT_PROC_CLUSTER, replicated=replicated),
        message_timeout=GRPC_TIMEOUT,
        processing_mode=_PROCESSING_MODES[phases],
        allow_mode_override=True,
        response_attributes=list(TRACE_HEADER_ATTRIBUTES.values()),
        metadata_options={
            "forwarding_namespaces": {"untyped": [EXT_AUTHZ_NAMESPACE]},
            "receiving_namespaces": {"untyped": [EXT_PROC_NAMESPACE]},
        },
    )


def _metadata_is(key: str, match_name: str, value: Resource) -> Resource:
    """A predicate on Check's dynamic metadata ``key``.  Only ext_authz writes that namespace:
    the agent cannot set it."""
    return {
        "single_predicate": {
            "input": _extension(
                key,
                "extensions.matching.common_inputs.network.v3.DynamicMetadataInput",
                filter=EXT_AUTHZ_NAMESPACE,
                path=[{"key": key}],
            ),
            "custom_match": _extension(
                match_name, "extensions.matching.input_matchers.metadata.v3.Metadata", value=value
            ),
        }
    }


def _composite(name: str, filters: list[tuple[Resource, str, Resource]]) -> Resource:
    """A composite filter ``name``: for each (predicate, filter name, typed config), the first
    whose predicate holds is created for the call.  A call none matches gets no filter at all:
    unlike a filter skipped by its matcher, nothing is built for it (measured: two skipped
    ext_proc instances and the Lua filter cost a clean call ~25 µs of Envoy CPU)."""
    matchers = [
        {
            "predicate": predicate,
            "on_match": {
                "action": _extension(
                    filter_name,
                    "extensions.filters.http.composite.v3.ExecuteFilterAction",
                    typed_config={"name": filter_name, "typed_config": typed_config},
                )
            },
        }
        for predicate, filter_name, typed_config in filters
    ]
    return _extension(
        name,
        "extensions.common.matching.v3.ExtensionWithMatcher",
        extension_config=_extension(name, "extensions.filters.http.composite.v3.Composite"),
        xds_matcher={"matcher_list": {"matchers": matchers}},
    )


def ext_proc_filter(*, replicated: bool = True) -> Resource:
    """The ext_proc instance Check chose, created only then.

    Check writes ``body_phases`` into its dynamic metadata on allowed calls with something to
    redact or meter; the composite creates the instance for that value.  Clean calls, denials
    and Envoy's own local replies (which never reach ext_authz's answer) carry no value, so
    they get no ext_proc filter and open no stream.
    """
    return _composite(
        EXT_PROC_FILTER,
        [
            (
                _metadata_is(MD_BODY_PHASES, "is_" + phases, {"string_match": {"exact": phases}}),
                EXT_PROC_FILTERS[phases],
                _ext_proc_config(phases, replicated),
            )
            for phases in BODY_PHASES
        ],
    )


# Created only when Check handed a body (the composite), so the key is there; any failure still
# refuses the call rather than let the agent's own body through.  setBytes buffers the
# agent's body (Check saw all of it, at most MAX_REQUEST_BODY_HANDED) and sets the new
# content-length, so the tool gets a framed request, chunked or not.  The body is then
# dropped from the metadata (null): ext_proc is sent that namespace with each of its
# messages, and once in place the body is nothing ext_proc reads.
REQUEST_BODY_LUA = f"""\
function envoy_on_request(request)
  local put = pcall(function()
    local body = request:body()  -- waits for the whole body: nothing from before it is valid after
    local metadata = request:streamInfo():dynamicMetadata()
    body:setBytes(metadata:get("{EXT_AUTHZ_NAMESPACE}")["{MD_REQUEST_BODY}"])
    metadata:set("{EXT_AUTHZ_NAMESPACE}", "{MD_REQUEST_BODY}", nil)
  end)
  if not put then
    request:respond({{[":status"] = "502", ["content-type"] = "application/json"}},
      '{{"error":"redaction_failed","message":"the redacted request body could not be put in place"}}')
  end
end
"""


def request_body_filter() -> Resource:
    """A Lua filter that puts the request body Check redacted (``request_body`` in its
    metadata) in place of the agent's, created only on those calls (a composite filter).

    Check then names the response-only ext_proc instance (``metadata.GRPC_ENVOY_FEATURES``):
    no request headers message for ext_proc to answer with the body.  An ext_proc that does
    put the body in place (an older Check) gets it put there again, framed.
    """
    lua = _any("extensions.filters.http.lua.v3.Lua", default_source_code={"inline_string": REQUEST_BODY_LUA})
    handed = _metadata_is(MD_REQUEST_BODY, "has_request_body", {"present_match": True})
    return _composite(REQUEST_BODY_FILTER, [(handed, REQUEST_BODY_LUA_FILTER, lua)])


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


def http_filters(config: AegisConfig, *, with_ext_proc: bool = True, replicated: bool = True) -> list[Resource]:
    """ext_authz → (ext_proc instances) → router; ext_proc must follow ext_authz to receive
    its metadata.  ``replicated``: the service has several endpoints (``grpc_service``)."""
    filters = [ext_authz_filter(config, replicated=replicated, puts_request_body=with_ext_proc)]
    if with_ext_proc:
        filters.append(ext_proc_filter(replicated=replicated))
        filters.append(request_body_filter())
    filters.append(router_filter())
    return filters
