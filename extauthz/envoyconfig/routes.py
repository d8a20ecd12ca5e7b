"""Routes by Host to each tool's cluster, and a JSON 404 for unknown hosts."""

from __future__ import annotations

from extauthz.config import AegisConfig
from extauthz.envoyconfig._base import (
    EXT_AUTHZ_FILTER,
    ROUTE_CONFIG,
    UNKNOWN_HOST_BODY,
    Resource,
    _any,
)
from extauthz.envoyconfig.clusters import upstream_cluster_name

# --- routes -------------------------------------------------------------------------------


def json_direct_response(status: int, body: str) -> Resource:
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
    }


def unknown_host_virtual_host() -> Resource:
    """``*``: a direct 404 JSON. Nothing reaches an upstream, so no Check is needed for it
    (and without Check's metadata every ext_proc instance skips itself)."""
    disabled = {EXT_AUTHZ_FILTER: _any("extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute", disabled=True)}
    return {
        "name": "unknown_host",
        "domains": ["*"],
        "routes": [json_direct_response(404, UNKNOWN_HOST_BODY)],
        "typed_per_filter_config": disabled,
    }


def route_config(config: AegisConfig, *, with_ext_proc: bool = True) -> Resource:
    """One virtual host per configured upstream, by Host header, then the 404 catch-all."""
    hosts = [upstream_virtual_host(host) for host in config.upstreams]
    hosts.append(unknown_host_virtual_host())
    return {"name": ROUTE_CONFIG, "virtual_hosts": hosts}
